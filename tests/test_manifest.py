"""The typed manifest (hdiff.dataset.manifest): it reads and writes manifest.json byte for byte, and its totals are
one aggregation of the shards' stats that the commit writes and verify recomputes, field by field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hdiff.dataset import layout
from hdiff.dataset.ingest import IngestReport
from hdiff.dataset.manifest import (Corpus, Counts, Hardware, Manifest, OracleAccuracy, Totals, Version, counts_of,
                                    manifest_for, totals_of)
from hdiff.dataset.verify import manifest_problems
from hdiff.dataset.writer import ShardStats

HARDWARE = Hardware(cpu="Test CPU", cpu_count=2, platform="Linux", python="3.11.7", torch=None, cuda=None, gpu=None,
                    gpu_count=0)


def stats(name: str, samples: int = 2, **compute) -> ShardStats:
    """A shard's stats with `samples` keys named after it; `compute` overrides the figures."""
    figures = {"sha256": "0" * 64, "tar_bytes": 1024 * samples, "image_format": "png", "unet_rows": 1.5 * samples,
               "standard_rows": 4 * samples, "wall_seconds": 0.25 * samples, "device_seconds": 0.125 * samples,
               "taus": [0.5], "device": "cpu", **compute}
    return ShardStats(shard=name, samples=samples, keys=[f"{name}-{i:03d}" for i in range(samples)], **figures)


def version(number: int, shards: list[ShardStats], wall_seconds: float = 1.0) -> Version:
    corpus = Corpus(source="test", revision=None, prompts=sum(s.samples for s in shards), fingerprint="f" * 64)
    return Version(version=number, created_utc="2026-12-01T00:00:00+00:00", corpus=corpus,
                   shards_added=sorted(s.shard for s in shards) if number == 1 else [], shards_removed=[],
                   prompts_added=sum(s.samples for s in shards), prompts_removed=0, prompts_not_in_corpus=0,
                   samples=sum(s.samples for s in shards), unet_rows=sum(s.unet_rows for s in shards),
                   standard_rows=sum(s.standard_rows for s in shards),
                   device_seconds=sum(s.device_seconds for s in shards), wall_seconds=wall_seconds)


def tiny_manifest(shards: list[ShardStats], versions: int = 1) -> Manifest:
    """A manifest of `shards` whose history is `versions` runs, the first of which wrote every shard."""
    prompts = sum(s.samples for s in shards)
    return manifest_for(config={"name": "tiny"}, ingest=IngestReport(read=prompts, kept=prompts),
                        shards=shards, versions=[version(n, shards) for n in range(1, versions + 1)],
                        hardware=HARDWARE, created_utc="2026-12-01T00:00:00+00:00")


