"""The back half of the build: shard writer, verifier and finalizer on tiny random images, read back with real
webdataset and real datasets."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from hdiff.dataset import layout
from hdiff.dataset.finalize import (prefect_summary_markdown, shard_table_rows, write_dataset_card, write_manifest)
from hdiff.dataset.verify import run_verify, verify_build
from hdiff.dataset.writer import Sample, clean_partials, shard_is_complete, write_shard
from hdiff.errors import HdiffError
from hdiff.files import partial_path

SHARDS, PER_SHARD, SIZE = 3, 5, 8
HARDWARE = {"cpu": "test cpu", "cpu_count": 2, "torch": None, "gpu": None, "gpu_count": 0}


def fake_record(prompt: str, index: int) -> dict:
    """A valid ImageRecord for a 5-image shard whose first 2 of 4 evaluations were shared by all five."""
    return {
        "prompt": prompt, "prompt_id": hashlib.sha256(prompt.encode()).hexdigest()[:16], "seed": index,
        "model": "test/tiny", "scheduler": "ddim", "steps": 4, "evaluations": 4, "guidance_scale": 5.0, "tau": 0.5,
        "schedule": "linear", "height": SIZE, "width": SIZE,
        "cluster_path": [{"node": 2 * PER_SHARD - 2, "size": PER_SHARD, "from_step": 0},
                         {"node": index % PER_SHARD, "size": 1, "from_step": 2}],
        "split_evaluation": 2, "shared_evaluations": 2, "unet_rows": 2 * 2 / PER_SHARD + 2 * 2, "standard_unet_rows": 8,
    }


def fake_samples(shard: int) -> list[Sample]:
    rng = np.random.default_rng(shard)
    samples = []
    for i in range(PER_SHARD):
        prompt = f"a small red square, number {shard}-{i} ✓"
        image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)  # (H, W, 3)
        samples.append(Sample(f"s{shard}-{i:03d}", image, prompt, fake_record(prompt, shard * PER_SHARD + i)))
    return samples


def build(out: Path, image_format: str = "png") -> dict:
    stats = [write_shard(out, layout.shard_name(s), fake_samples(s), image_format=image_format)
             for s in range(SHARDS)]
    manifest = write_manifest(out, config={"name": "tiny-test", "seed": 0}, wall_seconds=1.5, hardware=HARDWARE,
                              ingest_report={"read": 20, "kept": 15, "dropped": {"empty": 2, "duplicate": 3}},
                              shard_stats=stats)
    write_dataset_card(out, manifest)
    return manifest


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build") / "out"
    build(out)
    return out


@pytest.fixture
def copy(built, tmp_path) -> Path:
    """A private copy of the built folder, for tests that damage it."""
    return Path(shutil.copytree(built, tmp_path / "out"))


def rewrite_tar(path: Path, change) -> None:
    """Rewrite a tar member by member; `change(name, data)` returns new bytes, or None to drop the member."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            if (data := change(member.name, data)) is not None:
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))


def test_a_clean_build_verifies(built, capsys):
    assert verify_build(built) == []
    assert run_verify(built) == 0
    assert "ok (15 samples in 3 shards)" in capsys.readouterr().out
    assert sorted(p.name for p in (built / "data").iterdir()) == [f"shard-0000{i}.tar" for i in range(SHARDS)]
    assert all(shard_is_complete(built, layout.shard_name(s)) for s in range(SHARDS))


def test_tars_are_byte_reproducible(built, tmp_path):
    build(tmp_path / "again")
    for shard in range(SHARDS):
        name = layout.shard_name(shard)
        assert layout.tar_path(tmp_path / "again", name).read_bytes() == layout.tar_path(built, name).read_bytes()


def test_tar_members_have_fixed_metadata(built):
    with tarfile.open(layout.tar_path(built, "shard-00000")) as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:3]] == ["s0-000.json", "s0-000.png", "s0-000.txt"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "hdiff", 0o444)}


@pytest.mark.parametrize("image_format", ["jpg", "webp"])
def test_lossy_formats_verify(tmp_path, image_format):
    build(tmp_path, image_format)
    assert verify_build(tmp_path) == []
    with tarfile.open(layout.tar_path(tmp_path, "shard-00001")) as tar:
        assert f"s1-000.{image_format}" in tar.getnames()


