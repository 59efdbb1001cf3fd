"""The one registry of scheduler names: the command line, build configs and every adapter read it.

Names map to diffusers scheduler classes by name, so that reading the registry (to validate a setting) does not
import diffusers. Flow-matching models (SD3, FLUX: a FlowMatch* stock scheduler) run "flow-euler", or a multistep
solver on flow sigmas with the model's shift ("dpm++", "unipc"); noise-prediction models run every other name.
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
    "flow-euler": "FlowMatchEulerDiscreteScheduler",
}
FLOW_SOLVERS = ("flow-euler", "dpm++", "unipc")  # the names that run a flow-matching model


def check_scheduler(name: str) -> str:
    """`name` if it is a registered scheduler; HdiffError listing the choices otherwise."""
    if name not in SCHEDULERS:
        raise HdiffError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return name


def scheduler_class(name: str) -> type:
    """The diffusers class registered under `name`."""
    import diffusers

    return getattr(diffusers, SCHEDULERS[check_scheduler(name)])


def is_flow_matching(config) -> bool:
    """Whether a scheduler config steps a flow-matching model (velocity prediction on sigmas in [0, 1])."""
    return "shift" in config or bool(config.get("use_flow_sigmas"))  # FlowMatch* schedulers carry a `shift`


def make_scheduler(name: str, config):
    """A fresh scheduler of kind `name` built from another scheduler's config (its noise schedule, or for a
    flow-matching model its shift); HdiffError if `name` cannot step that model."""
    cls = scheduler_class(name)
    if not is_flow_matching(config):
        if name == "flow-euler":
            raise HdiffError("scheduler 'flow-euler' runs flow-matching models (SD3, FLUX) only; this model predicts "
                             f"noise: choose one of {', '.join(n for n in SCHEDULERS if n != 'flow-euler')}")
        return cls.from_config(config)
    if name not in FLOW_SOLVERS:
        raise HdiffError(f"scheduler {name!r} cannot step a flow-matching model; choose one of "
                         f"{', '.join(FLOW_SOLVERS)}")
    shift = config.get("shift", config.get("flow_shift", 1.0))
    if name == "flow-euler":
        return cls.from_config(config, shift=shift)
    return cls.from_config(config, use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift)


def count_evaluations(scheduler, num_steps: int) -> int:
    """Scheduler evaluations for `num_steps` denoising steps (2·steps − 1 for Heun), without any model."""
    probe = copy.deepcopy(scheduler)
    shift = {"mu": 0.0} if probe.config.get("use_dynamic_shifting") else {}  # the count does not depend on the shift
    probe.set_timesteps(num_steps, **shift)
    return len(probe.timesteps)
