"""What a run changes in a dataset folder: the dataset as committed, the run's plan against it, its version entry.

The dataset is what manifest.json lists; writing the manifest is a run's commit. A run ingests the whole corpus and
then works only on the difference:

- prompts already in the dataset are left alone (their shards are neither read nor rewritten);
- new prompts are sharded among themselves and written as new shards, named by their content (layout.shard_name);
- prompts that left the corpus stay and are reported, or with `update.prune` the shards holding them are written
  again without them, under their new content's name, and the old ones removed after the commit.

A shard's members are its written images and those a filter dropped (listed in its stats): a shard whose every image
was dropped has no tar, its stats alone hold it, and it is planned, kept, pruned and named like any other.

A finished shard that the manifest does not list (left by a killed run) is reused when the plan names it — the name
is its members, so it holds exactly what the run would write — and removed after the commit otherwise.
"""

from __future__ import annotations

import dataclasses

import datetime
import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hdiff.dataset import layout
from hdiff.dataset.manifest import Corpus, Manifest, Version
from hdiff.dataset.writer import ShardStats, read_stats
from hdiff.errors import HdiffError
from hdiff.prompts import image_seed, parse_sample_key, sample_key


@dataclass(frozen=True)
class ShardJob:
    """One shard to generate: its content name, its prompts (id order), whether its tree is drawn, and each
    prompt's source row (hdiff.records.SourceRow as a dict, in the same order; empty: none recorded)."""

    name: str
    prompts: tuple[str, ...]
    dendrogram: bool = False
    sources: tuple[dict, ...] = ()


@dataclass(frozen=True)
class Rewrite:
    """A dataset shard written again without the images `drop` (written or filtered out); `new` is None when none
    remain (it is removed)."""

    old: str
    drop: frozenset[str]
    new: str | None


@dataclass
class Committed:
    """The dataset as its manifest lists it: the manifest (None before the first commit), each shard's sample keys
    in listing order, and each shard's images a filter dropped (in no tar, listed in its stats)."""

    manifest: Manifest | None
    shards: dict[str, tuple[str, ...]] = field(default_factory=dict)
    filtered: dict[str, tuple[str, ...]] = field(default_factory=dict)  # shard -> keys of its dropped images

    def members(self, shard: str) -> list[str]:
        """Every image key of `shard`: written, then filtered out."""
        return [*self.shards[shard], *self.filtered.get(shard, ())]

    @property
    def versions(self) -> list[Version]:
        return list(self.manifest.versions) if self.manifest is not None else []

    @functools.cached_property
    def prompt_ids(self) -> set[str]:
        """Every prompt id the dataset holds (read once: planning asks for it twice)."""
        held = {parse_sample_key(key)[0] for keys in self.shards.values() for key in keys}
        return held | {parse_sample_key(key)[0] for keys in self.filtered.values() for key in keys}  # not made again


@dataclass
class RunPlan:
    """What one run does: shards to generate, shards to rewrite, and what it found in the corpus."""

    shards: list[ShardJob]
    rewrites: list[Rewrite]
    corpus: Corpus
    expected_keys: frozenset[str]  # every sample the corpus asks for
    not_in_corpus: int  # dataset prompts the corpus no longer has, kept
    removed: int  # dataset prompts the corpus no longer has, pruned by this run

    def final_shards(self, committed: Committed) -> set[str]:
        """The dataset's shards once this run commits."""
        gone = {rewrite.old for rewrite in self.rewrites}
        return (set(committed.shards) - gone) | {r.new for r in self.rewrites if r.new} | {s.name for s in self.shards}


def read_committed(out_dir: str | Path) -> Committed:
    """The dataset in `out_dir` as its manifest lists it; HdiffError when the manifest or a listed shard is damaged
    (a run does not build on a dataset it cannot read)."""
    path = layout.manifest_path(out_dir)
    if not path.is_file():
        return Committed(None)
    try:
        manifest = Manifest.read(out_dir)
    except (OSError, ValueError) as exc:  # a pydantic ValidationError is a ValueError
        raise HdiffError(f"{path} is unreadable ({type(exc).__name__}); restore it, or delete the folder to "
                         "rebuild") from None
    shards, filtered = {}, {}
    for name in (row.shard for row in manifest.shards):
        stats = read_stats(out_dir, name)
        if stats is None or (stats.has_tar and not layout.tar_path(out_dir, name).is_file()):
            raise HdiffError(f"{out_dir}: the dataset's shard {name} is missing or damaged; see `hdiff verify "
                             f"{out_dir}`")
        shards[name] = tuple(stats.keys)
        if stats.dropped:
            filtered[name] = tuple(d.key for d in stats.dropped)
    return Committed(manifest, shards, filtered)


