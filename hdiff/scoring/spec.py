"""The build config's `scores:` entries and `filter:` rules, checked when the config is read.

    scores: [clip, nsfw]                                   # registered scorers by name, their default models
    scores: [clip, {name: pickscore, scorer: clip, model: yuvalkirstain/PickScore_v1,
                    processor: laion/CLIP-ViT-H-14-laion2B-s32B-b79K}]
    filter: {clip_min: 25, nsfw: drop}                     # <score>_min / <score>_max, and drop for a flag

A filter names a score the build computes, or the config is refused before any work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hdiff.errors import HdiffError
from hdiff.scoring.base import SCORERS, Scorer, check_scorer, require_cached

OPTIONS = {"clip": ("processor",), "nsfw": ("processor",), "aesthetic": ("clip",), "oracle": ()}


class ScoreSpec(BaseModel):
    """One score a build computes: its name in records, the registered scorer, and that scorer's model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="the score's key in each record's `scores`")
    scorer: str | None = Field(None, description="a registered scorer (default: the name)")
    model: str | None = Field(None, min_length=1, description="a Hub id or folder (default: the scorer's own)")
    processor: str | None = Field(None, min_length=1, description="clip, nsfw: the processor's repo (default: the "
                                  "model's)")
    clip: str | None = Field(None, min_length=1, description="aesthetic: the CLIP model embedding the images "
                             "(default: openai/clip-vit-large-patch14)")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _registered(self) -> ScoreSpec:
        try:
            check_scorer(self.kind_name)
        except HdiffError as exc:
            raise ValueError(str(exc)) from None
        unused = [key for key in ("processor", "clip") if getattr(self, key) is not None
                  and key not in OPTIONS.get(self.kind_name, ())]
        if unused:
            raise ValueError(f"the {self.kind_name} scorer has no option {', '.join(unused)}; its options: "
                             f"model{''.join(', ' + o for o in OPTIONS.get(self.kind_name, ()))}")
        return self

    @property
    def kind_name(self) -> str:
        """The registered scorer this entry runs."""
        return self.scorer or self.name

    @property
    def kind(self) -> str:
        return SCORERS[self.kind_name].kind

    def options(self) -> dict[str, str]:
        return {key: getattr(self, key) for key in ("processor", "clip") if getattr(self, key) is not None}

    def require_cached(self) -> None:
        """Offline, one line naming the scorer's model when the local cache lacks it (before any work)."""
        require_cached(self.kind_name, self.model, **self.options())

    def load(self, device: str = "cpu") -> Scorer:
        from hdiff.scoring.base import load_scorer

        return load_scorer(self.kind_name, model=self.model, device=device, **self.options())


@dataclass(frozen=True)
class Rule:
    """One filter: drop an image whose `score` is below `low`, above `high`, or (a flag) set."""

    score: str
    key: str  # as written in the config: clip_min, nsfw
    low: float = -math.inf
    high: float = math.inf
    flag: bool = False

    def reason(self, value: float) -> str | None:
        """Why an image with this score is dropped (the config key), or None when it is kept. A score the scorer
        could not give (NaN) keeps the image."""
        if math.isnan(value):
            return None
        if self.flag:
            return self.key if value >= 0.5 else None
        return self.key if value < self.low or value > self.high else None


def filter_rules(filters: dict[str, Any], specs: list[ScoreSpec]) -> list[Rule]:
    """The rules of a `filter:` section; ValueError with one line per problem (unknown key, a score not computed,
    a bound that is not a number, a flag that is not `drop` or `keep`)."""
    computed = {spec.name: spec for spec in specs}
    rules, problems = [], []
    for key, value in filters.items():
        name, bound = _split(key, computed)
        if name not in computed:
            choices = ", ".join(f"{n}_min, {n}_max" if s.kind == "score" else n for n, s in computed.items())
            problems.append(f"filter.{key}: filters on {name!r}, which is not computed; add it to scores"
                            + (f" (filters the scores give: {choices})" if choices else "")
                            + f"; scorers: {', '.join(sorted(SCORERS))}")
        elif computed[name].kind == "flag":
            if bound is not None or value not in ("drop", "keep"):
                problems.append(f"filter.{key}: {name} is a flag; write `{name}: drop` (or keep), got {key}: {value!r}")
            elif value == "drop":
                rules.append(Rule(name, key, flag=True))
        elif bound is None:
            problems.append(f"filter.{key}: {name} is a score; filter it with {name}_min or {name}_max")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            problems.append(f"filter.{key}: must be a finite number, got {value!r}")
        else:
            rules.append(Rule(name, key, **({"low": float(value)} if bound == "min" else {"high": float(value)})))
    if problems:
        raise ValueError("\n".join(problems))
    return rules


def _split(key: str, computed: dict) -> tuple[str, str | None]:
    """`clip_min` → ("clip", "min"); a computed score's own name (a flag) → (name, None)."""
    if key in computed:
        return key, None
    for bound in ("min", "max"):
        if key.endswith(f"_{bound}"):
            return key[: -len(bound) - 1], bound
    return key, None


def drop_reason(rules: list[Rule], scores: dict[str, float]) -> tuple[str, float] | None:
    """(the first rule's key that drops an image with `scores`, its score), or None when every rule keeps it."""
    for rule in rules:
        if (reason := rule.reason(scores[rule.score])) is not None:
            return reason, scores[rule.score]
    return None
