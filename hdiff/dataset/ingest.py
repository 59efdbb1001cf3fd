"""Ingest: read a prompt corpus, normalize, drop the unusable (counted by reason), dedupe, sample.

Stages, each testable on plain lists: `read_corpus` (Hub id or local files → raw values) → `normalize` (one value →
clean text or None) → `ingest` (raw values → `Prompt`s and an `IngestReport`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hdiff.errors import HdiffError
from hdiff.prompts import prompt_id

# file suffix → datasets builder
BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".txt": "text"}
TEXT_COLUMN = "text"  # the column the "text" builder yields: one prompt per line

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


# ---------------------------------------------------------------------------------------------------- reading


def read_corpus(source: str, *, split: str = "train", column: str = "prompt",
                data_files: str | list[str] | None = None) -> list:
    """The raw values of `column` in a Hub dataset (`split`, optional `data_files`) or in local files.

    Local sources: a file, a glob or a folder (hidden entries skipped) of .parquet / .jsonl / .json / .csv / .txt
    files, all of one kind; a .txt file holds one prompt per line and its column is always "text". Local files form
    one split: `split` and `data_files` apply to Hub datasets only.
    """
    local = local_files(source)
    if local is None:
        dataset = _load_hub(source, split, data_files)
    else:
        builder = _builder_for(source, local)
        column = TEXT_COLUMN if builder == "text" else column
        dataset = _load_local(source, builder, local)
    if column not in dataset.column_names:
        raise HdiffError(f"{source}: no column {column!r}; available columns: {', '.join(dataset.column_names)}")
    try:
        return list(dataset[column])
    except UnicodeDecodeError as exc:  # pyarrow reads bytes lazily: a bad one shows when the column is read
        where = _first_text_problem(local) if local is not None else None
        raise HdiffError(where or f"{source}: not UTF-8 text ({exc.reason})") from None


def local_files(source: str) -> list[str] | None:
    """The files a local source names, or None when `source` reads as a Hub id."""
    path = Path(source).expanduser()
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in BUILDERS
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise HdiffError(f"{source}: folder has no {' / '.join(BUILDERS)} files")
        return files
    if glob.has_magic(source):
        files = sorted(f for f in glob.glob(str(path), recursive=True) if Path(f).is_file())
        if not files:
            raise HdiffError(f"{source}: no files match this pattern")
        return files
    looks_local = (path.suffix.lower() in BUILDERS or source.startswith(("/", "./", "../", "~"))
                   or len(path.parts) > 2)  # a Hub id is `name` or `owner/name`
    if looks_local:
        raise HdiffError(f"{source}: no such file or folder")
    return None


def _builder_for(source: str, files: list[str]) -> str:
    suffixes = sorted({Path(f).suffix.lower() for f in files})
    unsupported = [s or "(no extension)" for s in suffixes if s not in BUILDERS]
    if unsupported:
        raise HdiffError(f"{source}: unsupported file type {', '.join(unsupported)}; "
                         f"use {' / '.join(BUILDERS)}")
    builders = {BUILDERS[s] for s in suffixes}
    if len(builders) > 1:
        raise HdiffError(f"{source}: mixes file types {', '.join(suffixes)}; point it at one kind")
    return builders.pop()


def _load_local(source: str, builder: str, files: list[str]):
    import datasets

    try:
        return datasets.load_dataset(builder, data_files=files, split="train")
    except Exception as exc:  # a parse error deep inside pyarrow/pandas: one line for the user, naming the place
        where = _first_text_problem(files) if builder in ("json", "text") else None
        raise HdiffError(where or f"{source}: could not read it as {builder}: {_first_line(exc)}") from None


def _first_text_problem(files: list[str]) -> str | None:
    """`file:line: problem` for the first file that is empty, not UTF-8, or (a .jsonl file) holds a line that is not
    a JSON object; None when every file reads. Run only after a reader failed, to say where."""
    for name in files:
        try:
            with open(name, "rb") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            return f"{name}: cannot be read: {exc.strerror or exc}"
        if not any(line.strip() for line in lines):
            return f"{name}: holds no prompts"
        for number, raw in enumerate(lines, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"{name}:{number}: not UTF-8 text (byte {exc.start} of the line)"
            if name.endswith(".jsonl") and line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    return f"{name}:{number}: not a JSON object ({exc.msg}, column {exc.colno})"
                if not isinstance(row, dict):
                    return f"{name}:{number}: not a JSON object"
    return None


def _load_hub(source: str, split: str, data_files: str | list[str] | None):
    import datasets

    try:
        return datasets.load_dataset(source, split=split, data_files=data_files)
    except ConnectionError as exc:
        raise HdiffError(
            f"dataset {source!r} is not in the local cache and the Hub cannot be reached (offline); fetch it "
            f"online with `hf download --repo-type dataset {source}` or point the source at local files"
        ) from exc
    except ValueError as exc:  # an unknown split, among others
        raise HdiffError(f"dataset {source!r}: {_first_line(exc)}") from exc
    except Exception as exc:  # DatasetNotFoundError, FileNotFoundError, ...
        raise HdiffError(f"could not load dataset {source!r} from the Hub: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


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


def ingest(raw: Sequence[object], *, max_chars: int = 1000, long_policy: str = "truncate",
           near_dedupe: float | None = None, embed_fn: EmbedFn | None = None, limit: int | None = None,
           sample_seed: int | None = None, source: str = "the corpus") -> tuple[list[Prompt], IngestReport]:
    """Usable prompts in corpus order (first occurrence wins), and what was dropped, by reason.

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
    for value in raw:
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
        prompts.append(Prompt(pid, text))

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

    report = IngestReport(read=len(raw), kept=len(prompts), dropped={r: dropped[r] for r in DROP_REASONS if dropped[r]},
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
