"""diffusers' StableDiffusionSafetyChecker (CompVis/stable-diffusion-safety-checker) as a flag per image: 1.0 where
it finds a concept over its threshold, else 0.0. Images are only judged: nothing is blacked out (the checker is
handed placeholders to black out, never the images)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from hdiff.models.base import load_component
from hdiff.scoring.base import Scorer, model_folder, register, torch_device
from hdiff.scoring.clip import load_processor

SAFETY_CHECKER = "CompVis/stable-diffusion-safety-checker"


@register
class SafetyScorer(Scorer):
    name = "nsfw"
    kind = "flag"
    default_model = SAFETY_CHECKER
    unit = "1 where the safety checker flags the image, else 0"

    def __init__(self, model_id: str, device: str = "cpu", *, processor: str | None = None):
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        super().__init__(model_id, device)
        self.checker = load_component(StableDiffusionSafetyChecker, model_folder(model_id)).to(
            torch_device(device)).eval()
        self.processor = load_processor(CLIPImageProcessor, processor or model_id)

    @classmethod
    def models(cls, model, *, processor: str | None = None, **options):
        return [model or cls.default_model, *([processor] if processor else [])]

    @torch.no_grad()
    def score_batch(self, images, prompts):
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        placeholders = np.zeros((len(images), 1, 1, 3))  # what the checker would black out instead of the images
        with without_blackout_warning():
            _, flagged = self.checker(clip_input=pixels.to(self.checker.device, self.checker.dtype),
                                      images=placeholders)
        return np.asarray(flagged, dtype=np.float64)


@contextmanager
def without_blackout_warning():
    """The checker's "a black image will be returned" warning, untrue here, filtered from its own logger for the
    call (the filter is removed after)."""
    import logging

    checker_logger = logging.getLogger("diffusers.pipelines.stable_diffusion.safety_checker")
    quiet = _Quiet()
    checker_logger.addFilter(quiet)
    try:
        yield
    finally:
        checker_logger.removeFilter(quiet)


class _Quiet:
    def filter(self, record) -> bool:
        return "black image" not in record.getMessage()
