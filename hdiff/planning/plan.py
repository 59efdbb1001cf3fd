"""The plan: which clusters are active at each scheduler evaluation, and what that costs — all before any model call.

At evaluation k the tree is cut at height φ(k): a node is active when its height is below the cut and its parent's
is not (Decatur et al., Sec. 3.2). Because φ is non-increasing, each node is active for one contiguous run of
evaluations [start, end), and a child's run begins exactly where its parent's ends: cuts only refine.

Copies policy: when the same prompt appears more than once (several images per prompt, or a repeated prompt),
its copies have identical embeddings and would otherwise share every evaluation but the last and come out nearly
identical. Any node whose members include two copies of one prompt is forced to split by evaluation
floor(copy_max_shared · K): copies never share more than that fraction of the evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import numpy as np

from hdiff.errors import HdiffError
from hdiff.planning.schedule import Schedule
from hdiff.planning.tree import ClusterTree


@dataclass(frozen=True, eq=False)
class Plan:
    """Active nodes per evaluation. Invariants: cuts refine, every leaf is active at the last evaluation."""

    tree: ClusterTree
    schedule: Schedule
    cut_heights: np.ndarray  # (K,)
    start: np.ndarray  # (2N-1,) first evaluation at which the node is active
    end: np.ndarray  # (2N-1,) one past its last; start == end for nodes never active
    rows_per_cluster: int  # UNet rows per active cluster and evaluation: 2 with classifier-free guidance

    @property
    def num_evaluations(self) -> int:
        return len(self.cut_heights)

    @property
    def n_images(self) -> int:
        return self.tree.n_leaves

    @cached_property
    def active(self) -> list[np.ndarray]:
        """Per evaluation, the ascending ids of the active nodes."""
        return [np.flatnonzero((self.start <= k) & (k < self.end)) for k in range(self.num_evaluations)]

    @cached_property
    def parent_index(self) -> list[np.ndarray]:
        """Per evaluation k >= 1, for each active node, the index in active[k-1] of the node it continues from."""
        out = [np.zeros(0, dtype=np.int64)]
        ancestor = self.active_ancestor
        for k in range(1, self.num_evaluations):
            now, before = self.active[k], self.active[k - 1]
            source = np.where(self.start[now] < k, now, ancestor[now])
            index = np.searchsorted(before, source)
            assert np.array_equal(before[index], source), "plan invariant broken: a cut did not refine"
            out.append(index)
        return out

    @cached_property
    def active_ancestor(self) -> np.ndarray:
        """(2N-1,) the nearest proper ancestor that is active at some evaluation (-1 for none).

        A node's latent continues from it: skipped ancestors (active for no evaluation) are passed over.
        """
        parent = self.tree.parent
        ever = self.end > self.start
        out = np.full(self.tree.n_nodes, -1, dtype=np.int64)
        for node in range(self.tree.n_nodes - 2, -1, -1):  # parents have larger ids than their children
            p = parent[node]
            out[node] = p if ever[p] else out[p]
        return out

    @property
    def clusters_evaluated(self) -> int:
        """Σ_k |active(k)|: latents stepped over the whole run."""
        return int(np.clip(self.end - self.start, 0, None).sum())

    @property
    def unet_rows(self) -> int:
        return self.clusters_evaluated * self.rows_per_cluster

    @property
    def standard_unet_rows(self) -> int:
        return self.n_images * self.num_evaluations * self.rows_per_cluster

    @property
    def saved_fraction(self) -> float:
        return 1.0 - self.unet_rows / self.standard_unet_rows

    def leaf_unet_rows(self, leaf: int) -> Fraction:
        """UNet rows attributable to one image: each shared row is divided evenly among the node's members."""
        sizes = self.tree.sizes
        total = Fraction(0)
        for node in self.tree.path_to_root(leaf):
            span = int(self.end[node] - self.start[node])
            if span > 0:
                total += Fraction(span * self.rows_per_cluster, int(sizes[node]))
        return total

    def leaf_path(self, leaf: int) -> list[tuple[int, int, int]]:
        """(node, size, from_evaluation) for each node the image's latent passed through, root side first."""
        sizes = self.tree.sizes
        nodes = [n for n in self.tree.path_to_root(leaf) if self.end[n] > self.start[n]]
        return [(int(n), int(sizes[n]), int(self.start[n])) for n in reversed(nodes)]

    def leaf_shared_evaluations(self, leaf: int) -> int:
        sizes = self.tree.sizes
        return int(sum(max(0, self.end[n] - self.start[n]) for n in self.tree.path_to_root(leaf) if sizes[n] > 1))

    def summary(self) -> dict:
        return {
            "images": self.n_images,
            "evaluations": self.num_evaluations,
            "schedule": self.schedule.name,
            "unet_rows": self.unet_rows,
            "standard_unet_rows": self.standard_unet_rows,
            "saved_fraction": self.saved_fraction,
            "active_per_evaluation": [len(a) for a in self.active],
        }


