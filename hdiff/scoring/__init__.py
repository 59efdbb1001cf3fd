"""Scorers: images and prompts in, one number per image out (base.Scorer), registered by name in SCORERS.

clip (CLIP score), aesthetic (LAION's predictor), nsfw (diffusers' safety checker, a flag), oracle (the shapes
world's exact check); similarity holds the paired image similarity the pilot reports. A scorer's module is imported when the scorer is
first used (base.ScorerRegistry): reading a build config imports no torch.
"""

from hdiff.scoring.base import SCORERS, Scorer, check_scorer, load_scorer, require_cached

__all__ = ["SCORERS", "Scorer", "check_scorer", "load_scorer", "require_cached"]
