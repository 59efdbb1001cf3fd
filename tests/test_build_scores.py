"""Scores and filters in a build: every record scored (json and parquet), filtered images not written but counted by
rule in the stats, manifest and card, verify content, a re-run regenerates nothing, and the loader's `where`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hdiff import cli
from hdiff.data import image_dataset
from hdiff.dataset import layout
from hdiff.dataset.writer import read_stats
from hdiff.shapes.prompts import clustered_set
from tiny_models import tiny_shapes_model

UNREADABLE = [f"a photo of a cat number {i}" for i in range(8)]  # the oracle reads nothing here: NaN, kept


@pytest.fixture(scope="module", autouse=True)
def prefect_api():
    import flows.build_dataset  # noqa: F401
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory, one_torch_thread) -> tuple[Path, Path]:
    """A one-shard build of the tiny random-weight shapes model scored by the oracle, `oracle_min: 50` dropping the
    8 readable prompts (the random model draws no right scene) and keeping the 8 it cannot read."""
    root = tmp_path_factory.mktemp("scored")
    readable = [p for p, _ in clustered_set(8, seed=5)]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in readable + UNREADABLE))
    config = {"name": "scored", "output": str(root / "out"), "source": {"path_or_id": str(root / "corpus.jsonl")},
              "sharding": {"min_size": 8, "max_size": 16}, "embedding": {"cache_dir": str(root / "cache")},
              "model": {"id": tiny_shapes_model(root / "model"), "device": "cpu"},
              "scores": ["oracle"], "filter": {"oracle_min": 50}}
    path = root / "build.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["build", str(path)]) == 0
    return path, root / "out"


def test_every_written_image_is_scored_and_the_filtered_ones_are_counted(built):
    _, out = built
    manifest = json.loads(layout.manifest_path(out).read_text())
    (shard,) = [row["shard"] for row in manifest["shards"]]
    stats = read_stats(out, shard)
    assert stats.samples == 8 and stats.filtered == {"oracle_min": 8} and stats.scoring_seconds >= 0
    assert [d.reason for d in stats.dropped] == ["oracle_min"] * 8 and {d.score for d in stats.dropped} == {0.0}
    assert manifest["totals"]["filtered"] == {"oracle_min": 8} and manifest["totals"]["samples"] == 8
    assert manifest["scorers"] == {"oracle": {"scorer": "oracle", "id": "hdiff.oracle", "revision": None}}
    assert manifest["versions"][0]["scores"] == {}  # the kept images are the ones the oracle cannot judge
    table = pd.read_parquet(out / "data" / f"{shard}.parquet")
    assert "scores.oracle" in table.columns and table["scores.oracle"].isna().all()
    samples = list(image_dataset(str(out), shuffle_shards=False, shuffle_buffer=0, decode="pil"))
    assert sorted(prompt for _, prompt, _ in samples) == sorted(UNREADABLE)
    assert all(record["scores"] == {"oracle": None} for _, _, record in samples)
    card = layout.card_path(out).read_text()
    assert "## Scores" in card and "`oracle_min: 50`" in card and "oracle_min: 8" in card


def test_a_filtered_build_verifies_and_a_rerun_regenerates_nothing(built, capsys):
    config, out = built
    assert cli.main(["verify", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in (out / "data").glob("*.tar")}
    assert cli.main(["build", str(config)]) == 0
    assert {p.name: p.read_bytes() for p in (out / "data").glob("*.tar")} == before
    assert len(json.loads(layout.manifest_path(out).read_text())["versions"]) == 1
    capsys.readouterr()
    changed = yaml.safe_load(config.read_text())
    changed["filter"] = {"oracle_min": 10}
    config.with_name("changed.yaml").write_text(yaml.safe_dump(changed))
    assert cli.main(["build", str(config.with_name("changed.yaml"))]) == 2
    assert "filter {'oracle_min': 50} → {'oracle_min': 10}" in capsys.readouterr().err


def test_loaders_take_a_predicate_over_the_record(built):
    _, out = built
    kept = list(image_dataset(str(out), shuffle_shards=False, shuffle_buffer=0, decode="pil",
                              where=lambda r: r["prompt"].endswith(("1", "2"))))
    assert sorted(p for _, p, _ in kept) == ["a photo of a cat number 1", "a photo of a cat number 2"]
