"""Tiny random-weight twins of the scorers' models, built from configs written here (nothing downloaded): a CLIP
(CLIPModel + CLIPProcessor), diffusers' safety checker (StableDiffusionSafetyChecker + CLIPImageProcessor) and the
LAION aesthetic MLP over the tiny CLIP's embeddings, each saved as the real repository lays it out."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPVisionConfig

import tiny_models as tm

IMAGE_SIZE = 32
PROJECTION = 16


def clip_config() -> CLIPConfig:
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                              image_size=IMAGE_SIZE, patch_size=8, projection_dim=PROJECTION)
    return CLIPConfig(text_config=tm.text_config().to_dict(), vision_config=vision.to_dict(),
                      projection_dim=PROJECTION)


def image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def save_clip(folder: Path) -> Path:
    """openai/clip-vit-large-patch14's layout: config, model.safetensors, tokenizer and preprocessor files."""
    torch.manual_seed(0)
    CLIPModel(clip_config()).eval().save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor(), tokenizer=tm.tokenizer()).save_pretrained(folder)
    return folder


def safety_checker(flag_like=None, threshold: float = 0.999):
    """The checker with its 17 concept embeddings random (thresholds `threshold`); the checker's own embedding of
    the image `flag_like` (uint8 (H, W, 3)) replaces the first, so that this image is flagged."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(clip_config()).eval()
    with torch.no_grad():
        checker.concept_embeds.copy_(torch.randn_like(checker.concept_embeds))
        checker.special_care_embeds.copy_(torch.randn_like(checker.special_care_embeds))
        checker.concept_embeds_weights.fill_(threshold)
        checker.special_care_embeds_weights.fill_(threshold)
        if flag_like is not None:
            pixels = image_processor()(images=[flag_like], return_tensors="pt")["pixel_values"]
            checker.concept_embeds[0] = checker.visual_projection(checker.vision_model(pixels)[1])[0]
    return checker


def save_safety_checker(folder: Path, flag_like=None) -> Path:
    """CompVis/stable-diffusion-safety-checker's layout: config, model.safetensors, preprocessor_config.json."""
    safety_checker(flag_like).save_pretrained(folder)
    image_processor().save_pretrained(folder)
    return folder


AESTHETIC_WIDTHS = (PROJECTION, 16, 8, 8, 4, 1)  # the tiny MLP's widths, input to output


def aesthetic_state() -> dict[str, torch.Tensor]:
    """Random weights of the predictor's MLP over the tiny CLIP's embedding, keyed as the upstream module's state
    dict (its `layers` Sequential: Linear layers at 0, 2, 4, 6 and 7, dropouts between the first four)."""
    torch.manual_seed(0)
    state = {}
    for index, (fan_in, fan_out) in zip((0, 2, 4, 6, 7), zip(AESTHETIC_WIDTHS, AESTHETIC_WIDTHS[1:])):
        state[f"layers.{index}.weight"] = torch.randn(fan_out, fan_in) / fan_in ** 0.5
        state[f"layers.{index}.bias"] = torch.randn(fan_out) / 10
    return state


def save_aesthetic(folder: Path) -> Path:
    """A repo of the predictor's weights in safetensors, keyed as the original's (one file, model.safetensors)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(aesthetic_state(), str(folder / "model.safetensors"))
    return folder


def save_aesthetic_pickle(path: Path) -> Path:
    """The weights as upstream publishes them: the state dict pickled by torch.save (a .pth)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(aesthetic_state(), path)
    return path
