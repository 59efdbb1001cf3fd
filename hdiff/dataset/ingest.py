"""Ingest: normalize a corpus's prompts, drop the unusable (counted by reason), dedupe, sample.

Stages, each testable on plain lists: hdiff.dataset.sources (Hub id or local files → rows) → `normalize` (one value
→ clean text or None) → `ingest_rows` (rows → `Prompt`s, each with its source row, and an `IngestReport`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hdiff.errors import HdiffError
from hdiff.prompts import prompt_id

DROP_REASONS = ("not_text", "empty", "too_long", "duplicate", "near_duplicate", "sampled_out")

_ALWAYS_INVISIBLE = re.compile("[\u200b\u2060\ufeff]")  # zero-width space, word joiner, BOM
# ZWNJ / ZWJ are removed unless they join two non-ASCII characters (emoji sequences, Persian or Indic script)
_STRAY_JOINER = re.compile(r"(?<![^\x00-\x7f\s])[\u200c\u200d]|[\u200c\u200d](?![^\x00-\x7f\s])")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc

EmbedFn = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class Prompt:
    id: str  # prompt_id(text)
    text: str
    row: int = field(default=0, compare=False)  # its row in the source (the first, for a repeated prompt)
    columns: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)  # kept source columns


@dataclass
class IngestReport:
    read: int
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)  # reason → count, reasons in DROP_REASONS
    truncated: int = 0  # kept, but cut to max_chars

    def summary(self) -> str:
        """`3 empty, 1 duplicate` — the non-zero drops, in DROP_REASONS order."""
        parts = [f"{self.dropped[r]} {r.replace('_', ' ')}" for r in DROP_REASONS if self.dropped.get(r)]
        return ", ".join(parts) or "nothing dropped"


# ---------------------------------------------------------------------------------------------------- cleaning


def normalize(text: object) -> str | None:
    """Clean prompt text: NFC, invisible characters removed, whitespace collapsed and stripped; None if not a str.

    Emoji, right-to-left text and joiners inside them are kept; control characters count as whitespace.
    """
    if not isinstance(text, str):
        return None
    text = unicodedata.normalize("NFC", text)
    text = _STRAY_JOINER.sub("", _ALWAYS_INVISIBLE.sub("", text))
    text = _CONTROL.sub(" ", text)
    return " ".join(text.split())


def ingest(raw: Iterable[object], **settings) -> tuple[list[Prompt], IngestReport]:
    """`ingest_rows` of plain prompt values (no source columns)."""
    return ingest_rows(((value, {}) for value in raw), **settings)


def ingest_rows(rows: Iterable[tuple[object, dict[str, Any]]], *, max_chars: int = 1000,
                long_policy: str = "truncate", near_dedupe: float | None = None, embed_fn: EmbedFn | None = None,
                limit: int | None = None, sample_seed: int | None = None,
                source: str = "the corpus") -> tuple[list[Prompt], IngestReport]:
    """Usable prompts in corpus order (first occurrence wins), each with its row number and kept columns, and what
    was dropped, by reason. `rows` is read once, so it may be a stream.

    Steps: normalize; drop non-text and empty; truncate or drop over-long; exact dedupe; near-dedupe (cosine of
    `embed_fn` embeddings >= `near_dedupe`); then keep `limit` — the first ones, or with `sample_seed` a seeded
    sample that depends only on the ids (stable when the corpus grows) — still in corpus order.
    """
    if max_chars < 1:
        raise HdiffError(f"max_chars must be >= 1, got {max_chars}")
    if long_policy not in ("truncate", "drop"):
        raise HdiffError(f"long_policy must be 'truncate' or 'drop', got {long_policy!r}")
    if limit is not None and limit < 1:
        raise HdiffError(f"limit must be >= 1, got {limit}")
    dropped: Counter[str] = Counter()
    truncated = 0
    seen: set[str] = set()
    prompts: list[Prompt] = []
    read = 0
    for row, (value, columns) in enumerate(rows):
        read = row + 1
        text = normalize(value)
        if text is None:
            dropped["not_text"] += 1
            continue
        if not text:
            dropped["empty"] += 1
            continue
        if len(text) > max_chars:
            if long_policy == "drop":
                dropped["too_long"] += 1
                continue
            text = text[:max_chars].rstrip()
            truncated += 1
        pid = prompt_id(text)
        if pid in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(pid)
        prompts.append(Prompt(pid, text, row, columns))

    if near_dedupe is not None and prompts:
        if embed_fn is None:
            from hdiff.embedding import embed_texts

            embed_fn = embed_texts
        keep = near_duplicate_mask(np.asarray(embed_fn([p.text for p in prompts]), dtype=np.float32), near_dedupe)
        dropped["near_duplicate"] = int((~keep).sum())
        prompts = [p for p, k in zip(prompts, keep, strict=True) if k]

    if limit is not None and len(prompts) > limit:
        chosen = set(_sample_ids([p.id for p in prompts], limit, sample_seed))
        dropped["sampled_out"] = len(prompts) - limit
        prompts = [p for p in prompts if p.id in chosen]

    report = IngestReport(read=read, kept=len(prompts), dropped={r: dropped[r] for r in DROP_REASONS if dropped[r]},
                          truncated=truncated)
    if not prompts:
        detail = report.summary() if report.read else "it has no rows"
        raise HdiffError(f"no usable prompts in {source}: {detail}")
    return prompts, report


def _sample_ids(ids: list[str], limit: int, seed: int | None) -> list[str]:
    """The first `limit` ids, or with a seed the `limit` smallest sha1(seed:id): a sample independent of order."""
    if seed is None:
        return ids[:limit]
    return sorted(ids, key=lambda pid: hashlib.sha1(f"{seed}:{pid}".encode()).digest())[:limit]


def near_duplicate_mask(embeddings: np.ndarray, threshold: float, block: int = 1024) -> np.ndarray:
    """(N,) bool: True for rows kept by a greedy pass that drops a row whose cosine to a kept earlier row >= threshold.

    Rows are L2-normalized here. Memory is O(N·D + block²): kept rows are compared block by block.
    """
    x = np.asarray(embeddings, dtype=np.float32)  # (N, D)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise HdiffError("near-dedupe needs a finite (N, D) embedding matrix")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    keep = np.zeros(n, dtype=bool)
    kept = np.empty_like(x)  # (N, D), the first n_kept rows are filled
    n_kept = 0
    for start in range(0, n, block):
        rows = x[start:start + block]  # (B, D)
        best = np.full(len(rows), -np.inf, dtype=np.float32)  # (B,) max cosine to rows kept in earlier blocks
        for k0 in range(0, n_kept, block):
            best = np.maximum(best, (rows @ kept[k0:min(k0 + block, n_kept)].T).max(axis=1))
        within = rows @ rows.T  # (B, B)
        kept_here: list[int] = []
        for i in range(len(rows)):
            if best[i] >= threshold or (kept_here and within[i, kept_here].max() >= threshold):
                continue
            kept_here.append(i)
        keep[start + np.asarray(kept_here, dtype=np.int64)] = True
        kept[n_kept:n_kept + len(kept_here)] = rows[kept_here]
        n_kept += len(kept_here)
    return keep
