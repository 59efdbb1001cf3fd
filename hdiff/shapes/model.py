"""The shapes world's own text-to-image model: a small pixel-space UNet conditioned on a sentence embedding.

Conditioning follows Kandinsky 2.2's decoder: the prompt's pooled all-MiniLM-L6-v2 vector (384-d, L2-normalized)
enters twice — projected to 32 cross-attention tokens (`encoder_hid_dim_type="image_proj"`) and added to the
timestep embedding (`addition_embed_type="image"`). The model predicts v (or ε: the scheduler config says which)
on 3×32×32 images in [-1, 1]; the unconditional embedding for classifier-free guidance is the all-zeros vector.

On disk the model is a diffusers folder: `unet/`, `scheduler/` (the training DDPM schedule) and `hdiff_shapes.json`
(sampling defaults and the full training config, so the trainer can reproduce the weights).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from hdiff.errors import HdiffError
from hdiff.shapes.prior import save_prior

WEIGHTS_DIR = Path(__file__).parent / "weights"
METADATA_FILE = "hdiff_shapes.json"
SENTENCE_MODEL = "all-MiniLM-L6-v2"
EMBED_DIM = 384
IMAGE_SIZE = 32

SchedulerName = Literal["dpm++", "ddpm", "ddim"]  # "dpm++": DPMSolverMultistepScheduler at its defaults


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


def sampling_scheduler(train_config: dict, name: SchedulerName = "dpm++"):
    """A sampler built from the training schedule's config (`scheduler/scheduler_config.json`)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    if name == "dpm++":  # DPM-Solver++(2M), the class defaults, as the model adapter builds it
        return DPMSolverMultistepScheduler.from_config(train_config)
    if name == "ddim":
        return DDIMScheduler.from_config(train_config)
    if name == "ddpm":
        return DDPMScheduler.from_config(train_config)
    raise HdiffError(f"unknown scheduler {name!r}; choose dpm++, ddim or ddpm")


def resolve_weights(path: str | os.PathLike | None = None) -> Path:
    folder = Path(path) if path is not None else WEIGHTS_DIR
    if not (folder / "unet" / "config.json").is_file():
        raise HdiffError(f"no shapes model in {folder} (expected unet/config.json); train one with "
                         f"`python -m hdiff.shapes.train --out {folder}`")
    return folder


def load_shapes_unet(path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32):
    """The UNet from a shapes model folder (default: the shipped weights), in eval mode."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(resolve_weights(path), subfolder="unet", torch_dtype=dtype,
                                                use_safetensors=True)
    return unet.to(device).eval()


def load_shapes_metadata(path: str | os.PathLike | None = None) -> dict:
    """`hdiff_shapes.json`: sentence model, sampling defaults, training config and evaluation."""
    return json.loads((resolve_weights(path) / METADATA_FILE).read_text())


def load_shapes_scheduler(path: str | os.PathLike | None = None, name: SchedulerName | None = None):
    """The default sampler of a shapes model folder (or `name`), configured from its training schedule."""
    folder = resolve_weights(path)
    train_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    return sampling_scheduler(train_config, name or load_shapes_metadata(folder)["default_scheduler"])


def save_shapes_model(out: str | os.PathLike, unet, scheduler, metadata: dict,
                      whitening: dict[str, torch.Tensor] | None = None, prior: dict | None = None) -> Path:
    """Write the folder under a temporary name, then rename, so a half-written model never exists at `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    unet.save_pretrained(tmp / "unet", safe_serialization=True)
    scheduler.save_pretrained(tmp / "scheduler")
    (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    if whitening is not None:
        save_whitening(tmp, whitening)
    if prior is not None:
        save_prior(tmp, prior)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


@torch.no_grad()
def sample_images(unet, scheduler, embeds: torch.Tensor, *, steps: int, guidance_scale: float,
                  generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> np.ndarray:
    """Standard classifier-free-guided sampling in one batch: (B, 384) embeddings → (B, 32, 32, 3) uint8.

    The conditional and unconditional rows share one UNet call per step; the unconditional embedding is zeros.
    """
    device, dtype = unet.device, unet.dtype
    embeds = embeds.to(device=device, dtype=dtype)  # (B, D)
    batch = embeds.shape[0]
    if noise is None:
        noise = torch.randn((batch, 3, IMAGE_SIZE, IMAGE_SIZE), generator=generator,
                            device=generator.device if generator is not None else "cpu")
    x = noise.to(device=device, dtype=torch.float32) * scheduler.init_noise_sigma  # (B, 3, H, W)
    cond = torch.cat([embeds, torch.zeros_like(embeds)])  # (2B, D): conditional rows, then unconditional
    scheduler.set_timesteps(steps, device=device)
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(torch.cat([x, x]), t).to(dtype)  # (2B, 3, H, W)
        eps = unet(x_in, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": cond}).sample.float()
        eps_cond, eps_uncond = eps.chunk(2)
        eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (B, 3, H, W)
    return images.permute(0, 2, 3, 1).cpu().numpy()


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
