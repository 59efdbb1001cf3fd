"""The build's scoring stage: between decoding and the writer, each shard's samples are scored in batches on the
shard's device (hdiff.scoring), their scores go into the records, and images a `filter:` rule drops are not written
but listed (key, the rule, its score, the UNet rows it cost) in the shard's stats, which also count the drops by
rule and sum their UNet rows apart from the written images'. A shard whose every image is dropped is its stats alone
(no tar). Scoring time is kept apart from generation time."""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from hdiff.dataset.config import BuildConfig
from hdiff.dataset.writer import Sample, ShardStats, read_stats
from hdiff.scoring.spec import Rule, ScoreSpec, drop_reason

BATCH = 32
_LOCK = threading.Lock()


@functools.lru_cache(maxsize=16)
def _scorers(specs: tuple[ScoreSpec, ...], device: str) -> dict:
    return {spec.name: spec.load(device) for spec in specs}


class ShardScoring:
    """One shard's scoring: call it on the shard's samples; `stats()` gives what its stats file adds."""

    def __init__(self, scorers: dict, rules: list[Rule]):
        self.scorers = scorers
        self.rules = rules
        self.dropped: list[dict] = []
        self.seconds = 0.0

    def __call__(self, samples: Iterable[Sample]) -> Iterator[Sample]:
        batch: list[Sample] = []
        for sample in samples:
            batch.append(sample)
            if len(batch) == BATCH:
                yield from self._scored(batch)
                batch = []
        if batch:
            yield from self._scored(batch)

    def _scored(self, batch: list[Sample]) -> Iterator[Sample]:
        started = time.perf_counter()
        images, prompts = [np.asarray(s.image) for s in batch], [s.prompt for s in batch]
        values = {name: scorer(images, prompts) for name, scorer in self.scorers.items()}  # name -> (B,)
        self.seconds += time.perf_counter() - started
        for row, sample in enumerate(batch):
            scores = {name: float(v[row]) for name, v in values.items()}
            dropped = drop_reason(self.rules, scores)
            if dropped is not None:
                self.dropped.append({"key": sample.key, "reason": dropped[0], "score": dropped[1],
                                     "unet_rows": sample.record["unet_rows"],
                                     "standard_rows": sample.record["standard_unet_rows"]})
                continue
            record = {**sample.record, "scores": {k: None if math.isnan(v) else v for k, v in scores.items()}}
            yield dataclasses.replace(sample, record=record)

    def stats(self) -> dict:
        """The stats fields this shard's scoring adds (`drop_fields`)."""
        return drop_fields(self.dropped, self.seconds)


def drop_fields(dropped: list[dict], scoring_seconds: float | None) -> dict:
    """A shard's stats fields for its `dropped` images (each key, reason, score, unet_rows, standard_rows): the drops
    by reason, each drop, the UNet rows they cost (and standard sampling's), and the scoring seconds."""
    return {"filtered": dict(sorted(Counter(d["reason"] for d in dropped).items())), "dropped": dropped,
            "filtered_unet_rows": float(sum(d["unet_rows"] for d in dropped)),
            "filtered_standard_rows": sum(d["standard_rows"] for d in dropped),
            **({"scoring_seconds": scoring_seconds} if scoring_seconds is not None else {})}


def carried_drops(stats: ShardStats, removed: frozenset[str], kept: float) -> dict | None:
    """The stats fields of a shard written again from `stats`' shard without the images `removed`: its drops but
    those removed, its scoring seconds scaled by the share `kept` of its images (None when it was not scored)."""
    if stats.dropped is None:
        return None
    dropped = [d.model_dump() for d in stats.dropped if d.key not in removed]
    return drop_fields(dropped, stats.scoring_seconds * kept if stats.scoring_seconds is not None else None)


def shard_scoring(config: BuildConfig, device: str) -> ShardScoring | None:
    """The scoring stage of a shard generated on `device`, or None when the config computes no score. Scorers load
    once per device and process."""
    if not config.scores:
        return None
    with _LOCK:
        scorers = _scorers(tuple(config.scores), device)
    return ShardScoring(scorers, config.filter_rules())


def scorer_identities(config: BuildConfig) -> dict[str, dict] | None:
    """The manifest's entry: each score's scorer, model id and resolved revision (None without scores)."""
    if not config.scores:
        return None
    from hdiff.hub import model_revision
    from hdiff.scoring import SCORERS

    found = {}
    for spec in config.scores:
        model = spec.model or SCORERS[spec.kind_name].default_model
        found[spec.name] = {"scorer": spec.kind_name, "id": model or f"hdiff.{spec.kind_name}",
                            "revision": model_revision(model) if model else None}
        if spec.kind_name == "aesthetic":  # the CLIP model under its MLP
            from hdiff.scoring.clip import CLIP_L14

            clip = spec.clip or CLIP_L14
            found[spec.name].update({"clip": clip, "clip_revision": model_revision(clip)})
    return found


def score_summary(records: Iterable[dict]) -> dict[str, dict[str, float]]:
    """Per score: n, mean, p5, p50, p95 over the records that hold it."""
    values: dict[str, list[float]] = {}
    for record in records:
        for name, value in (record.get("scores") or {}).items():
            if value is not None:
                values.setdefault(name, []).append(float(value))
    return {name: {"n": len(v), "mean": float(np.mean(v)), **{f"p{q}": float(np.percentile(v, q))
                                                               for q in (5, 50, 95)}}
            for name, v in sorted(values.items())}


def dropped_rows(out_dir: str | Path, shards: Iterable[str]) -> list[dict]:
    """Every dropped image of `shards` (key, reason, score), read from their stats."""
    rows = []
    for name in shards:
        stats = read_stats(out_dir, name)
        rows += [d.model_dump() for d in (stats.dropped or [])] if stats is not None else []
    return rows


def dropped_table(rows: list[dict], limit: int = 100) -> str:
    """Markdown: the images a filter dropped, each with its key, rule and score (empty when none)."""
    if not rows:
        return ""
    lines = ["", "## Filtered out", "", "| key | rule | score |", "|---|---|---|"]
    lines += [f"| `{r['key']}` | {r['reason']} | {r['score']:.4g} |" for r in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"| … and {len(rows) - limit} more (stats/*.json) | | |")
    return "\n".join(lines) + "\n"
