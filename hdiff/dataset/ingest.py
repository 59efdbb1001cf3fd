"""Ingest: normalize a corpus's prompts, drop the unusable (counted by reason), dedupe, sample.

Stages, each testable on plain lists: hdiff.dataset.sources (Hub id or local files → rows) → `normalize` (one value
→ clean text or None) → `ingest_into` (rows → `Prompt`s in a store, each with its source row, and an
`IngestReport`). A store holds the kept prompts: in memory (`KeptInMemory`, what `ingest_rows` returns as a list), or
spilled to an SQLite file (`SpilledToDisk`), so that a build's memory does not grow with the corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hdiff.errors import HdiffError
from hdiff.prompts import prompt_id

READ_BATCH = 4096  # prompts added to a store at a time
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


def ingest_rows(rows: Iterable[tuple[object, dict[str, Any]]], **settings) -> tuple[list[Prompt], IngestReport]:
    """Usable prompts in corpus order, each with its row number and kept columns, and what was dropped, by reason:
    `ingest_into` a store held in memory."""
    kept = KeptInMemory()
    report = ingest_into(kept, rows, **settings)
    return [p for chunk in kept.chunks() for p in chunk], report


def ingest_into(store: PromptStore, rows: Iterable[tuple[object, dict[str, Any]]], *, max_chars: int = 1000,
                long_policy: str = "truncate", near_dedupe: float | None = None, embed_fn: EmbedFn | None = None,
                limit: int | None = None, sample_seed: int | None = None,
                source: str = "the corpus") -> IngestReport:
    """Put the usable prompts of `rows` (prompt value, kept columns) into `store` (empty), first occurrence wins;
    return what was read and dropped, by reason. `rows` is read once, READ_BATCH at a time, so it may be a stream.

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
    truncated = read = 0
    batch: list[Prompt] = []
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
        batch.append(Prompt(prompt_id(text), text, row, columns))
        if len(batch) == READ_BATCH:
            dropped["duplicate"] += store.add(batch)
            batch = []
    dropped["duplicate"] += store.add(batch)

    if near_dedupe is not None and len(store):
        if embed_fn is None:
            from hdiff.embedding import embed_texts

            embed_fn = embed_texts
        kept = [p for chunk in store.chunks() for p in chunk]
        keep = near_duplicate_mask(np.asarray(embed_fn([p.text for p in kept]), dtype=np.float32), near_dedupe)
        dropped["near_duplicate"] = store.remove([p.row for p, k in zip(kept, keep, strict=True) if not k])

    if limit is not None and len(store) > limit:
        dropped["sampled_out"] = store.keep_sample(limit, sample_seed)

    report = IngestReport(read=read, kept=len(store), dropped={r: dropped[r] for r in DROP_REASONS if dropped[r]},
                          truncated=truncated)
    if not report.kept:
        detail = report.summary() if report.read else "it has no rows"
        raise HdiffError(f"no usable prompts in {source}: {detail}")
    return report


# ---------------------------------------------------------------------------------------------------- stores


class PromptStore(Protocol):
    """Where ingest keeps prompts: deduplicated by id, in corpus (row) order."""

    def add(self, prompts: list[Prompt]) -> int:
        """Add the prompts whose id is new (first one wins); returns how many were duplicates."""

    def remove(self, rows: list[int]) -> int:
        """Remove the prompts first read at `rows`; returns how many."""

    def keep_sample(self, limit: int, seed: int | None) -> int:
        """Keep `limit` prompts: the first ones, or the `limit` smallest sha1(seed:id); returns how many went."""

    def chunks(self, size: int = READ_BATCH) -> Iterator[list[Prompt]]:
        """The prompts in corpus order, `size` at a time."""

    def sorted_ids(self) -> Iterator[str]:
        """Every prompt id, in id order."""

    def __len__(self) -> int: ...