def nodes_holding_copies(tree: ClusterTree, groups: np.ndarray) -> np.ndarray:
    """(2N-1,) bool: the node's members include two leaves of one group (copies of one prompt)."""
    n = tree.n_leaves
    holds = np.zeros(tree.n_nodes, dtype=bool)
    sets: dict[int, set] = {leaf: {groups[leaf]} for leaf in range(n)}
    for i, (a, b) in enumerate(tree.children):
        small, large = sorted((sets.pop(int(a)), sets.pop(int(b))), key=len)
        holds[n + i] = holds[a] or holds[b] or not small.isdisjoint(large)
        large |= small
        sets[n + i] = large
    return holds


def make_plan(tree: ClusterTree, schedule: Schedule, num_evaluations: int, *, guidance: bool = True,
              groups: np.ndarray | list | None = None, copy_max_shared: float = 0.25) -> Plan:
    """The plan for cutting `tree` at `schedule` over `num_evaluations` evaluations.

    `groups[leaf]` labels copies of one prompt (equal labels); see the module docstring for the copies policy.
    """
    if not 0.0 <= copy_max_shared <= 1.0:
        raise HdiffError(f"copy_max_shared must be in [0, 1], got {copy_max_shared}")
    cut = schedule.heights(num_evaluations)
    if np.any(np.diff(cut) > 0) or cut[-1] != 0:
        raise HdiffError(f"schedule {schedule.name} must be non-increasing and end at 0")
    n = tree.n_leaves
    effective = tree.heights.copy()
    effective[:n] = -np.inf  # a leaf is never cut further
    if groups is not None:
        groups = np.asarray(groups)
        if len(groups) != n:
            raise HdiffError(f"{len(groups)} group labels for {n} leaves")
        limit = math.floor(copy_max_shared * num_evaluations)
        if limit < num_evaluations:
            holds = nodes_holding_copies(tree, groups)
            effective[holds] = np.maximum(effective[holds], cut[limit])
    # Evaluations with cut > h form a prefix, because the cut is non-increasing.
    descending = -cut  # ascending, for searchsorted
    end = np.searchsorted(descending, -effective, side="left")
    parent = tree.parent
    start = np.zeros_like(end)
    has_parent = parent >= 0
    start[has_parent] = end[parent[has_parent]]
    end = np.maximum(end, start)
    return Plan(tree, schedule, cut, start.astype(np.int64), end.astype(np.int64), 2 if guidance else 1)


def plan_for_budget(tree: ClusterTree, target_saved: float, num_evaluations: int, *, kind: str = "linear",
                    iterations: int = 60, **plan_kwargs) -> Plan:
    """Budget mode: the plan whose τ saves the fraction of UNet rows closest to `target_saved`, by bisection on τ."""
    if not (0.0 <= target_saved < 1.0) or math.isnan(target_saved):
        raise HdiffError(f"budget must be a fraction in [0, 1), got {target_saved}")

    def plan_at(tau: float) -> Plan:
        return make_plan(tree, Schedule(kind, tau), num_evaluations, **plan_kwargs)

    best = plan_at(0.0)
    if target_saved == 0.0 or tree.n_leaves == 1:
        return best
    finite = tree.heights[np.isfinite(tree.heights)]  # joined forests have infinite top merges
    hi = max(float(finite.max()), 1e-6) * max(num_evaluations, 2) * 2
    while plan_at(2 * hi).saved_fraction > plan_at(hi).saved_fraction + 1e-12:  # find where saving saturates
        hi *= 2
    lo = 0.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        candidate = plan_at(mid)
        if abs(candidate.saved_fraction - target_saved) < abs(best.saved_fraction - target_saved):
            best = candidate
        if candidate.saved_fraction < target_saved:
            lo = mid
        else:
            hi = mid
    upper = plan_at(hi)
    if abs(upper.saved_fraction - target_saved) < abs(best.saved_fraction - target_saved):
        best = upper
    return best