def old_serializer(manifest: dict) -> bytes:
    """How finalize.write_manifest wrote a manifest dict before the manifest was typed."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def demo_manifest() -> dict:
    """A manifest.json as a shapes build wrote it (figures of a real demo build), with a model companion, an oracle
    that scored some attributes only, ingest drops and non-ASCII text."""
    shard = {"device": "cpu", "device_seconds": 94.70872662199963, "image_format": "png", "samples": 48,
             "sha256": "bd60ae8438b60476e15b16abc2ae2cc6ef463913585c5dd4af268a4305097f6b",
             "shard": "shard-c0c75b7ccf36861a", "standard_rows": 3840, "tar_bytes": 215040, "taus": [0.1],
             "unet_rows": 2588.0, "wall_seconds": 98.63302134499963, "worker": "vm:4633"}
    rewritten = {**shard, "device": None, "worker": None, "shard": "shard-00a1", "taus": [], "unet_rows": 0.0,
                 "device_seconds": 0.0, "wall_seconds": 0.5}
    corpus = {"fingerprint": "2adaf838039865f7b6d2b008f8f9d0d576a8884d681b146bb176dda4ddcd0525", "prompts": 48,
              "revision": "sha256:7ae4e10cf47fc580dd686bc0ada2fc24b68ff3959da6aba97d66b72168448693",
              "source": "data/demo_prompts.jsonl"}
    return {
        "config": {"name": "shapes-démo ✓", "ingest": {"limit": 48, "near_dedupe": None},
                   "source": {"keep_columns": []}, "generation": {"tau": None, "copy_max_shared": 0.25}},
        "counts": {"image_formats": ["png"], "samples": 96, "shards": 2, "taus": [0.1]},
        "created_utc": "2026-12-04T16:26:12+00:00", "format": 2,
        "hardware": {"cpu": "AMD EPYC", "cpu_count": 2, "cuda": "12.4", "gpu": "NVIDIA H200", "gpu_count": 1,
                     "platform": "Linux-6.18.44-x86_64-with-glibc2.36", "python": "3.11.7", "torch": "2.13.0"},
        "hdiff_version": "0.1.0",
        "ingest": {"dropped": {"duplicate": 3, "sampled_out": 144}, "kept": 48, "read": 195, "truncated": 1},
        "provenance": {
            "source": {"dataset": "someone/prompts", "hub": True, "name": "en", "split": "train",
                       "revision": "0123abcd"},
            "model": {"id": "kandinsky-community/kandinsky-2-2-decoder", "pipeline_class": "KandinskyV22Pipeline",
                      "revision": "4567ef"},
            "prior": {"id": "kandinsky-community/kandinsky-2-2-prior", "revision": None},
        },
        "shards": [shard, rewritten],
        "totals": {"device_seconds": 94.70872662199963, "percent_saved": 32.604166666666664, "samples": 96,
                   "shard_wall_seconds": 99.13302134499963, "standard_rows": 7680, "tar_bytes": 430080,
                   "unet_rows": 2588.0, "wall_seconds": 108.44608295999979,
                   "oracle_accuracy": {"all": 0.9583333333333334, "n": 47, "shape": 1.0, "color": 0.9375,
                                       "unscored": 1}},
        "updated_utc": "2026-12-04T16:26:12+00:00",
        "versions": [{"corpus": corpus, "created_utc": "2026-12-04T16:26:12+00:00", "device_seconds": 94.70872662199963,
                      "prompts_added": 48, "prompts_not_in_corpus": 0, "prompts_removed": 0, "samples": 48,
                      "shards_added": ["shard-c0c75b7ccf36861a"], "shards_removed": [], "standard_rows": 3840,
                      "unet_rows": 2588.0, "version": 1, "wall_seconds": 108.44608295999979}],
    }


def test_a_manifest_round_trips_byte_for_byte(tmp_path):
    written = old_serializer(demo_manifest())
    layout.manifest_path(tmp_path).write_bytes(written)
    manifest = Manifest.read(tmp_path)
    assert manifest.to_json() == written
    assert manifest.totals.oracle_accuracy.color == 0.9375 and manifest.totals.oracle_accuracy.size is None
    assert manifest.provenance["prior"].pipeline_class is None and manifest.provenance["source"].hub
    manifest.write(tmp_path / "again")
    assert layout.manifest_path(tmp_path / "again").read_bytes() == written


def test_a_committed_manifest_round_trips(tmp_path):
    manifest = tiny_manifest([stats("shard-a"), stats("shard-b", 3)], versions=2)
    manifest.write(tmp_path)
    assert Manifest.read(tmp_path) == manifest
    assert Manifest.read(tmp_path).to_json() == layout.manifest_path(tmp_path).read_bytes() == manifest.to_json()
    assert "oracle_accuracy" not in json.loads(manifest.to_json())["totals"]  # absent, not null, without an oracle


def test_a_manifest_with_an_unknown_field_is_refused(tmp_path):
    data = demo_manifest()
    data["totals"]["gpu_hours"] = 1.0
    layout.manifest_path(tmp_path).write_bytes(old_serializer(data))
    with pytest.raises(ValueError, match="totals.gpu_hours"):
        Manifest.read(tmp_path)


SHARDS = [stats("shard-a", 2), stats("shard-b", 3, unet_rows=2.0, taus=[0.25, 0.5]),
          stats("shard-c", 1, image_format="jpg", standard_rows=0, unet_rows=0.0, taus=[])]


def test_totals_and_counts_aggregate_the_shards():
    versions = [version(1, SHARDS, wall_seconds=2.5), version(2, SHARDS, wall_seconds=0.75)]
    oracle = OracleAccuracy(all=1.0, n=6, unscored=0)
    assert totals_of(SHARDS, versions, oracle) == Totals(
        samples=6, unet_rows=3.0 + 2.0, standard_rows=8 + 12, percent_saved=100 * (1 - 5 / 20), wall_seconds=3.25,
        shard_wall_seconds=0.25 * 6, device_seconds=0.125 * 6, tar_bytes=1024 * 6, oracle_accuracy=oracle)
    assert counts_of(SHARDS) == Counts(shards=3, samples=6, image_formats=["jpg", "png"], taus=[0.25, 0.5])
    assert totals_of([], []).percent_saved == 0.0


def test_verify_recomputes_the_totals_and_names_each_differing_field(tmp_path):
    manifest = tiny_manifest(SHARDS)
    by_name = {s.shard: s for s in SHARDS}
    manifest.write(tmp_path)
    assert manifest_problems(tmp_path, by_name, None, samples_read=6) == []

    manifest.totals.tar_bytes += 512
    manifest.totals.wall_seconds = 9.0
    manifest.counts.taus = [0.5]
    manifest.write(tmp_path)
    assert manifest_problems(tmp_path, by_name, None, samples_read=6) == [
        "manifest.json: counts.taus=[0.5], the shard stats give [0.25, 0.5]",
        "manifest.json: totals.wall_seconds=9.0, the versions give 1.0",
        "manifest.json: totals.tar_bytes=6656, the shard stats give 6144",
    ]


def test_verify_names_a_manifest_that_does_not_parse(tmp_path):
    layout.manifest_path(tmp_path).write_text(json.dumps({"shards": 2, "images": 4}))
    (problem,) = manifest_problems(tmp_path, {}, None, samples_read=0)
    assert problem.startswith("manifest.json: not a manifest: ") and "totals: Field required" in problem
    layout.manifest_path(tmp_path).write_text("{")
    assert manifest_problems(tmp_path, {}, None, samples_read=0)[0].startswith("manifest.json: unreadable: ")
    assert manifest_problems(Path(tmp_path / "none"), {}, None, samples_read=0) == ["manifest.json: missing"]
