"""The shapes world's exact check as a score: 100 where the oracle finds every attribute the prompt names right,
0 where one is wrong, NaN where the prompt names nothing it can read (hdiff.shapes.oracle.score_prompt)."""

from __future__ import annotations

import numpy as np

from hdiff.scoring.base import Scorer, register
from hdiff.shapes.oracle import all_correct, score_prompt


@register
class OracleScorer(Scorer):
    name = "oracle"
    unit = "100 when every attribute the prompt names is right (the shapes world's oracle), else 0"

    def score_batch(self, images, prompts):
        results = [score_prompt(image, prompt) for image, prompt in zip(images, prompts)]
        return np.array([np.nan if r is None else 100.0 * all_correct(r) for r in results])

    def identity(self):
        return {"scorer": self.name, "id": "hdiff.shapes.oracle", "revision": None}
