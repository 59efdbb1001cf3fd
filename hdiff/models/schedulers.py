"""Scheduler names accepted on the command line and in configs, mapped to diffusers classes."""

from __future__ import annotations

from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, UniPCMultistepScheduler)

from hdiff.errors import HdiffError

SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-ancestral": EulerAncestralDiscreteScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
    "heun": HeunDiscreteScheduler,
}


def make_scheduler(name: str, config):
    """A fresh scheduler of kind `name` built from another scheduler's config (its noise schedule)."""
    if name not in SCHEDULERS:
        raise HdiffError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name].from_config(config)


def count_evaluations(scheduler, num_steps: int) -> int:
    """Scheduler evaluations for `num_steps` denoising steps (2·steps − 1 for Heun), without any model."""
    import copy

    probe = copy.deepcopy(scheduler)
    probe.set_timesteps(num_steps)
    return len(probe.timesteps)