def sample_members(prompt_ids: list[str], copies: int, base_seed: int) -> list[tuple[str, int]]:
    """(sample key, seed) of every image of the prompts."""
    return [(sample_key(pid, c), image_seed(pid, c, base_seed)) for pid in prompt_ids for c in range(copies)]


def key_members(keys: list[str], base_seed: int) -> list[tuple[str, int]]:
    """(sample key, seed) of stored samples, the seed by the seed rule."""
    return [(key, image_seed(*parse_sample_key(key), base_seed)) for key in keys]


def corpus_fingerprint(prompt_ids: Iterable[str], *, ordered: bool = False) -> str:
    """sha256 of the ingested corpus as a set of prompt ids: the same prompts give the same fingerprint.
    `ordered`: the ids come in id order already (read from a store, not held)."""
    digest = hashlib.sha256()
    for pid in prompt_ids if ordered else sorted(prompt_ids):
        digest.update(f"{pid}\n".encode())
    return digest.hexdigest()


def plan_run(committed: Committed, corpus_ids: Iterable[str], fresh: list, parts: list[list[int]], *, copies: int,
             base_seed: int, prune: bool, corpus: Corpus) -> RunPlan:
    """The plan against `committed` for the ingested corpus, given as its prompt ids.

    `parts` partitions `fresh`, the prompts not yet in the dataset (`new_prompts`), into shards (lists of indices
    into `fresh`); each becomes a ShardJob named by its members.
    """
    have = committed.prompt_ids
    shards = []
    for rows in parts:
        members = [fresh[r] for r in rows]
        name = layout.shard_name(sample_members([p.id for p in members], copies, base_seed))
        shards.append(ShardJob(name, tuple(p.text for p in members)))
    if shards and not committed.shards:
        shards[0] = ShardJob(shards[0].name, shards[0].prompts, dendrogram=True)

    wanted = set(corpus_ids)
    left = have - wanted
    rewrites = []
    if prune and left:
        for name in sorted(committed.shards):
            members = committed.members(name)
            drop = frozenset(key for key in members if parse_sample_key(key)[0] in left)
            if drop:
                kept = [key for key in members if key not in drop]
                rewrites.append(Rewrite(name, drop, layout.shard_name(key_members(kept, base_seed)) if kept else None))
    expected = frozenset(key for key, _ in sample_members(sorted(wanted), copies, base_seed))
    return RunPlan(shards, rewrites, corpus, expected, not_in_corpus=0 if prune else len(left),
                   removed=len(left) if prune else 0)


def new_prompts(committed: Committed, prompts: Iterable) -> list:
    """The prompts not in the dataset yet, in the order given (`prompts` is read once: a store's chunks may pass)."""
    have = committed.prompt_ids
    return [p for p in prompts if p.id not in have]


def version_entry(committed: Committed, plan: RunPlan, final: dict[str, ShardStats], wall_seconds: float) -> Version:
    """The version a run that changed the dataset appends: when, from what corpus, which shards came and went, the
    dataset's size after it (images written, and filtered out) and the compute of the run (the shards it generated,
    images filtered out included, not those it rewrote)."""
    generated = [final[s.name] for s in plan.shards]
    filtered = sum(sum((s.filtered or {}).values()) for s in final.values())
    dropped_now = any(s.filtered for s in generated)  # this run's filter dropped images
    before = set(committed.shards)
    return Version(
        version=len(committed.versions) + 1,
        created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        corpus=plan.corpus,
        shards_added=sorted(set(final) - before),
        shards_removed=sorted(before - set(final)),
        prompts_added=sum(len(s.prompts) for s in plan.shards),
        prompts_removed=plan.removed,
        prompts_not_in_corpus=plan.not_in_corpus,
        samples=sum(s.samples for s in final.values()),
        unet_rows=sum(s.unet_rows for s in generated),
        standard_rows=sum(s.standard_rows for s in generated),
        device_seconds=sum(s.device_seconds for s in generated),
        wall_seconds=wall_seconds,
        filtered=filtered or None,
        filtered_unet_rows=sum(s.filtered_unet_rows or 0.0 for s in generated) if dropped_now else None,
        filtered_standard_rows=sum(s.filtered_standard_rows or 0 for s in generated) if dropped_now else None,
    )


