"""Semantic shards: a bounded, coherent, deterministic partition that does not depend on input order."""

import re

import numpy as np
import pytest

from hdiff.dataset.layout import shard_name
from hdiff.dataset.shard import semantic_shards
from hdiff.errors import HdiffError


def clustered(n_clusters: int = 20, per_cluster: int = 250, dim: int = 384, seed: int = 0):
    """Unit vectors around `n_clusters` random centres; ids are hashes in no particular relation to the clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    labels = np.repeat(np.arange(n_clusters), per_cluster)
    x = centres[labels] + 0.3 * rng.standard_normal((len(labels), dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"{v:016x}" for v in rng.choice(2**60, len(labels), replace=False)]
    return x, ids, labels


@pytest.fixture(scope="module")
def data():
    return clustered()


def test_partition_is_bounded_complete_and_canonical(data):
    x, ids, _ = data
    shards = semantic_shards(x, ids, 32, 256)
    assert sorted(i for shard in shards for i in shard) == list(range(len(ids)))
    assert all(32 <= len(shard) <= 256 for shard in shards)
    for shard in shards:
        assert [ids[i] for i in shard] == sorted(ids[i] for i in shard)  # rows in id order
    firsts = [ids[shard[0]] for shard in shards]
    assert firsts == sorted(firsts)  # shards ordered by their smallest id


def test_shards_are_semantically_coherent(data):
    x, ids, labels = data
    shards = semantic_shards(x, ids, 32, 256)
    purity = sum(np.bincount(labels[shard]).max() for shard in shards) / len(ids)
    assert purity > 0.95


def test_same_input_in_any_order_gives_the_same_shards(data):
    x, ids, _ = data
    as_ids = lambda shards, ids: [[ids[i] for i in shard] for shard in shards]  # noqa: E731
    first = as_ids(semantic_shards(x, ids, 32, 256), ids)
    assert as_ids(semantic_shards(x, ids, 32, 256), ids) == first
    perm = np.random.default_rng(1).permutation(len(ids))
    shuffled_ids = [ids[i] for i in perm]
    assert as_ids(semantic_shards(x[perm], shuffled_ids, 32, 256), shuffled_ids) == first


@pytest.mark.parametrize("n, min_size, max_size", [(1000, 10, 20), (999, 16, 48), (513, 128, 512), (257, 1, 2)])
def test_sizes_stay_in_bounds_on_unstructured_data(n, min_size, max_size):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    shards = semantic_shards(x, [str(i) for i in range(n)], min_size, max_size)
    assert sorted(i for shard in shards for i in shard) == list(range(n))
    assert all(min_size <= len(shard) <= max_size for shard in shards)


def test_small_inputs_make_one_shard_or_none():
    x = np.eye(5, dtype=np.float32)
    assert semantic_shards(x, list("edcba"), 32, 256) == [[4, 3, 2, 1, 0]]  # fewer than min_size: one shard
    assert semantic_shards(x[:0], [], 32, 256) == []


@pytest.mark.parametrize("args, message", [
    ((np.zeros((3, 4)), ["a", "b"], 1, 2), r"one embedding row per id; got \(3, 4\) for 2 ids"),
    ((np.zeros((3, 4)), ["a", "b", "a"], 1, 2), r"unique ids; 'a' appears more than once"),
    ((np.full((3, 4), np.nan), ["a", "b", "c"], 1, 2), "finite embeddings"),
    ((np.zeros((3, 4)), ["a", "b", "c"], 32, 40), r"max_size >= 2 × min_size; got 32, 40"),
])
def test_bad_input(args, message):
    with pytest.raises(HdiffError, match=message):
        semantic_shards(*args)


def test_shard_name_is_its_members_in_any_order():
    members = [("aa-000", 1), ("bb-000", 2), ("cc-000", 3)]
    name = shard_name(members)
    assert re.fullmatch(r"shard-[0-9a-f]{16}", name)
    assert shard_name(members[::-1]) == name
    assert shard_name(members[:2]) != name  # one prompt fewer
    assert shard_name([("aa-000", 1), ("bb-000", 2), ("cc-000", 4)]) != name  # another seed
    assert shard_name([("aa-000", 1), ("bb-000", 2), ("cc-001", 3)]) != name  # another copy
