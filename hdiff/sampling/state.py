"""Carrying a batched diffusers scheduler's history across a split.

One scheduler instance steps all active clusters as one batch. Multistep solvers (DPM-Solver++, UniPC) and
second-order ones (Heun) keep per-latent history between steps: model outputs, the last sample, a derivative.
When clusters split, each child inherits its parent's history: every latent-shaped tensor the scheduler holds
(batch-first, ndim >= 2, batch == the previous number of active clusters) is gathered by the parent index,
exactly as the latents are.
"""

from __future__ import annotations

import inspect

import torch


def _is_batch_tensor(value, batch: int) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim >= 2 and value.shape[0] == batch


def gather_scheduler_history(scheduler, index: torch.Tensor, batch: int) -> None:
    """Re-index the scheduler's per-latent history from `batch` parents to `len(index)` children."""
    for name, value in list(vars(scheduler).items()):
        if _is_batch_tensor(value, batch):
            setattr(scheduler, name, value[index])
        elif isinstance(value, (list, tuple)) and any(_is_batch_tensor(v, batch) for v in value):
            setattr(scheduler, name, type(value)(v[index] if _is_batch_tensor(v, batch) else v for v in value))


def step_accepts_generator(scheduler) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters
