"""An emulated accelerator for `hdiff bench build`: a stand-in denoiser and decoder whose calls take the time one
H200 took for their batch, so that a CPU-only machine can measure what a GPU build's CPU side costs.

The calls sleep (the CPU stays free, as while a GPU kernel runs) for the measured time of their batch size,
interpolated linearly between the table's rows (docs/speed.md; `hdiff bench speed --probe-rows` on one H200), and
the decoder returns natural-image content (hdiff.bench.natural), because encoding time and size depend on what is
encoded. Latents are 4×8×8 whatever the image size: the emulated device's arithmetic is not what is measured. The
denoiser's output is the conditioning's first 256 values, so an image's latent (and so its picture) depends on its
prompt and seed as in a real model. Conditioning: all-MiniLM-L6-v2 embeddings of the prompts (the tree clusters them).

A model folder holding `model_index.json` = {"_class_name": "HdiffEmulatedPipeline", "cost": "sdxl-1024"} loads as
this adapter once this module is imported: `python -m hdiff.bench.emulated_build build CONFIG` runs `hdiff build` so.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hdiff.bench.natural import natural_image
from hdiff.models.base import Adapter, Conditioning, register

PIPELINE_CLASS = "HdiffEmulatedPipeline"
LATENT = (4, 8, 8)
DISTINCT_IMAGES = 16


@dataclass(frozen=True)
class Cost:
    """One model's measured H200 time: a forward of the denoiser by rows, and decoding by image."""

    size: int  # image side, px
    forward_ms: dict[int, float]  # rows -> ms of one forward
    decode_ms: float  # per image
    steps: int
    guidance: float  # > 1: two rows per image (classifier-free guidance)
    tau: float  # the τ the figures were measured at
    scheduler: str  # a name in hdiff.models.schedulers.SCHEDULERS

    def forward_s(self, rows: int) -> float:
        """The table interpolated linearly; beyond it, the nearest segment's slope (one row only: proportional)."""
        points = sorted(self.forward_ms.items())
        if len(points) == 1:
            (r0, ms0), = points
            return rows * ms0 / r0 / 1000
        xs, ys = zip(*points)
        if rows <= xs[0]:
            (x0, y0), (x1, y1) = points[:2]
        elif rows >= xs[-1]:
            (x0, y0), (x1, y1) = points[-2:]
        else:
            return float(np.interp(rows, xs, ys)) / 1000
        return max(0.0, y0 + (rows - x0) * (y1 - y0) / (x1 - x0)) / 1000


COSTS: dict[str, Cost] = {  # one H200, real-size random-weight architectures (docs/speed.md)
    "sdxl-1024": Cost(1024, {2: 99, 16: 278, 32: 552}, decode_ms=116, steps=30, guidance=5.0, tau=1.0,
                      scheduler="euler"),
    "kandinsky-512": Cost(512, {2: 28, 8: 36, 16: 57, 32: 104, 64: 184, 128: 359}, decode_ms=16, steps=40,
                          guidance=4.0, tau=2.0, scheduler="ddpm"),
    "flux-1024": Cost(1024, {8: 1360}, decode_ms=77, steps=28, guidance=1.0, tau=1.0, scheduler="euler"),
}


def write_model(folder: str | Path, cost: str) -> Path:
    """A model folder that loads as the emulated accelerator with `cost`'s table."""
    if cost not in COSTS:
        raise ValueError(f"unknown cost {cost!r}; choose one of {', '.join(COSTS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": PIPELINE_CLASS, "cost": cost}))
    return folder


class Sleeper(torch.nn.Module):
    """The denoiser: sleeps for the cost of its batch and returns the conditioning's first values as its output."""

    def __init__(self, cost: Cost):
        super().__init__()
        self.cost = cost

    def forward(self, latents: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        time.sleep(self.cost.forward_s(len(latents)))
        return embeds[:, :int(np.prod(LATENT))].reshape(len(latents), *LATENT).to(latents.dtype)  # (B, 4, 8, 8)


@register
class EmulatedAdapter(Adapter):
    name = "emulated"
    pipeline_classes = (PIPELINE_CLASS,)
    cluster_features = "all-MiniLM-L6-v2 prompt embeddings"

    def __init__(self, model_id: str, cost: Cost, scheduler, device="cpu"):
        super().__init__(model_id, scheduler, device, torch.float32)
        self.cost = cost
        self.net = Sleeper(cost)
        self.default_steps, self.default_guidance = cost.steps, cost.guidance
        self.default_tau, self.default_size = cost.tau, cost.size
        self._images: dict[int, torch.Tensor] = {}

    @classmethod
    def from_pretrained(cls, source: str, *, device: str = "cpu", dtype=None, allow_pickle: bool = False,
                        **options) -> EmulatedAdapter:
        from hdiff.bench.arch import ARCHS
        from hdiff.bench.kandinsky_arch import SCHEDULER_CONFIG
        from hdiff.models.schedulers import make_scheduler

        cost = COSTS[json.loads((Path(source) / "model_index.json").read_text())["cost"]]
        config = SCHEDULER_CONFIG if cost.scheduler == "ddpm" else ARCHS["sdxl"].scheduler
        base = __import__("diffusers").DDPMScheduler(**config)
        return cls(source, cost, make_scheduler(cost.scheduler, base.config), device=device)

    def encode(self, prompts, generators) -> Conditioning:
        from hdiff.embedding import embed_texts

        features = embed_texts(list(prompts))  # (N, 384)
        return Conditioning({"embeds": torch.from_numpy(features)}, features)

    def negative(self, negative_prompt: str = "") -> dict[str, torch.Tensor]:
        return {"embeds": torch.zeros(1, 384)}

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return LATENT

    def forward(self, latent_input, t, rows, guidance_scale):
        return self.net(latent_input, rows["embeds"])

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) in [0, 1]: one of 16 photo crops per latent, picked by a hash of its values."""
        time.sleep(self.cost.decode_ms * len(latents) / 1000)
        picks = [zlib.crc32(latent.float().numpy().tobytes()) % DISTINCT_IMAGES for latent in latents.cpu()]
        return torch.stack([self.image(i) for i in picks]).float() / 255  # (B, H, W, 3)

    def image(self, index: int) -> torch.Tensor:
        if index not in self._images:
            self._images[index] = torch.from_numpy(natural_image(index, self.cost.size).copy())
        return self._images[index]

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.net
