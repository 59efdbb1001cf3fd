"""Semantic shards: recursive 2-means bisection of prompt embeddings into shards of bounded size.

A node larger than `max_size` is split in two: 2-means (a few Lloyd iterations on a seeded sample of at most
`SAMPLE` rows) gives a direction w = c₁ − c₂; rows are ordered by their projection on w and cut where the 2-means
boundary falls, clamped so each side keeps at least a quarter of the node (depth stays O(log N)) and at least
`min_size` rows. With max_size >= 2·min_size every piece ends within [min_size, max_size].

Memory is O(N·D) for the embeddings plus O(N) index arrays; large nodes are projected in chunks of `CHUNK` rows,
and a node of at most `LOCAL` rows is copied out once so its subtree reads memory that is close together.
The result depends only on the (id, embedding) pairs, not on their order: work happens in id order.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from hdiff.errors import HdiffError

SAMPLE = 4096  # rows a node's 2-means is fitted on
LLOYD_ITERS = 8
CHUNK = 65_536  # rows projected at a time
LOCAL = 32_768  # a node this small is gathered into one array (≤ 48 MiB at D = 384) for its whole subtree
MIN_SIDE = 0.25  # each side of a split keeps at least this fraction of the node


def semantic_shards(embeddings: np.ndarray, ids: list[str], min_size: int, max_size: int,
                    seed: int = 0) -> list[list[int]]:
    """A partition of row indices into shards of min_size..max_size rows (one shard when N <= max_size).

    Each shard lists its rows in id order; shards are ordered by their smallest id.
    """
    x = np.asarray(embeddings, dtype=np.float32)  # no copy for float32 input, memory-mapped or not
    n = len(ids)
    if x.ndim != 2 or len(x) != n:
        raise HdiffError(f"sharding needs one embedding row per id; got {x.shape} for {n} ids")
    if min_size < 1 or max_size < 2 * min_size:
        raise HdiffError(f"shard sizes need 1 <= min_size and max_size >= 2 × min_size; got {min_size}, {max_size}")
    if n == 0:
        return []
    if not all(np.isfinite(x[i:i + CHUNK]).all() for i in range(0, n, CHUNK)):
        raise HdiffError("sharding needs finite embeddings; found NaN or infinite values")
    id_array = np.array(ids, dtype=str)
    by_id = np.argsort(id_array, kind="stable")  # (N,) the row of the k-th smallest id
    sorted_ids = id_array[by_id]
    repeated = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if len(repeated):
        raise HdiffError(f"sharding needs unique ids; {str(sorted_ids[repeated[0]])!r} appears more than once")

    leaves = []
    stack = [(x, by_id, np.arange(n))]  # nodes: (embeddings, rows of the node in them, ranks), ranks ascending
    with threadpool_limits(1, user_api="blas"):  # matrix-vector work: BLAS threads only add overhead
        while stack:
            source, rows, ranks = stack.pop()
            if len(ranks) <= max_size:
                leaves.append(ranks)
                continue
            if len(ranks) <= LOCAL and source is x:  # gather once; the whole subtree then works on this copy
                source, rows = x[rows], np.arange(len(rows))
            left, right = _bisect(source, rows, ranks, min_size, seed)
            stack += [(source, rows[side], ranks[side]) for side in (np.sort(right), np.sort(left))]
    leaves.sort(key=lambda ranks: ranks[0])
    return [by_id[ranks].tolist() for ranks in leaves]


def _bisect(source: np.ndarray, rows: np.ndarray, ranks: np.ndarray, min_size: int,
            seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions in the node (n > max_size) of its two halves along the 2-means direction of a sample of it."""
    n = len(ranks)
    rng = np.random.default_rng([seed, n, int(ranks[0]), int(ranks[-1])])  # fixed per node, whatever the visit order
    if n <= SAMPLE:  # fit on the whole node
        points = source[rows]  # (n, D)
        c1, c2 = _two_means(points, rng)
        proj = points @ (c1 - c2)  # (n,)
    else:
        c1, c2 = _two_means(source[rows[np.sort(rng.choice(n, SAMPLE, replace=False))]], rng)
        proj = _project(source, rows, c1 - c2)
    order = np.argsort(-proj, kind="stable")  # c1's side first; ties keep id order
    boundary = 0.5 * float(c1 @ c1 - c2 @ c2)  # x·w > boundary ⟺ x is closer to c1
    lo = max(min_size, int(np.ceil(MIN_SIDE * n)))
    cut = int(np.clip((proj > boundary).sum(), lo, n - lo)) if np.any(c1 != c2) else n // 2
    return order[:cut], order[cut:]


def _project(source: np.ndarray, rows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(n,) source[rows] @ w, gathered chunk by chunk into one reused buffer, each chunk in row order."""
    proj = np.empty(len(rows), dtype=np.float32)
    buffer = np.empty((min(CHUNK, len(rows)), source.shape[1]), dtype=np.float32)
    for i in range(0, len(rows), CHUNK):
        in_row_order = np.argsort(rows[i:i + CHUNK])
        chunk = np.take(source, rows[i + in_row_order], axis=0, out=buffer[:len(in_row_order)])
        proj[i + in_row_order] = chunk @ w
    return proj


def _two_means(s: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two centroids of the sample s (m, D): farthest-point initialisation, then Lloyd iterations until stable."""
    sq = np.einsum("ij,ij->i", s, s)  # (m,) squared norms; ||s − c||² = sq − 2 s·c + ||c||²
    start = s[rng.integers(len(s))]
    c1 = s[np.argmax(sq - 2 * (s @ start))]
    c2 = s[np.argmax(sq - 2 * (s @ c1))]
    total = s.sum(axis=0)  # (D,)
    near1 = None
    for _ in range(LLOYD_ITERS):
        previous, near1 = near1, s @ (c1 - c2) > 0.5 * (c1 @ c1 - c2 @ c2)  # (m,) True where closer to c1
        k = int(near1.sum())
        if k in (0, len(s)) or (previous is not None and np.array_equal(near1, previous)):
            break
        sum1 = near1.astype(np.float32) @ s  # (D,)
        c1, c2 = sum1 / k, (total - sum1) / (len(s) - k)
    return c1, c2