def coverage_problems(final: dict[str, ShardStats], expected: frozenset[str], keep_extra: bool) -> list[str]:
    """Disagreements between the shards' samples and the corpus: a sample in two shards, a corpus sample missing,
    and (when the dataset may not keep prompts the corpus dropped) a sample the corpus does not ask for."""
    seen: dict[str, str] = {}
    problems = []
    for name in sorted(final):
        for key in [*final[name].keys, *(d.key for d in final[name].dropped or ())]:  # a filtered image is covered
            if key in seen:
                problems.append(f"sample {key} is in both {seen[key]} and {name}")
            seen.setdefault(key, name)
    missing = sorted(expected - seen.keys())
    if missing:
        problems.append(f"{len(missing)} sample(s) of the corpus are in no shard, e.g. {missing[0]}")
    extra = sorted(seen.keys() - expected)
    if extra and not keep_extra:
        problems.append(f"{len(extra)} sample(s) are not in the corpus, e.g. {extra[0]}")
    return problems


CPU_WAIT_NOTE = 0.02  # the build's summary notes the device's wait for the CPU above this share of its time


@dataclass(frozen=True)
class DeviceTime:
    """The devices' time in a run's generation: held (sampling and decoding), waited for the CPU (idle before a
    pack took a device, or blocked on the full writer queue) and scoring (apart from generation), with the image
    settings that the CPU was encoding."""

    format: str = "png"
    png_level: int = 0
    held_s: float = 0.0
    waited_s: float = 0.0
    scoring_s: float = 0.0

    def plus(self, held_s: float, waited_s: float, scoring_s: float = 0.0) -> DeviceTime:
        return dataclasses.replace(self, held_s=self.held_s + held_s, waited_s=self.waited_s + waited_s,
                                   scoring_s=self.scoring_s + scoring_s)

    def cpu_note(self) -> str | None:
        """One line when the CPU kept the devices waiting (over CPU_WAIT_NOTE of their time): how long, and what
        would help; None otherwise."""
        total = self.held_s + self.waited_s
        if total <= 0 or self.waited_s <= CPU_WAIT_NOTE * total:
            return None
        helps = {"png": f"a lower output_format.png_compress_level (now {self.png_level}), image_format jpg, or ",
                 "webp": "image_format jpg or png, or "}.get(self.format, "")
        return (f"the device waited {self.waited_s:.1f} s of {total:.1f} s ({100 * self.waited_s / total:.0f}%) for "
                f"the CPU to encode and write {self.format} images: {helps}more CPU cores (runner.encode_workers) "
                "would help")


@dataclass(frozen=True)
class RunReport:
    """What one run did: the version it added (None: nothing changed), the prompts it found and the shards it
    changed. Not stored: the manifest holds the dataset, this is the run's news."""

    version: int | None
    prompts_added: int
    prompts_removed: int
    prompts_not_in_corpus: int
    shards_written: int
    shards_removed: int
    device: DeviceTime | None = None  # set by the flow after the commit

    @classmethod
    def of(cls, committed: Committed, plan: RunPlan, manifest: Manifest) -> RunReport:
        """The report of `plan` run against `committed`, which left `manifest`."""
        added = len(manifest.versions) > len(committed.versions)
        return cls(version=manifest.versions[-1].version if added else None,
                   prompts_added=sum(len(s.prompts) for s in plan.shards), prompts_removed=plan.removed,
                   prompts_not_in_corpus=plan.not_in_corpus,
                   shards_written=len(plan.shards) + sum(r.new is not None for r in plan.rewrites),
                   shards_removed=len(plan.rewrites))

    def describe(self) -> str:
        """`version 2: 8 new prompt(s), ...` or `nothing changed ...`, plus prompts kept that left the corpus."""
        kept = (f"; {self.prompts_not_in_corpus} prompt(s) of the dataset are no longer in the corpus (kept; "
                "update.prune removes them)") if self.prompts_not_in_corpus else ""
        if self.version is None:
            return f"nothing changed: every corpus prompt is in the dataset{kept}"
        return (f"version {self.version}: {self.prompts_added} new prompt(s), {self.prompts_removed} removed, "
                f"{self.shards_written} shard(s) written, {self.shards_removed} replaced or removed{kept}")


@dataclass(frozen=True)
class BuildResult:
    """A build's outcome: the dataset as committed, and what this run changed in it."""

    manifest: Manifest
    run: RunReport
