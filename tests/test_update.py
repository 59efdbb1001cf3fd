"""A run's plan against a dataset (hdiff.dataset.update), on hand-built datasets: only new prompts are sharded,
names are content, pruning rewrites only the shards it touches, and the coverage check finds what a bad plan
would leave."""

from __future__ import annotations

import pytest
from test_manifest import stats as shard_stats, tiny_manifest

from hdiff.dataset import layout
from hdiff.dataset.ingest import Prompt
from hdiff.dataset.manifest import Corpus
from hdiff.dataset.update import (Committed, RunPlan, corpus_fingerprint, coverage_problems, key_members,
                                  new_prompts, plan_run, sample_members, version_entry)
from hdiff.dataset.writer import ShardStats
from hdiff.prompts import prompt_id, sample_key

SEED = 3


def prompts(*texts: str) -> list[Prompt]:
    return [Prompt(prompt_id(t), t) for t in texts]


def committed_with(*shards: list[str], copies: int = 1) -> Committed:
    """A dataset whose shards hold these prompts (texts), named as a run would name them."""
    found = {}
    for texts in shards:
        members = sample_members([prompt_id(t) for t in texts], copies, SEED)
        found[layout.shard_name(members)] = tuple(key for key, _ in members)
    return Committed(tiny_manifest([shard_stats(name, len(keys)) for name, keys in found.items()]), found)


def plan(committed: Committed, corpus: list[Prompt], parts=None, *, copies: int = 1, prune: bool = False) -> RunPlan:
    fresh = new_prompts(committed, corpus)
    return plan_run(committed, [p.id for p in corpus], fresh, parts if parts is not None else ([list(range(len(fresh)))] if fresh
                                                                                 else []),
                    copies=copies, base_seed=SEED, prune=prune,
                    corpus=Corpus(source="test", revision=None, prompts=len(corpus), fingerprint="f"))


def test_a_grown_corpus_plans_only_its_new_prompts():
    dataset = committed_with(["a", "b"], ["c", "d"])
    run = plan(dataset, prompts("a", "b", "c", "d", "e", "f"))
    assert [job.prompts for job in run.shards] == [("e", "f")]
    assert run.rewrites == [] and run.not_in_corpus == 0 and run.removed == 0
    assert run.final_shards(dataset) == set(dataset.shards) | {run.shards[0].name}
    assert not run.shards[0].dendrogram  # the tree of the first version's first shard is already drawn


def test_an_unchanged_corpus_plans_nothing_and_a_first_run_draws_its_tree():
    dataset = committed_with(["a", "b"])
    assert plan(dataset, prompts("b", "a")).shards == []
    first = plan(Committed(None), prompts("a", "b"))
    assert first.shards[0].dendrogram


def test_a_new_shard_is_named_by_its_members_whatever_the_corpus_order():
    one = plan(Committed(None), prompts("x", "y", "z"))
    other = plan(Committed(None), prompts("z", "x", "y"))
    assert one.shards[0].name == other.shards[0].name == layout.shard_name(
        sample_members([prompt_id(t) for t in "xyz"], 1, SEED))
    assert plan(Committed(None), prompts("x", "y", "z"), copies=2).shards[0].name != one.shards[0].name


def test_prompts_that_left_the_corpus_are_kept_unless_pruned():
    dataset = committed_with(["a", "b"], ["c", "d"], copies=2)
    kept = plan(dataset, prompts("a", "b", "d"), copies=2)
    assert kept.rewrites == [] and kept.not_in_corpus == 1 and kept.removed == 0

    pruned = plan(dataset, prompts("a", "b", "d"), copies=2, prune=True)
    assert pruned.removed == 1 and pruned.not_in_corpus == 0
    (rewrite,) = pruned.rewrites  # only the shard holding "c"
    assert rewrite.old == committed_with(["c", "d"], copies=2).shards.popitem()[0]
    assert rewrite.drop == {sample_key(prompt_id("c"), 0), sample_key(prompt_id("c"), 1)}
    assert rewrite.new == layout.shard_name(sample_members([prompt_id("d")], 2, SEED))

    emptied = plan(dataset, prompts("a", "b"), copies=2, prune=True)
    assert [r.new for r in emptied.rewrites] == [None]
    assert emptied.final_shards(dataset) == set(committed_with(["a", "b"], copies=2).shards)


def test_key_members_follow_the_seed_rule():
    members = sample_members([prompt_id("a")], 3, SEED)
    assert key_members([key for key, _ in members], SEED) == members


def test_coverage_finds_duplicates_gaps_and_strangers():
    keys = [sample_key(prompt_id(t), 0) for t in "abc"]

    def stats(name: str, members: list[str]) -> ShardStats:
        return ShardStats(shard=name, samples=len(members), keys=members, sha256="0", tar_bytes=0, image_format="png",
                          unet_rows=0, standard_rows=0, wall_seconds=0, device_seconds=0)

    expected = frozenset(keys[:2])
    assert coverage_problems({"s1": stats("s1", keys[:1]), "s2": stats("s2", keys[1:2])}, expected, False) == []
    problems = coverage_problems({"s1": stats("s1", keys[:2]), "s2": stats("s2", keys[1:])}, expected, False)
    assert problems == [f"sample {keys[1]} is in both s1 and s2", f"1 sample(s) are not in the corpus, e.g. {keys[2]}"]
    assert coverage_problems({"s1": stats("s1", keys[2:])}, expected, True) == [
        f"2 sample(s) of the corpus are in no shard, e.g. {min(keys[:2])}"]


def test_a_version_counts_the_compute_of_the_shards_it_generated():
    corpus = prompts("a", "b")
    run = plan(Committed(None), corpus)
    name = run.shards[0].name
    final = {name: ShardStats(shard=name, samples=2, keys=sorted(run.expected_keys), sha256="0", tar_bytes=1,
                              image_format="png", unet_rows=5.0, standard_rows=8, wall_seconds=1, device_seconds=0.5)}
    version = version_entry(Committed(None), run, final, wall_seconds=2.0)
    assert version.version == 1 and version.shards_added == [name] and version.shards_removed == []
    counts = (version.prompts_added, version.samples, version.unet_rows, version.standard_rows)
    assert counts == (2, 2, 5, 8)
    assert corpus_fingerprint([p.id for p in corpus]) == corpus_fingerprint([p.id for p in corpus[::-1]])


@pytest.mark.parametrize("key", ["abc", "abc-", "-001", "abc-x1"])
def test_a_malformed_sample_key_is_refused(key):
    from hdiff.errors import HdiffError
    from hdiff.prompts import parse_sample_key

    with pytest.raises(HdiffError, match="is not a sample key"):
        parse_sample_key(key)
