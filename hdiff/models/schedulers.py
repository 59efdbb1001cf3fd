"""The one registry of scheduler names: the command line, build configs and every adapter read it.

Names map to diffusers scheduler classes by name, so that reading the registry (to validate a setting) does not
import diffusers.
"""

from __future__ import annotations

import copy

from hdiff.errors import HdiffError

SCHEDULERS: dict[str, str] = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "heun": "HeunDiscreteScheduler",
}


def check_scheduler(name: str) -> str:
    """`name` if it is a registered scheduler; HdiffError listing the choices otherwise."""
    if name not in SCHEDULERS:
        raise HdiffError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return name


def scheduler_class(name: str) -> type:
    """The diffusers class registered under `name`."""
    import diffusers

    return getattr(diffusers, SCHEDULERS[check_scheduler(name)])


def make_scheduler(name: str, config):
    """A fresh scheduler of kind `name` built from another scheduler's config (its noise schedule)."""
    return scheduler_class(name).from_config(config)


def count_evaluations(scheduler, num_steps: int) -> int:
    """Scheduler evaluations for `num_steps` denoising steps (2·steps − 1 for Heun), without any model."""
    probe = copy.deepcopy(scheduler)
    probe.set_timesteps(num_steps)
    return len(probe.timesteps)
