"""The cluster tree: Ward agglomerative clustering of conditioning embeddings (Decatur et al. 2025, Sec. 3).

Distance and linkage, as in the paper's reference code: the condensed matrix of cosine distances (1 - cos) is
merged with scipy's Ward linkage, which treats those distances as if they were Euclidean. A node's height (the
paper's c_score) is its merge height on that scale; leaves have height 0. Keeping the reference recipe keeps τ's
meaning: the same τ saves what it saves in the paper for the same embeddings.

Determinism: leaves are put in a canonical order (by the caller's keys, e.g. prompt text and seed) before
clustering, so the tree, its node ids and every plan built on it do not depend on the order of the input list.
Ties between equal merge costs are then broken by scipy's deterministic scan over that canonical order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from hdiff.errors import HdiffError


@dataclass(frozen=True, eq=False)
class ClusterTree:
    """A binary merge tree over N leaves. Leaves are nodes 0..N-1, internal node N+i is merge i.

    `children[i]` holds the two children of node N+i, `heights[n]` the merge height of node n (0 for leaves),
    `leaf_of_row[r]` the leaf id of input row r.
    """

    children: np.ndarray  # (N-1, 2) int64
    heights: np.ndarray  # (2N-1,) float64, non-decreasing from child to parent
    leaf_of_row: np.ndarray  # (N,) int64

    @property
    def n_leaves(self) -> int:
        return len(self.leaf_of_row)

    @property
    def n_nodes(self) -> int:
        return 2 * self.n_leaves - 1

    @property
    def root(self) -> int:
        return self.n_nodes - 1

    @cached_property
    def parent(self) -> np.ndarray:
        """(2N-1,) parent node id of each node; -1 for the root."""
        parent = np.full(self.n_nodes, -1, dtype=np.int64)
        parent[self.children.ravel()] = np.repeat(np.arange(self.n_leaves, self.n_nodes), 2)
        return parent

    @cached_property
    def _leaf_order_and_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """Leaves in dendrogram order, and each node's [start, end) span in that order."""
        n = self.n_leaves
        spans = np.zeros((self.n_nodes, 2), dtype=np.int64)
        order: list[int] = []
        stack = [self.root]
        visited_children: set[int] = set()
        while stack:  # iterative post-order walk; recursion would overflow on deep chains
            node = stack[-1]
            if node < n:
                spans[node] = (len(order), len(order) + 1)
                order.append(node)
                stack.pop()
            elif node in visited_children:
                a, b = self.children[node - n]
                spans[node] = (spans[a, 0], spans[b, 1])
                stack.pop()
            else:
                visited_children.add(node)
                a, b = self.children[node - n]
                stack.extend((b, a))
        return np.asarray(order, dtype=np.int64), spans

    def members(self, node: int) -> np.ndarray:
        """Leaf ids under `node`, in dendrogram order."""
        order, spans = self._leaf_order_and_spans
        start, end = spans[node]
        return order[start:end]

    def size(self, node: int) -> int:
        start, end = self._leaf_order_and_spans[1][node]
        return int(end - start)

    @cached_property
    def sizes(self) -> np.ndarray:
        spans = self._leaf_order_and_spans[1]
        return spans[:, 1] - spans[:, 0]

    def path_to_root(self, leaf: int) -> list[int]:
        """Node ids from `leaf` up to the root."""
        path = [leaf]
        parent = self.parent
        while parent[path[-1]] >= 0:
            path.append(int(parent[path[-1]]))
        return path


def normalize_rows(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float64; rejects non-finite and all-zero rows with a clear message."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise HdiffError(f"embeddings must be a non-empty N×D matrix, got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise HdiffError(f"{int(bad.sum())} embedding(s) contain NaN or infinity (first at row {int(np.argmax(bad))})")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise HdiffError(f"embedding at row {int(np.argmax(norms[:, 0] == 0))} is all zeros")
    return x / norms


def cosine_distances(unit_rows: np.ndarray) -> np.ndarray:
    """Condensed 1 - cos distances of unit rows (scipy's pdist layout), from one matrix product."""
    d = 1.0 - unit_rows @ unit_rows.T  # (N, N)
    np.clip(d, 0.0, 2.0, out=d)
    np.fill_diagonal(d, 0.0)
    return squareform(d, checks=False)


def build_tree(embeddings: np.ndarray, keys: list[str] | None = None) -> ClusterTree:
    """Ward tree of `embeddings` (N, D); `keys` fix the canonical leaf order (default: row order)."""
    x = normalize_rows(embeddings)
    n = x.shape[0]
    if keys is None:
        keys = [f"{i:012d}" for i in range(n)]
    if len(keys) != n:
        raise HdiffError(f"{len(keys)} keys for {n} embeddings")
    canonical = np.asarray(sorted(range(n), key=lambda r: (keys[r], r)), dtype=np.int64)  # leaf id -> row
    leaf_of_row = np.empty(n, dtype=np.int64)
    leaf_of_row[canonical] = np.arange(n)
    if n == 1:
        return ClusterTree(np.zeros((0, 2), np.int64), np.zeros(1), leaf_of_row)
    z = linkage(cosine_distances(x[canonical]), method="ward")
    children = z[:, :2].astype(np.int64)
    heights = np.concatenate([np.zeros(n), z[:, 2]])
    heights[n:] = np.maximum.accumulate(heights[n:])  # Ward is monotone; guard against float jitter
    return ClusterTree(children, heights, leaf_of_row)


def tree_from_merges(children: list[tuple[int, int]], heights: list[float]) -> ClusterTree:
    """A tree given by hand (for tests and tools): merge i joins `children[i]` at `heights[i]`."""
    n = len(children) + 1
    return ClusterTree(np.asarray(children, dtype=np.int64).reshape(-1, 2),
                       np.concatenate([np.zeros(n), np.asarray(heights, dtype=np.float64)]),
                       np.arange(n, dtype=np.int64))


def join_trees(trees: list[ClusterTree]) -> ClusterTree:
    """A forest as one tree: the trees' roots joined by merges at infinite height, which no cut ever reaches.

    Planned together, each tree keeps exactly the plan it would have alone, while the sampler batches the active
    clusters of all of them at every evaluation (packing: full batches while clusters are still few).
    Input row order is the trees' rows concatenated; leaf and node ids are renumbered, parents after children.
    """
    if len(trees) == 1:
        return trees[0]
    n = sum(t.n_leaves for t in trees)
    children, heights, leaf_of_row, roots = [], [], [], []
    leaf_base, merge_base = 0, 0
    for tree in trees:
        def renumber(node, tree=tree, leaf_base=leaf_base, merge_base=merge_base):
            return leaf_base + node if node < tree.n_leaves else n + merge_base + node - tree.n_leaves
        children.extend((renumber(a), renumber(b)) for a, b in tree.children)
        heights.extend(tree.heights[tree.n_leaves:])
        leaf_of_row.append(tree.leaf_of_row + leaf_base)
        roots.append(renumber(tree.root))
        leaf_base += tree.n_leaves
        merge_base += tree.n_leaves - 1
    top = roots[0]
    for root in roots[1:]:
        children.append((top, root))
        heights.append(np.inf)
        top = n + len(children) - 1
    return ClusterTree(np.asarray(children, dtype=np.int64),
                       np.concatenate([np.zeros(n), np.asarray(heights, dtype=np.float64)]),
                       np.concatenate(leaf_of_row))
