"""Sampling: executing a plan with a diffusers denoiser and scheduler."""

from hdiff.sampling.sampler import sample_plan

__all__ = ["sample_plan"]
