"""τ = 0 reproduces each stock diffusers pipeline exactly, for every adapter and scheduler."""

import numpy as np
import pytest
import torch

import tiny_models as tm
from hdiff.generate import GenerationSettings, ImageJob, generate
from hdiff.models import make_scheduler
from hdiff.models.kandinsky import Kandinsky22Adapter
from hdiff.models.stable_diffusion import StableDiffusionAdapter
from hdiff.sampling.state import step_accepts_generator

PROMPTS = ["a red cat", "a blue dog on a boat", "a red cat in the snow"]
SEEDS = [11, 22, 33]
SCHEDULERS = ["ddpm", "ddim", "euler", "euler-ancestral", "dpm++", "unipc", "heun"]
STEPS = 4
SIZE = 32


def generators():
    return [torch.Generator("cpu").manual_seed(s) for s in SEEDS]


def hdiff_images(adapter, guidance, tau=0.0):
    settings = GenerationSettings(steps=STEPS, guidance_scale=guidance, height=SIZE, width=SIZE, tau=tau,
                                  max_batch=64)
    generation = generate(adapter, ImageJob.from_prompts(PROMPTS, seeds=SEEDS), settings)
    return generation.float_images()


def accept_generator(scheduler):
    """KandinskyV22Pipeline passes `generator=` to every scheduler's step; UniPC's and Heun's take none."""
    if not step_accepts_generator(scheduler):
        step = scheduler.step
        scheduler.step = lambda *args, generator=None, **kwargs: step(*args, **kwargs)
    return scheduler


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_kandinsky22_matches_stock_pipeline(scheduler):
    prior = tm.kandinsky_prior()
    stock = tm.kandinsky_decoder()
    stock.scheduler = accept_generator(make_scheduler(scheduler, stock.scheduler.config))
    embeds = prior(PROMPTS, generator=generators(), num_inference_steps=3, guidance_scale=4.0, output_type="pt")
    expected = stock(image_embeds=embeds.image_embeds, negative_image_embeds=embeds.negative_image_embeds,
                     height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=4.0, generator=generators(),
                     output_type="np").images
    adapter = Kandinsky22Adapter("tiny-kandinsky", prior, stock.unet, stock.movq,
                                 make_scheduler(scheduler, stock.scheduler.config), prior_steps=3, prior_guidance=4.0)
    got = hdiff_images(adapter, 4.0)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-5


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_stable_diffusion_matches_stock_pipeline(scheduler):
    stock = tm.stable_diffusion()
    stock.scheduler = make_scheduler(scheduler, stock.scheduler.config)
    expected = stock(PROMPTS, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=7.5,
                     generator=generators(), output_type="np").images
    adapter = StableDiffusionAdapter("tiny-sd", stock)
    got = hdiff_images(adapter, 7.5)
    assert np.abs(got - expected).max() <= 1e-5


def test_unguided_stable_diffusion_matches_stock_pipeline():
    stock = tm.stable_diffusion()
    expected = stock(PROMPTS, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=1.0,
                     generator=generators(), output_type="np").images
    got = hdiff_images(StableDiffusionAdapter("tiny-sd", stock), 1.0)
    assert np.abs(got - expected).max() <= 1e-5


def test_a_negative_prompt_matches_the_stock_stable_diffusion_pipeline():
    stock = tm.stable_diffusion()
    expected = stock(PROMPTS, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=7.5,
                     negative_prompt=["a dog"] * len(PROMPTS), generator=generators(), output_type="np").images
    settings = GenerationSettings(steps=STEPS, guidance_scale=7.5, height=SIZE, width=SIZE, tau=0.0,
                                  negative_prompt="a dog")
    got = generate(StableDiffusionAdapter("tiny-sd", stock), ImageJob.from_prompts(PROMPTS, seeds=SEEDS),
                   settings).float_images()
    assert np.abs(got - expected).max() <= 1e-5
