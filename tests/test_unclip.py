"""Stable unCLIP: τ = 0 reproduces StableUnCLIPPipeline for every scheduler; τ > 0 shares steps and stays finite."""

import numpy as np
import pytest
import torch

import tiny_models as tm
from hdiff.errors import HdiffError
from hdiff.generate import GenerationSettings, ImageJob, generate
from hdiff.models import load_adapter, make_scheduler
from hdiff.models.unclip import StableUnCLIPAdapter

PROMPTS = ["a red cat", "a blue dog on a boat", "a red cat in the snow"]
SEEDS = [11, 22, 33]
SCHEDULERS = ["ddpm", "ddim", "euler", "euler-ancestral", "dpm++", "unipc", "heun"]
STEPS, SIZE, GUIDANCE = 4, 32, 10.0
PRIOR = dict(prior_steps=3, prior_guidance=4.0, noise_level=100)  # noise_level > 0: draw (3) matters


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models run several times faster single-threaded on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def generators() -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(s) for s in SEEDS]


def stock_images(pipeline, guidance: float) -> np.ndarray:
    return pipeline(PROMPTS, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=guidance,
                    generator=generators(), prior_num_inference_steps=PRIOR["prior_steps"],
                    prior_guidance_scale=PRIOR["prior_guidance"], noise_level=PRIOR["noise_level"],
                    output_type="np").images


def hdiff_generation(adapter, guidance: float, tau: float = 0.0):
    settings = GenerationSettings(steps=STEPS, guidance_scale=guidance, height=SIZE, width=SIZE, tau=tau)
    return generate(adapter, ImageJob.from_prompts(PROMPTS, seeds=SEEDS), settings)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_unclip_matches_stock_pipeline(scheduler):
    stock = tm.stable_unclip()
    stock.scheduler = make_scheduler(scheduler, stock.scheduler.config)
    expected = stock_images(stock, GUIDANCE)
    got = hdiff_generation(StableUnCLIPAdapter("tiny-unclip", stock, **PRIOR), GUIDANCE).float_images()
    assert got.shape == expected.shape == (len(PROMPTS), SIZE, SIZE, 3)
    assert np.abs(got - expected).max() <= 1e-5


def test_unguided_unclip_matches_stock_pipeline():
    stock = tm.stable_unclip(tm.ddpm_scheduler())
    expected = stock_images(stock, 1.0)
    got = hdiff_generation(StableUnCLIPAdapter("tiny-unclip", stock, **PRIOR), 1.0).float_images()
    assert np.abs(got - expected).max() <= 1e-5


def test_unclip_shares_steps_at_positive_tau():
    generation = hdiff_generation(StableUnCLIPAdapter("tiny-unclip", tm.stable_unclip(), **PRIOR), GUIDANCE, tau=1e6)
    images = generation.float_images()
    assert generation.plan.unet_rows < generation.plan.standard_unet_rows
    assert images.shape == (len(PROMPTS), SIZE, SIZE, 3)
    assert np.isfinite(images).all()


def test_unclip_loads_from_a_local_folder(tmp_path):
    tm.stable_unclip().save_pretrained(tmp_path / "tiny-unclip")
    adapter = load_adapter(str(tmp_path / "tiny-unclip"), device="cpu", **PRIOR)
    assert isinstance(adapter, StableUnCLIPAdapter) and adapter.dtype == torch.float32
    reference = StableUnCLIPAdapter("tiny-unclip", tm.stable_unclip(), **PRIOR)
    assert np.array_equal(adapter.encode(PROMPTS, generators()).features,
                          reference.encode(PROMPTS, generators()).features)


def test_unclip_missing_model_is_one_line_error():
    with pytest.raises(HdiffError, match="not in the local Hugging Face cache") as error:
        load_adapter("nobody/no-such-unclip", adapter="unclip", device="cpu")
    assert "\n" not in str(error.value)
