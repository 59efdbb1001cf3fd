"""Planning is pure data: trees, schedules, plans and their accounting, checked without any model."""

from fractions import Fraction

import numpy as np
import pytest

from hdiff.errors import HdiffError
from hdiff.planning import Schedule, build_tree, make_plan, plan_for_budget, tree_from_merges
from hdiff.planning.seeds import node_seed


def four_prompt_tree():
    # leaves 0..3; node 4 = (0, 1) at 1.0, node 5 = (2, 3) at 2.0, root 6 = (4, 5) at 3.0
    return tree_from_merges([(0, 1), (2, 3), (4, 5)], [1.0, 2.0, 3.0])


def test_hand_built_tree_gives_the_expected_plan():
    plan = make_plan(four_prompt_tree(), Schedule("linear", 4.0), 5)  # cuts 4, 3, 2, 1, 0
    assert plan.cut_heights.tolist() == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert [a.tolist() for a in plan.active] == [[6], [4, 5], [2, 3, 4], [0, 1, 2, 3], [0, 1, 2, 3]]
    assert [p.tolist() for p in plan.parent_index[1:]] == [[0, 0], [1, 1, 0], [2, 2, 0, 1], [0, 1, 2, 3]]
    assert plan.clusters_evaluated == 14
    assert (plan.unet_rows, plan.standard_unet_rows) == (28, 40)
    assert plan.saved_fraction == pytest.approx(0.3)
    assert plan.leaf_unet_rows(0) == Fraction(13, 2)
    assert plan.leaf_unet_rows(2) == Fraction(15, 2)
    assert plan.leaf_path(0) == [(6, 4, 0), (4, 2, 1), (0, 1, 3)]
    assert plan.leaf_shared_evaluations(2) == 2


def test_tau_zero_is_standard_diffusion():
    tree = build_tree(np.random.default_rng(0).normal(size=(10, 8)))
    plan = make_plan(tree, Schedule("linear", 0.0), 7)
    assert all(a.tolist() == list(range(10)) for a in plan.active)
    assert plan.unet_rows == plan.standard_unet_rows == 10 * 7 * 2


@pytest.mark.parametrize("kind", ["linear", "cosine", "quadratic"])
def test_cuts_refine_and_accounting_adds_up(kind):
    emb = np.random.default_rng(1).normal(size=(60, 16))
    tree = build_tree(emb)
    plan = make_plan(tree, Schedule(kind, 3.0), 20, guidance=False)
    for k in range(1, 20):
        parents = plan.active[k - 1][plan.parent_index[k]]
        for node, parent in zip(plan.active[k], parents):
            assert node == parent or parent in tree.path_to_root(int(node))
        # each active node's members partition the leaves
        members = np.concatenate([tree.members(n) for n in plan.active[k]])
        assert sorted(members.tolist()) == list(range(60))
    assert plan.unet_rows == sum(len(a) for a in plan.active)
    assert sum(plan.leaf_unet_rows(leaf) for leaf in range(60)) == plan.unet_rows


def test_tree_does_not_depend_on_input_order():
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(40, 12))
    keys = [f"prompt-{i:03d}" for i in range(40)]
    perm = rng.permutation(40)
    a = build_tree(emb, keys)
    b = build_tree(emb[perm], [keys[i] for i in perm])
    assert np.array_equal(a.children, b.children)
    assert np.allclose(a.heights, b.heights)
    assert np.array_equal(a.leaf_of_row[perm], b.leaf_of_row)


def test_copies_never_share_more_than_the_cap():
    emb = np.repeat(np.random.default_rng(3).normal(size=(3, 8)), 4, axis=0)  # 3 prompts × 4 copies
    groups = np.repeat(np.arange(3), 4)
    tree = build_tree(emb)
    plan = make_plan(tree, Schedule("linear", 50.0), 40, groups=groups[np.argsort(tree.leaf_of_row)],
                     copy_max_shared=0.25)
    for leaf in range(12):
        assert plan.start[leaf] <= 10  # floor(0.25 * 40): a copy has its own latent by evaluation 10
    unguarded = make_plan(tree, Schedule("linear", 50.0), 40)
    assert max(unguarded.start[:12]) == 39  # without the policy, copies would share all but the last


@pytest.mark.parametrize("target", [0.2, 0.5, 0.7])
def test_budget_mode_reaches_the_target(target):
    tree = build_tree(np.random.default_rng(4).normal(size=(200, 16)))
    plan = plan_for_budget(tree, target, 40)
    assert abs(plan.saved_fraction - target) <= 0.01
    assert plan.schedule.tau > 0


def test_budget_mode_reports_the_closest_the_tree_allows():
    tree = build_tree(np.random.default_rng(5).normal(size=(4, 8)))
    plan = plan_for_budget(tree, 0.99, 10)
    best_possible = 1 - (4 + 9) / 40  # root only for 9 evaluations, 4 leaves at the last
    assert plan.saved_fraction == pytest.approx(best_possible)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_budget_outside_range_is_refused(bad):
    with pytest.raises(HdiffError, match="budget"):
        plan_for_budget(four_prompt_tree(), bad, 10)


def test_bad_inputs_are_refused():
    with pytest.raises(HdiffError, match="tau"):
        Schedule("linear", -1.0)
    with pytest.raises(HdiffError, match="steps"):
        Schedule("linear", 1.0).heights(0)
    with pytest.raises(HdiffError, match="NaN"):
        build_tree(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(HdiffError, match="N×D"):
        build_tree(np.zeros((0, 4)))


def test_node_seed_depends_only_on_the_member_set():
    assert node_seed([7]) == 7
    assert node_seed([3, 1, 2]) == node_seed([2, 3, 1]) != node_seed([1, 2])
    assert 0 <= node_seed(range(100)) < 2**63
