"""Prompt embeddings cached on disk by (model, text hash): a re-run computes only texts it has not seen.

Layout: `<cache_dir>/<model slug>/part-<hash>.vecs.npy` (n, D) float32 and `part-<hash>.keys.npy` (n,) sha1 hex of
each text. Parts are immutable and written atomically (hdiff.files), vectors first, so a keys file marks
a complete part; a run that adds texts adds parts, one per `CHECKPOINT_ROWS` texts, so a killed run keeps its work.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from hdiff.errors import HdiffError
from hdiff.files import atomic_path

CHECKPOINT_ROWS = 65_536
KEY_DTYPE = "S40"

EmbedFn = Callable[[list[str]], np.ndarray]


def text_key(text: str) -> bytes:
    """The cache key of one text: its sha1, hex."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest().encode("ascii")


def model_cache_dir(cache_dir: str | os.PathLike, model_name: str) -> Path:
    """The folder of one model's parts: a readable slug of the name plus a short hash of it."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_name).strip("-.")[-60:] or "model"
    return Path(cache_dir) / f"{slug}-{hashlib.sha1(model_name.encode()).hexdigest()[:8]}"


def embed_with_cache(texts: Sequence[str], cache_dir: str | os.PathLike, model_name: str,
                     embed_fn: EmbedFn | None = None, batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """(N, D) float32 embeddings of `texts`, from the cache where present; new ones computed and appended to it.

    `embed_fn(list_of_texts) -> (n, D)` defaults to hdiff.embedding.embed_texts with `model_name`.
    """
    if embed_fn is None:
        from hdiff.embedding import embed_texts

        embed_fn = functools.partial(embed_texts, name=model_name, batch_size=batch_size, progress=progress)
    folder = model_cache_dir(cache_dir, model_name)
    keys = np.array([text_key(t) for t in texts], dtype=KEY_DTYPE)  # (N,)
    cached = load_cache(folder)
    found = np.zeros(len(keys), dtype=bool)
    if cached is not None:
        found = np.isin(keys, cached.keys)

    missing_keys, first = np.unique(keys[~found], return_index=True)
    missing_texts = [texts[i] for i in np.flatnonzero(~found)[first]]
    for start in range(0, len(missing_texts), CHECKPOINT_ROWS):
        chunk = missing_texts[start:start + CHECKPOINT_ROWS]
        vectors = _checked(embed_fn(chunk), len(chunk), cached.dim if cached else None)
        write_part(folder, missing_keys[start:start + CHECKPOINT_ROWS], vectors)
    if missing_texts:
        cached = load_cache(folder)  # the parts just written, and any another process added meanwhile
    if not len(keys):
        return np.zeros((0, cached.dim if cached else 0), dtype=np.float32)
    return cached.lookup(keys)


def embed_into_file(embed: Callable[[list[str]], np.ndarray], texts: Sequence[str], path: str | os.PathLike,
                    chunk: int = CHECKPOINT_ROWS) -> np.ndarray:
    """(N, D) float32 embeddings of `texts` as a memory map of a new .npy file at `path`, computed `chunk` texts at a
    time by `embed` (e.g. embed_with_cache with its settings bound), so only one chunk is in memory."""
    out = None
    for start in range(0, len(texts), chunk):
        vectors = np.asarray(embed(list(texts[start:start + chunk])), dtype=np.float32)  # (c, D)
        if out is None:
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(texts), vectors.shape[1]))
        out[start:start + len(vectors)] = vectors
    if out is None:
        raise HdiffError("embed_into_file needs at least one text")
    out.flush()
    return out


def _checked(vectors: np.ndarray, n: int, dim: int | None) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != n:
        raise HdiffError(f"the embedding function returned shape {vectors.shape} for {n} texts; expected ({n}, D)")
    if dim is not None and vectors.shape[1] != dim:
        raise HdiffError(f"the embedding function returned dimension {vectors.shape[1]}, the cache holds {dim}; "
                         "is the model name right?")
    if not np.isfinite(vectors).all():
        raise HdiffError("the embedding function returned NaN or infinite values")
    return vectors


class CacheView:
    """The parts of one model's cache: all keys in memory, vectors memory-mapped."""

    def __init__(self, keys: np.ndarray, part_of: np.ndarray, row_of: np.ndarray, parts: list[np.ndarray]):
        self.keys = keys  # (M,) sorted, unique
        self.part_of = part_of  # (M,) which part holds keys[i]
        self.row_of = row_of  # (M,) its row in that part
        self.parts = parts  # memory-mapped (n_p, D) arrays
        self.dim = parts[0].shape[1]

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """(N, D) float32 vectors of `keys`, all of which must be cached."""
        pos = np.searchsorted(self.keys, keys)  # (N,)
        pos = np.minimum(pos, len(self.keys) - 1)
        if not (self.keys[pos] == keys).all():
            raise HdiffError("embedding cache lost entries while in use; run again")
        out = np.empty((len(keys), self.dim), dtype=np.float32)
        for p, part in enumerate(self.parts):
            sel = np.flatnonzero(self.part_of[pos] == p)
            if len(sel):
                rows = self.row_of[pos[sel]]
                order = np.argsort(rows, kind="stable")  # read the memory map in file order
                out[sel[order]] = part[rows[order]]
        return out


def load_cache(folder: Path) -> CacheView | None:
    """All complete parts in `folder`, or None when there are none."""
    key_files = sorted(folder.glob("part-*.keys.npy"))
    if not key_files:
        return None
    all_keys, part_of, row_of, parts = [], [], [], []
    for p, key_file in enumerate(key_files):
        vec_file = key_file.with_name(key_file.name.replace(".keys.npy", ".vecs.npy"))
        try:
            keys = np.load(key_file)
            vectors = np.load(vec_file, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise HdiffError(f"embedding cache part {key_file} is unreadable ({exc}); delete it and run again") from exc
        if vectors.ndim != 2 or len(vectors) != len(keys) or (parts and vectors.shape[1] != parts[0].shape[1]):
            raise HdiffError(f"embedding cache part {vec_file} has shape {vectors.shape}, not ({len(keys)}, D) "
                             "like the others; delete it and run again")
        all_keys.append(keys.astype(KEY_DTYPE))
        part_of.append(np.full(len(keys), p, dtype=np.int32))
        row_of.append(np.arange(len(keys), dtype=np.int64))
        parts.append(vectors)
    keys = np.concatenate(all_keys)
    keys, first = np.unique(keys, return_index=True)  # a text cached twice (two concurrent runs): either copy
    return CacheView(keys, np.concatenate(part_of)[first], np.concatenate(row_of)[first], parts)


def write_part(folder: Path, keys: np.ndarray, vectors: np.ndarray) -> Path:
    """Write one immutable part named by a hash of its keys; vectors first, then keys, each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    name = "part-" + hashlib.sha1(keys.astype(KEY_DTYPE).tobytes()).hexdigest()[:16]
    _save_atomic(folder / f"{name}.vecs.npy", np.ascontiguousarray(vectors, dtype=np.float32))
    key_file = folder / f"{name}.keys.npy"
    _save_atomic(key_file, keys.astype(KEY_DTYPE))
    return key_file


def _save_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
