"""Planning is pure data: the cluster tree, the φ schedule and the per-evaluation plan, built before any model call."""

from hdiff.planning.plan import Plan, make_plan, plan_for_budget
from hdiff.planning.schedule import SCHEDULE_CURVES, Schedule
from hdiff.planning.seeds import node_seed
from hdiff.planning.tree import ClusterTree, build_tree, join_trees, tree_from_merges

__all__ = ["SCHEDULE_CURVES", "ClusterTree", "Plan", "Schedule", "build_tree", "join_trees", "make_plan", "node_seed", "plan_for_budget",
           "tree_from_merges"]
