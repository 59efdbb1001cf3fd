"""SDXL, SD3.5, FLUX.1 and PixArt-Σ: chosen from model_index.json, exact at τ = 0 against the stock pipelines,
accounted by counting the denoiser's rows, and a shared node conditioned on its members' mean or medoid.

Each tiny twin (tests/tiny_families.py) is saved to a folder and loaded back through `load_adapter`, the path users
take; the in-memory stock pipeline with the same weights is the reference.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_families as tf
from hdiff.errors import HdiffError
from hdiff.generate import GenerationSettings, ImageJob, generate
from hdiff.models import adapter_name_for, load_adapter, make_scheduler
from hdiff.models.base import ADAPTERS, Conditioning, default_dtype, denoiser_call_rows
from hdiff.planning import Schedule, build_tree, make_plan
from hdiff.sampling import sample_plan

PROMPTS = ["a red cat", "a blue dog on a boat", "a red cat in the snow"]
SEEDS = [11, 22, 33]
MORE_PROMPTS = PROMPTS + ["a blue dog", "the sea at night", "a boat at sea"]
SIZE, STEPS, TOKENS = 32, 4, 32

# family: (tiny twin, adapter name, guidance, stock call's extra arguments = the adapter's options)
FAMILIES = {
    "sdxl": (tf.sdxl, "sdxl", 5.0, {}),
    "sd3": (tf.sd3, "sd3", 3.5, {"max_sequence_length": TOKENS}),
    "flux-dev": (tf.flux, "flux", 3.5, {"max_sequence_length": TOKENS}),
    "flux-schnell": (lambda: tf.flux(dev=False), "flux", 0.0, {"max_sequence_length": TOKENS}),
    "pixart-sigma": (tf.pixart_sigma, "pixart-sigma", 4.5, {"max_sequence_length": TOKENS, "clean_caption": False}),
}
STOCK_ONLY = {"pixart-sigma": {"use_resolution_binning": False}}  # hdiff makes the requested size (no binning)


@pytest.fixture(scope="module")
def twins(tmp_path_factory, one_torch_thread):
    """family -> (stock pipeline, its saved folder)."""
    out = {}
    for family, (build, _, _, _) in FAMILIES.items():
        pipeline = build()
        folder = tmp_path_factory.mktemp(family)
        pipeline.save_pretrained(folder)
        out[family] = (pipeline, str(folder))
    return out


def loaded(twins, family: str, scheduler: str | None = None):
    _, name, _, options = FAMILIES[family]
    return load_adapter(twins[family][1], device="cpu", scheduler=scheduler, **options)


def settings(family: str, **overrides) -> GenerationSettings:
    base = dict(steps=STEPS, guidance_scale=FAMILIES[family][2], height=SIZE, width=SIZE, tau=0.0)
    return GenerationSettings(**{**base, **overrides})


def stock_images(twins, family: str, scheduler: str | None, **call) -> np.ndarray:
    pipeline = twins[family][0]
    original = pipeline.scheduler
    if scheduler is not None:
        pipeline.scheduler = make_scheduler(scheduler, original.config)
    try:
        return pipeline(PROMPTS, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                        guidance_scale=FAMILIES[family][2], output_type="np",
                        generator=[torch.Generator("cpu").manual_seed(s) for s in SEEDS],
                        **FAMILIES[family][3], **STOCK_ONLY.get(family, {}), **call).images
    finally:
        pipeline.scheduler = original


def test_model_index_chooses_the_adapter(twins):
    assert {family: adapter_name_for(twins[family][1]) for family in FAMILIES} == {
        family: name for family, (_, name, _, _) in FAMILIES.items()}


@pytest.mark.parametrize("family", ["sdxl", "sd3", "pixart-sigma", "flux-dev"])
def test_the_default_size_is_the_stock_pipelines(twins, family):
    """Without a size, hdiff makes the image the stock pipeline makes: its denoiser's sample_size × the VAE's scale
    (SD 2.1 at 768 px, 2.1-base at 512); FLUX.1's fixed 128 latent pixels × the VAE's scale (1024 px)."""
    pipeline = twins[family][0]
    adapter = loaded(twins, family)
    if family.startswith("flux"):  # a stock run at the tiny twin's 256 px is slow
        assert adapter.default_size == pipeline.default_sample_size * pipeline.vae_scale_factor == 128 * 2
        return
    image = pipeline("a red cat", num_inference_steps=1, guidance_scale=FAMILIES[family][2], output_type="np",
                     **FAMILIES[family][3], **STOCK_ONLY.get(family, {})).images[0]
    assert adapter.default_size == image.shape[0] == image.shape[1] < 512  # the tiny twin's own size, not 1024


@pytest.mark.parametrize("family, scheduler", [
    ("sdxl", None), ("sdxl", "dpm++"), ("sd3", None), ("sd3", "dpm++"), ("flux-dev", None), ("flux-dev", "dpm++"),
    ("flux-schnell", None), ("pixart-sigma", None), ("pixart-sigma", "euler")])
def test_tau_zero_matches_the_stock_pipeline(twins, family, scheduler):
    """None: the model's own scheduler (Euler for SDXL, flow-matching Euler with SD3.5's shift 3 or FLUX's
    resolution-dependent shift, DPM-Solver++ for PixArt-Σ)."""
    expected = stock_images(twins, family, scheduler)
    adapter = loaded(twins, family, scheduler)
    got = generate(adapter, ImageJob.from_prompts(PROMPTS, seeds=SEEDS), settings(family)).float_images()
    assert got.shape == expected.shape == (len(PROMPTS), SIZE, SIZE, 3)
    assert np.abs(got - expected).max() <= 1e-5


@pytest.mark.parametrize("family", ["sdxl", "sd3", "pixart-sigma"])
def test_a_negative_prompt_matches_the_stock_pipeline(twins, family):
    negative = "blurry, a dog"
    expected = stock_images(twins, family, None, negative_prompt=negative)
    adapter = loaded(twins, family)
    generation = generate(adapter, ImageJob.from_prompts(PROMPTS, seeds=SEEDS),
                          settings(family, negative_prompt=negative))
    assert np.abs(generation.float_images() - expected).max() <= 1e-5
    assert np.abs(expected - stock_images(twins, family, None)).max() > 1e-3  # the negative prompt changed them
    assert {r.negative_prompt for r in generation.records} == {negative}
    assert generation.records[0].model_dump()["negative_prompt"] == negative


def test_a_family_without_a_negative_prompt_refuses_one_in_one_line(twins):
    with pytest.raises(HdiffError, match=r"^the flux adapter takes no negative prompt .*; leave negative_prompt empty$"):
        generate(loaded(twins, "flux-dev"), ImageJob.from_prompts(PROMPTS, seeds=SEEDS),
                 settings("flux-dev", negative_prompt="blurry"))
    record = generate(loaded(twins, "sdxl"), ImageJob.from_prompts(PROMPTS[:1], seeds=SEEDS[:1]),
                      settings("sdxl")).records[0]
    assert "negative_prompt" not in record.model_dump()  # empty: left out, as in records made before the field


@pytest.mark.parametrize("family, rows_per_cluster", [("sdxl", 2), ("sd3", 2), ("flux-dev", 1), ("pixart-sigma", 2)])
def test_rows_counted_at_the_denoiser_equal_the_plan_and_the_records(twins, family, rows_per_cluster):
    """Shared steps at half the budget: every row the denoiser runs is in the plan (2 per
    cluster with classifier-free guidance, 1 for guidance-distilled FLUX [dev] at guidance 3.5), and the images'
    records divide them exactly. The same images come out with other micro-batches and prompt order."""
    adapter = loaded(twins, family)
    rows = []
    hook = adapter.denoiser.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(denoiser_call_rows(args, kwargs)), with_kwargs=True)
    job = ImageJob.from_prompts(MORE_PROMPTS, base_seed=5)
    try:
        generation = generate(adapter, job, settings(family, tau=None, budget=0.5, max_batch=4))
    finally:
        hook.remove()
    plan = generation.plan
    assert plan.rows_per_cluster == rows_per_cluster
    assert 0.3 < plan.saved_fraction < 0.7
    assert sum(rows) == plan.unet_rows == plan.clusters_evaluated * rows_per_cluster
    assert max(rows) <= 4 * rows_per_cluster
    assert sum(r.unet_rows for r in generation.records) == pytest.approx(plan.unet_rows, rel=1e-12)
    assert {r.standard_unet_rows for r in generation.records} == {plan.num_evaluations * rows_per_cluster}

    expected = dict(zip(job.prompts, generation.float_images()))
    reversed_job = ImageJob.from_prompts(MORE_PROMPTS[::-1], base_seed=5)
    other = generate(adapter, reversed_job, settings(family, tau=None, budget=0.5, max_batch=1))
    assert other.plan.unet_rows == plan.unet_rows
    for prompt, image in zip(reversed_job.prompts, other.float_images()):
        assert np.abs(image - expected[prompt]).max() <= 1e-5, prompt


def root_conditioning(twins, node_condition: str, features: np.ndarray) -> tuple[Conditioning, dict]:
    """Sample a hand-built plan whose first evaluation runs the root alone; returns the conditioning given and
    what the denoiser call received for the root."""
    adapter = loaded(twins, "pixart-sigma")
    cond = adapter.encode(["a cat", "a blue dog on a boat", "the sea"], [])
    cond = Conditioning(cond.tensors, features, cond.masks)
    tree = build_tree(features, keys=["0", "1", "2"])
    plan = make_plan(tree, Schedule("linear", 10.0 * float(tree.heights.max())), STEPS)
    assert len(plan.active[0]) == 1
    received = []
    predict = adapter.predict
    adapter.predict = lambda scheduler, latents, t, rows, *rest: received.append(rows) or predict(
        scheduler, latents, t, rows, *rest)
    settings = GenerationSettings(steps=STEPS, guidance_scale=4.5, height=SIZE, width=SIZE, tau=plan.schedule.tau,
                                  node_condition=node_condition)
    sample_plan(plan, adapter, cond, np.array(SEEDS), settings)
    return cond, received[0]


# Unit vectors at 0°, 60° and 30°: their mean direction is 30°, so row 2 is the medoid.
ANGLES = np.deg2rad([0.0, 60.0, 30.0])
FEATURES = np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1).astype(np.float32)


def test_medoid_node_is_conditioned_on_the_member_nearest_the_centroid(twins):
    cond, root = root_conditioning(twins, "medoid", FEATURES)
    for name in ("prompt_embeds", "prompt_attention_mask"):
        assert torch.equal(root[name], cond.tensors[name][2:3].to(root[name].dtype))


def test_mean_node_averages_the_sequences_and_attends_where_any_member_does(twins):
    cond, root = root_conditioning(twins, "mean", FEATURES)
    states, mask = cond.tensors["prompt_embeds"], cond.tensors["prompt_attention_mask"]
    lengths = mask.sum(dim=1)
    assert len(set(lengths.tolist())) == 3  # the members' sequences differ in length
    assert torch.allclose(root["prompt_embeds"][0], (states[0] + states[1] + states[2]) / 3, atol=1e-6)
    assert root["prompt_attention_mask"][0].sum() == lengths.max()
    assert torch.equal(root["prompt_attention_mask"][0].bool(), mask.bool().any(dim=0))


def test_families_say_what_they_cluster_and_how_a_node_is_conditioned():
    expected = {"sdxl": "mean", "sd3": "medoid", "flux": "medoid", "pixart-sigma": "medoid"}
    assert {name: ADAPTERS[name].default_node_condition for name in expected} == expected
    assert all(ADAPTERS[name].cluster_features for name in expected)
    cuda = {name: default_dtype("cuda", ADAPTERS[name].cuda_dtype) for name in expected}
    assert cuda == {"sdxl": torch.float16, "sd3": torch.bfloat16, "flux": torch.bfloat16,
                    "pixart-sigma": torch.float16}
    with pytest.raises(HdiffError, match="node_condition: must be one of 'mean' or 'medoid', got 'median'"):
        GenerationSettings.checked(node_condition="median")


def test_a_forced_adapter_that_does_not_fit_is_refused_in_one_line(twins):
    with pytest.raises(HdiffError) as refused:
        load_adapter(twins["sdxl"][1], adapter="stable-diffusion", device="cpu")
    message = str(refused.value)
    assert "\n" not in message
    assert "StableDiffusionXLPipeline" in message and "its adapter is sdxl" in message


def test_an_unknown_pipeline_is_refused_naming_what_hdiff_runs(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WuerstchenPipeline"}))
    with pytest.raises(HdiffError, match=r"WuerstchenPipeline\); hdiff runs .*FluxPipeline \(flux\)"):
        load_adapter(str(tmp_path), device="cpu")


def test_flow_matching_models_refuse_noise_prediction_schedulers(twins):
    with pytest.raises(HdiffError, match="cannot step a flow-matching model; choose one of flow-euler, dpm\\+\\+"):
        loaded(twins, "sd3", "ddim")


@pytest.mark.parametrize("config, node_condition", [("sdxl", "mean"), ("sd35", "medoid"), ("flux-dev", "medoid"),
                                                    ("pixart-sigma", "medoid")])
def test_family_build_configs_are_valid(config, node_condition):
    from hdiff.dataset.config import load_config

    settings = load_config(Path(__file__).parent.parent / "configs" / f"{config}.yaml").generation_settings()
    assert settings.budget == 0.5 and settings.tau is None and settings.node_condition == node_condition