class KeptInMemory:
    """A PromptStore in a list: for corpora that fit in memory, and tests."""

    def __init__(self):
        self._prompts: list[Prompt] = []
        self._ids: set[str] = set()

    def add(self, prompts: list[Prompt]) -> int:
        before = len(self._prompts)
        for p in prompts:
            if p.id not in self._ids:
                self._ids.add(p.id)
                self._prompts.append(p)
        return len(prompts) - (len(self._prompts) - before)

    def remove(self, rows: list[int]) -> int:
        gone = set(rows)
        kept = [p for p in self._prompts if p.row not in gone]
        removed, self._prompts = len(self._prompts) - len(kept), kept
        self._ids = {p.id for p in kept}
        return removed

    def keep_sample(self, limit: int, seed: int | None) -> int:
        chosen = set(_sample_ids([p.id for p in self._prompts], limit, seed))
        return self.remove([p.row for p in self._prompts if p.id not in chosen])

    def chunks(self, size: int = READ_BATCH) -> Iterator[list[Prompt]]:
        for start in range(0, len(self._prompts), size):
            yield self._prompts[start:start + size]

    def sorted_ids(self) -> Iterator[str]:
        return iter(sorted(self._ids))

    def __len__(self) -> int:
        return len(self._prompts)


class SpilledToDisk:
    """A PromptStore in an SQLite file: memory stays bounded (a page cache of CACHE_KIB) whatever the corpus size.

    A scratch file for one run (no journal, no fsync): `path` is created, and removed by `close`.
    """

    CACHE_KIB = 16_384

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._db = sqlite3.connect(self.path)
        self._db.executescript(f"""
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA temp_store = FILE;
            PRAGMA cache_size = -{self.CACHE_KIB};
            CREATE TABLE prompts (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, text TEXT NOT NULL,
                                  columns TEXT NOT NULL);
        """)

    def add(self, prompts: list[Prompt]) -> int:
        before = self._db.total_changes
        self._db.executemany("INSERT OR IGNORE INTO prompts VALUES (?, ?, ?, ?)",
                             ((p.row, p.id, p.text, json.dumps(p.columns, ensure_ascii=False)) for p in prompts))
        return len(prompts) - (self._db.total_changes - before)

    def remove(self, rows: list[int]) -> int:
        before = self._db.total_changes
        self._db.executemany("DELETE FROM prompts WHERE row = ?", ((r,) for r in rows))
        return self._db.total_changes - before

    def keep_sample(self, limit: int, seed: int | None) -> int:
        before = self._db.total_changes
        if seed is None:
            order = "row"
        else:
            self._db.create_function("sample_rank", 1, lambda pid: _sample_rank(seed, pid), deterministic=True)
            order = "sample_rank(id)"
        self._db.execute(f"DELETE FROM prompts WHERE row NOT IN (SELECT row FROM prompts ORDER BY {order} LIMIT ?)",
                         (limit,))
        return self._db.total_changes - before

    def chunks(self, size: int = READ_BATCH) -> Iterator[list[Prompt]]:
        last = -1
        while rows := self._db.execute("SELECT id, text, row, columns FROM prompts WHERE row > ? ORDER BY row "
                                       "LIMIT ?", (last, size)).fetchall():
            yield [Prompt(pid, text, row, json.loads(columns)) for pid, text, row, columns in rows]
            last = rows[-1][2]

    def sorted_ids(self) -> Iterator[str]:
        cursor = self._db.execute("SELECT id FROM prompts ORDER BY id")
        while ids := cursor.fetchmany(READ_BATCH):
            yield from (pid for (pid,) in ids)

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM prompts").fetchone()[0]

    def close(self) -> None:
        self._db.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> SpilledToDisk:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _sample_rank(seed: int, pid: str) -> bytes:
    return hashlib.sha1(f"{seed}:{pid}".encode()).digest()


def _sample_ids(ids: list[str], limit: int, seed: int | None) -> list[str]:
    """The first `limit` ids, or with a seed the `limit` smallest sha1(seed:id): a sample independent of order."""
    if seed is None:
        return ids[:limit]
    return sorted(ids, key=lambda pid: _sample_rank(seed, pid))[:limit]


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
