"""The shapes world's own text-to-image model: a small pixel-space UNet conditioned on a sentence embedding.

Conditioning follows Kandinsky 2.2's decoder: the prompt's pooled all-MiniLM-L6-v2 vector (384-d, L2-normalized)
enters twice — projected to 32 cross-attention tokens (`encoder_hid_dim_type="image_proj"`) and added to the
timestep embedding (`addition_embed_type="image"`). The model predicts v (or ε: the scheduler config says which)
on 3×32×32 images in [-1, 1]; the unconditional embedding for classifier-free guidance is the all-zeros vector.

On disk the model is a diffusers folder: `unet/`, `scheduler/` (the training DDPM schedule), `hdiff_shapes.json`
(sampling defaults and the full training config, so the trainer can reproduce the weights), the conditioning
whitening, the layout prior (hdiff.shapes.prior) and the reader of people's wording (hdiff.shapes.reader, trained
apart by hdiff.shapes_training.train_reader). This module is the runtime part — architecture, loading,
saving, whitening — and imports neither the trainer (hdiff.shapes_training.train) nor hdiff.models: the model adapter
(hdiff.models.shapes) builds on it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hdiff.embedding import DEFAULT_SENTENCE_MODEL
from hdiff.errors import HdiffError
from hdiff.files import atomic_folder
from hdiff.shapes.prior import save_prior

SHAPES_MODEL_ID = "hdiff/shapes"  # the shipped model, also named "shapes"
WEIGHTS_DIR = Path(__file__).parent / "weights"
METADATA_FILE = "hdiff_shapes.json"
SENTENCE_MODEL = DEFAULT_SENTENCE_MODEL
EMBED_DIM = 384
IMAGE_SIZE = 32


@dataclass(frozen=True)
class UNetSpec:
    """The few architecture choices that vary; everything else is fixed by `unet_config`."""

    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    attention_head_dim: int = 32
    cross_attention_dim: int = 128
    norm_num_groups: int = 32

    def __post_init__(self):
        if len(self.block_out_channels) < 2:
            raise HdiffError("block_out_channels needs at least two levels")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise HdiffError(f"every channel count must divide by norm_num_groups={self.norm_num_groups}")


TINY_SPEC = UNetSpec(block_out_channels=(16, 32), attention_head_dim=8, cross_attention_dim=16, norm_num_groups=8)


def unet_config(spec: UNetSpec) -> dict:
    """A `UNet2DConditionModel` config: a plain ResNet level at full resolution, simple cross-attention below."""
    levels = len(spec.block_out_channels)
    return dict(
        sample_size=IMAGE_SIZE,
        in_channels=3,
        out_channels=3,
        block_out_channels=list(spec.block_out_channels),
        layers_per_block=spec.layers_per_block,
        down_block_types=["ResnetDownsampleBlock2D"] + ["SimpleCrossAttnDownBlock2D"] * (levels - 1),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=["SimpleCrossAttnUpBlock2D"] * (levels - 1) + ["ResnetUpsampleBlock2D"],
        attention_head_dim=spec.attention_head_dim,
        cross_attention_dim=spec.cross_attention_dim,
        encoder_hid_dim=EMBED_DIM,
        encoder_hid_dim_type="image_proj",
        addition_embed_type="image",
        norm_num_groups=spec.norm_num_groups,
        resnet_time_scale_shift="scale_shift",
    )


def build_unet(spec: UNetSpec = UNetSpec()):
    """A randomly initialised UNet for `spec` (uses the global torch RNG: seed it first)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**unet_config(spec))


def count_parameters(spec: UNetSpec = UNetSpec()) -> int:
    """Parameter count of `spec`, built on the meta device (no memory, no RNG use)."""
    with torch.device("meta"):
        unet = build_unet(spec)
    return sum(p.numel() for p in unet.parameters())


def training_scheduler(beta_schedule: str = "squaredcos_cap_v2", num_train_timesteps: int = 1000,
                       prediction_type: str = "epsilon"):
    """The DDPM noise schedule the model is trained on, and what the UNet predicts; saved beside the UNet."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                         prediction_type=prediction_type, variance_type="fixed_small", clip_sample=True)


def model_folder(source: str) -> Path:
    """The folder of the shapes model `source`: the shipped weights for its name, else `source` itself."""
    return WEIGHTS_DIR if source in (SHAPES_MODEL_ID, "shapes") else Path(source)


def resolve_weights(path: str | os.PathLike | None = None) -> Path:
    folder = Path(path) if path is not None else WEIGHTS_DIR
    if not (folder / "unet" / "config.json").is_file():
        raise HdiffError(f"no shapes model in {folder} (expected unet/config.json); train one with "
                         f"`python -m hdiff.shapes_training.train --out {folder}`")
    return folder


def load_shapes_metadata(path: str | os.PathLike | None = None) -> dict:
    """`hdiff_shapes.json`: sentence model, sampling defaults, training config and evaluation."""
    return json.loads((resolve_weights(path) / METADATA_FILE).read_text())


def save_shapes_model(out: str | os.PathLike, unet, scheduler, metadata: dict,
                      whitening: dict[str, torch.Tensor] | None = None, prior: dict | None = None) -> Path:
    """Write the model folder `out` (replacing it), so that a half-written model never exists at `out`."""
    with atomic_folder(out, overwrite=True) as folder:
        unet.save_pretrained(folder / "unet", safe_serialization=True)
        scheduler.save_pretrained(folder / "scheduler")
        (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        if whitening is not None:
            save_whitening(folder, whitening)
        if prior is not None:
            save_prior(folder, prior)
    return Path(out)


def spec_from_dict(values: dict) -> UNetSpec:
    fields = {f.name for f in dataclasses.fields(UNetSpec)}
    unknown = set(values) - fields
    if unknown:
        raise HdiffError(f"unknown UNetSpec fields: {sorted(unknown)}")
    values = dict(values)
    if "block_out_channels" in values:
        values["block_out_channels"] = tuple(values["block_out_channels"])
    return UNetSpec(**values)


WHITENING_FILE = "conditioning.safetensors"
WHITENING_FLOOR = 1e-2  # eigenvalues below this fraction of the largest are raised to it: at most 10× gain


def fit_whitening(vectors: np.ndarray) -> dict[str, torch.Tensor]:
    """PCA whitening of training embeddings: c = (e − μ) W with unit variance along every principal direction.

    The pooled MiniLM vectors of different prompts are nearly parallel (cosine 0.99 between "red on blue" and
    "blue on red"); whitening spreads the few directions that tell attributes apart to the scale of the rest, so
    the UNet's linear conditioning projections see them. Held-out prompts keep the training norm (checked).
    """
    x = np.asarray(vectors, dtype=np.float64)
    mean = x.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov((x - mean).T))
    matrix = eigenvectors / np.sqrt(np.maximum(eigenvalues, WHITENING_FLOOR * eigenvalues.max()))
    return {"mean": torch.from_numpy(mean).float(), "matrix": torch.from_numpy(matrix).float()}


def apply_whitening(whitening: dict[str, torch.Tensor] | None, vectors: torch.Tensor) -> torch.Tensor:
    """(N, D) sentence embeddings → the model's conditioning vectors (identity when there is no whitening)."""
    if whitening is None:
        return vectors
    return (vectors.float() - whitening["mean"].to(vectors.device)) @ whitening["matrix"].to(vectors.device)


def save_whitening(folder: str | os.PathLike, whitening: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in whitening.items()}, str(Path(folder) / WHITENING_FILE))


def load_whitening(folder: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    path = Path(folder) / WHITENING_FILE
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    return load_file(str(path))