def test_datasets_and_the_cards_snippets_read_every_sample(built, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache-default")
    ds = datasets.load_dataset("webdataset", data_files={"train": str(built / "data" / "*.tar")}, split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == SHARDS * PER_SHARD
    assert {"png", "txt", "json"} <= set(ds.column_names)
    for row in ds:
        assert row["png"].size == (SIZE, SIZE)
        assert row["txt"] == row["json"]["prompt"]
        assert row["json"]["key"] == row["__key__"]

    monkeypatch.chdir(built)  # every python block of the card runs as written, from the dataset folder
    card = (built / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(blocks) == 3
    for block in blocks:
        scope: dict = {}
        exec(block, scope)
        if "records" in scope:  # hdiff's loader: a batch
            assert tuple(scope["images"].shape[1:]) == (3, SIZE, SIZE)
            assert scope["prompts"][0] == scope["records"][0]["prompt"]
        else:
            assert scope["image"].size == (SIZE, SIZE) and scope["prompt"] == scope["record"]["prompt"]


def test_card_front_matter_points_the_viewer_at_the_tars(built):
    card = (built / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["tags"] == ["synthetic", "hdiff"] and header["task_categories"] == ["text-to-image"]
    assert header["pretty_name"] == "tiny-test" and header["license"] == "other"
    assert header["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.tar"}]}]
    assert "grid.png" not in card


def test_manifest_totals_and_artifacts(built):
    manifest = json.loads((built / "manifest.json").read_text())
    totals = manifest["totals"]
    assert totals["samples"] == 15 and totals["standard_rows"] == 15 * 8
    assert totals["unet_rows"] == pytest.approx(SHARDS * (2 * 2 + PER_SHARD * 2 * 2))
    assert totals["percent_saved"] == pytest.approx(100 * (1 - 72 / 120))
    assert manifest["ingest"]["dropped"] == {"duplicate": 3, "empty": 2}
    rows = shard_table_rows(manifest)
    assert [r["shard"] for r in rows] == ["shard-00000", "shard-00001", "shard-00002"]
    summary = prefect_summary_markdown(manifest)
    assert "40.0%" in summary and "| duplicate | 3 |" in summary


def test_verify_names_a_truncated_tar_and_a_bad_record(copy, capsys):
    truncated = layout.tar_path(copy, "shard-00001")
    truncated.write_bytes(truncated.read_bytes()[:3000])

    def break_record(name: str, data: bytes) -> bytes:
        if name != "s2-003.json":
            return data
        record = json.loads(data)
        del record["seed"]
        record["steps"] = "many"
        return json.dumps(record).encode()

    rewrite_tar(layout.tar_path(copy, "shard-00002"), break_record)
    problems = verify_build(copy)
    assert any(p.startswith("data/shard-00001.tar") and "truncated" in p for p in problems)
    bad = [p for p in problems if p.startswith("data/shard-00002.tar: s2-003:")]
    assert len(bad) == 1 and "seed" in bad[0] and "steps" in bad[0]
    assert not any("shard-00000" in p for p in problems)
    assert not shard_is_complete(copy, "shard-00001") and shard_is_complete(copy, "shard-00000")
    assert run_verify(copy) == 1
    assert "data/shard-00001.tar" in capsys.readouterr().out


def test_verify_checks_prompts_keys_pairs_and_totals(copy):
    rewrite_tar(layout.tar_path(copy, "shard-00000"),
                lambda name, data: b"another prompt" if name == "s0-001.txt" else data)
    rewrite_tar(layout.tar_path(copy, "shard-00001"), lambda name, data: None if name == "s1-004.png" else data)
    layout.stats_path(copy, "shard-00002").unlink()
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["totals"]["unet_rows"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    problems = "\n".join(verify_build(copy))
    assert "data/shard-00000.tar: s0-001: txt differs from the record's prompt" in problems
    assert "data/shard-00001.tar: s1-004: missing image" in problems
    assert "data/shard-00002.tar: has no stats file" in problems
    assert "manifest.json: totals.unet_rows" in problems


def test_a_leftover_partial_is_reported_and_cleaned(copy):
    leftover = partial_path(layout.tar_path(copy, "shard-00003"))
    leftover.write_bytes(b"half a tar")
    assert layout.tar_shards(copy) == ["shard-00000", "shard-00001", "shard-00002"]
    problems = verify_build(copy)
    assert problems == [f"data/{leftover.name}: leftover partial file of an interrupted write"]
    assert clean_partials(copy) == [leftover]
    assert verify_build(copy) == []


def test_rewriting_a_shard_replaces_it_whole(copy):
    layout.tar_path(copy, "shard-00001").write_bytes(b"garbage")
    assert not shard_is_complete(copy, "shard-00001")
    write_shard(copy, "shard-00001", fake_samples(1))
    assert shard_is_complete(copy, "shard-00001") and verify_build(copy) == []


@pytest.mark.parametrize(("key", "message"), [("a.b", "no dots"), ("", "no dots"), ("x" * 91, "longer")])
def test_bad_keys_are_refused(tmp_path, key, message):
    sample = fake_samples(0)[0]
    with pytest.raises(HdiffError, match=message):
        write_shard(tmp_path, "shard-00000", [Sample(key, sample.image, sample.prompt, sample.record)])
    assert not layout.tar_path(tmp_path, "shard-00000").exists()
    assert layout.partial_files(tmp_path) == [] and layout.stats_shards(tmp_path) == []


def test_bad_samples_are_refused(tmp_path):
    good = fake_samples(0)[0]
    cases = [
        (Sample("k", good.image, "other prompt", good.record), "prompt differs"),
        (Sample("k", good.image, good.prompt, {**good.record, "steps": 0}), "steps"),
        (Sample("k", good.image.astype(np.float32), good.prompt, good.record), "uint8"),
    ]
    for sample, message in cases:
        with pytest.raises(HdiffError, match=message):
            write_shard(tmp_path, "shard-00000", [sample])
    with pytest.raises(HdiffError, match="twice"):
        write_shard(tmp_path, "shard-00000", [good, good])
    assert list((tmp_path / "data").iterdir()) == []
