"""Schedules φ: evaluation index k of K → the height at which the cluster tree is cut (Decatur et al., Sec. 3.2).

A schedule must be non-increasing in k so that cuts only refine as denoising proceeds, and end at 0 so that the
last evaluation runs one latent per image. τ = 0 is standard diffusion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hdiff.errors import HdiffError


@dataclass(frozen=True)
class Schedule:
    """φ(k) = τ · curve(k / (K - 1)), with curve(0) = 1, curve(1) = 0, non-increasing."""

    kind: str
    tau: float

    def __post_init__(self):
        if not math.isfinite(self.tau) or self.tau < 0:
            raise HdiffError(f"tau must be a finite number >= 0, got {self.tau}")
        if self.kind not in SCHEDULE_CURVES:
            raise HdiffError(f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULE_CURVES)}")

    def heights(self, num_evaluations: int) -> np.ndarray:
        """(K,) cut heights, one per scheduler evaluation."""
        if num_evaluations < 1:
            raise HdiffError(f"steps must be >= 1, got {num_evaluations}")
        if num_evaluations == 1:
            return np.zeros(1)
        progress = np.arange(num_evaluations) / (num_evaluations - 1)
        return self.tau * SCHEDULE_CURVES[self.kind](progress)

    @property
    def name(self) -> str:
        return f"{self.kind}(tau={self.tau:g})"


SCHEDULE_CURVES = {
    # The paper's reference schedule: linear from τ at the first evaluation to 0 at the last.
    "linear": lambda p: 1.0 - p,
    # Shares longer early, splits faster late.
    "cosine": lambda p: 0.5 * (1.0 + np.cos(np.pi * p)),
    # Shares less: drops quickly, then lingers near 0.
    "quadratic": lambda p: (1.0 - p) ** 2,
}
