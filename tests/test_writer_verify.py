"""The back half of the build: shard writer, verifier and finalizer on tiny random images, read back with real
webdataset and real datasets."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml

from hdiff.dataset import layout, sidecars
from hdiff.dataset.card import dataset_card, prefect_summary_markdown, shard_table_rows
from hdiff.dataset.finalize import commit_run
from hdiff.dataset.ingest import IngestReport
from hdiff.dataset.manifest import Corpus, Manifest
from hdiff.dataset.update import Committed, RunPlan, ShardJob, corpus_fingerprint, read_committed, sample_members
from hdiff.dataset.verify import run_verify, verify_build
from hdiff.dataset.tars import tar_samples
from hdiff.dataset.writer import Sample, clean_partials, file_sha256, read_stats, shard_is_complete, write_shard
from hdiff.errors import HdiffError
from hdiff.files import exclusive_lock, lock_holder, partial_path, write_atomically
from hdiff.prompts import image_seed, prompt_id, sample_key

SHARDS, PER_SHARD, SIZE, BASE_SEED = 3, 5, 8, 7


def fake_prompts(shard: int) -> list[str]:
    return [f"a small red square, number {shard}-{i} ✓" for i in range(PER_SHARD)]


def fake_record(prompt: str, index: int) -> dict:
    """A valid ImageRecord for a 5-image shard whose first 2 of 4 evaluations were shared by all five."""
    pid = prompt_id(prompt)
    return {
        "prompt": prompt, "prompt_id": pid, "seed": image_seed(pid, 0, BASE_SEED),
        "model": "test/tiny", "scheduler": "ddim", "steps": 4, "evaluations": 4, "guidance_scale": 5.0, "tau": 0.5,
        "schedule": "linear", "height": SIZE, "width": SIZE,
        "cluster_path": [{"node": 2 * PER_SHARD - 2, "size": PER_SHARD, "from_step": 0},
                         {"node": index % PER_SHARD, "size": 1, "from_step": 2}],
        "split_evaluation": 2, "shared_evaluations": 2, "unet_rows": 2 * 2 / PER_SHARD + 2 * 2, "standard_unet_rows": 8,
        "source": {"dataset": "prompts.jsonl", "revision": "sha256:0", "row": index,
                   "columns": {"category": f"squares {index % 2}", "license": "cc0-1.0"}},
    }


KEYS = [[sample_key(prompt_id(prompt), 0) for prompt in fake_prompts(s)] for s in range(SHARDS)]
NAMES = [layout.shard_name(sample_members([prompt_id(p) for p in fake_prompts(s)], 1, BASE_SEED))
         for s in range(SHARDS)]


def fake_samples(shard: int) -> list[Sample]:
    rng = np.random.default_rng(shard)
    samples = []
    for i, prompt in enumerate(fake_prompts(shard)):
        image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)  # (H, W, 3)
        samples.append(Sample(KEYS[shard][i], image, prompt, fake_record(prompt, shard * PER_SHARD + i)))
    return samples


def fake_plan(extra_prompt: str | None = None) -> RunPlan:
    """A first run's plan for the three shards; `extra_prompt`: one more corpus prompt that no shard holds."""
    prompts = [p for s in range(SHARDS) for p in fake_prompts(s)] + ([extra_prompt] if extra_prompt else [])
    ids = [prompt_id(p) for p in prompts]
    corpus = Corpus(source="test", revision=None, prompts=len(ids), fingerprint=corpus_fingerprint(ids))
    return RunPlan([ShardJob(NAMES[s], tuple(fake_prompts(s))) for s in range(SHARDS)], [], corpus=corpus,
                   expected_keys=frozenset(sample_key(pid, 0) for pid in ids), not_in_corpus=0, removed=0)


def identity(image_format: str = "png") -> dict:
    """The fake build's identity (hdiff.dataset.settings): what fake_record's images were made with."""
    return {"generation.seed": BASE_SEED, "generation.steps": 4, "generation.guidance_scale": 5.0,
            "generation.tau": 0.5, "generation.budget": None, "generation.schedule": "linear",
            "generation.height": SIZE, "generation.width": SIZE, "generation.images_per_prompt": 1,
            "output_format.image_format": image_format, "model.revision": None}


def commit(out: Path, plan: RunPlan, image_format: str = "png", committed: Committed | None = None) -> Manifest:
    return commit_run(out, config={"name": "tiny-test", "generation": {"seed": BASE_SEED, "steps": 4}},
                      committed=committed or Committed(None), plan=plan,
                      ingest=IngestReport(read=20, kept=15, dropped={"empty": 2, "duplicate": 3}),
                      wall_seconds=1.5, keep_extra=False, identity=identity(image_format))


def build(out: Path, image_format: str = "png") -> Manifest:
    """Three shards written and committed as a first run would (hdiff.dataset.finalize.commit_run)."""
    for s in range(SHARDS):
        write_shard(out, NAMES[s], fake_samples(s), image_format=image_format, device="cpu")  # generated here
    write_atomically(layout.settings_path(out), json.dumps(identity(image_format)).encode())
    return commit(out, fake_plan(), image_format)


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
    assert sorted(p.name for p in (built / "data").glob("*.tar")) == sorted(f"{name}.tar" for name in NAMES)
    assert sorted(p.name for p in (built / "data").glob("*.parquet")) == sorted(f"{name}.parquet" for name in NAMES)
    assert all(shard_is_complete(built, name) for name in NAMES)


def test_tars_are_byte_reproducible(built, tmp_path):
    build(tmp_path / "again")
    for name in NAMES:
        assert layout.tar_path(tmp_path / "again", name).read_bytes() == layout.tar_path(built, name).read_bytes()


def test_tar_members_have_fixed_metadata(built):
    with tarfile.open(layout.tar_path(built, NAMES[0])) as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:3]] == [f"{KEYS[0][0]}.{ext}" for ext in ("json", "png", "txt")]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "hdiff", 0o444)}


def test_the_writer_leaves_each_shards_metadata_table_before_its_stats_and_the_commit_keeps_it(tmp_path):
    """The table is the one the commit would make from the tar, written with the tar (beside the next pack's
    sampling), not again at the commit: the build's end reads no tar for it."""
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    for s in range(SHARDS):
        stats = write_shard(out, NAMES[s], fake_samples(s), device="cpu")
        tar, table = layout.tar_path(out, NAMES[s]), sidecars.metadata_path(out, NAMES[s])
        assert pq.read_table(table).equals(sidecars.metadata_table(sidecars.tar_rows(tar), stats.sha256))
        assert table.stat().st_mtime_ns <= layout.stats_path(out, NAMES[s]).stat().st_mtime_ns
    written = {name: sidecars.metadata_path(out, name).stat() for name in NAMES}
    write_atomically(layout.settings_path(out), json.dumps(identity()).encode())
    commit(out, fake_plan())
    for name, before in written.items():
        after = sidecars.metadata_path(out, name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert verify_build(out) == []


def test_a_shard_whose_every_image_was_filtered_leaves_no_tar_and_no_table_of_an_earlier_run(tmp_path):
    from hdiff.dataset.scoring_stage import drop_fields

    write_shard(tmp_path, NAMES[0], fake_samples(0))
    drops = [{"key": key, "reason": "clip_min", "score": 0.1, "unet_rows": 4.8, "standard_rows": 8} for key in KEYS[0]]
    stats = write_shard(tmp_path, NAMES[0], [], scored=lambda: drop_fields(drops, 0.5))
    assert not stats.has_tar and stats.filtered == {"clip_min": PER_SHARD}
    assert not layout.tar_path(tmp_path, NAMES[0]).exists() and not sidecars.metadata_path(tmp_path, NAMES[0]).exists()
    assert shard_is_complete(tmp_path, NAMES[0])


@pytest.mark.parametrize("image_format", ["jpg", "webp"])
def test_lossy_formats_verify(tmp_path, image_format):
    build(tmp_path, image_format)
    assert verify_build(tmp_path) == []
    with tarfile.open(layout.tar_path(tmp_path, NAMES[1])) as tar:
        assert f"{KEYS[1][0]}.{image_format}" in tar.getnames()


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
    tar_order = [key for name in sorted(NAMES) for key in KEYS[NAMES.index(name)]]
    for block in blocks:
        scope: dict = {}
        exec(block, scope)
        if "records" in scope:  # hdiff's loader: a batch
            assert tuple(scope["images"].shape[1:]) == (3, SIZE, SIZE)
            assert scope["prompts"][0] == scope["records"][0]["prompt"]
            order = [record["key"] for _, _, records in scope["loader"] for record in records]
        else:
            assert scope["image"].size == (SIZE, SIZE) and scope["prompt"] == scope["record"]["prompt"]
            order = list(scope["ds"]["__key__"]) if "ds" in scope else [s["__key__"] for s in scope["samples"]]
        assert sorted(order) == sorted(tar_order) and order != tar_order  # every sample once, shuffled


def test_load_dataset_reads_the_folder_and_each_metadata_row_describes_its_image(built, tmp_path, monkeypatch):
    """`datasets.load_dataset(folder)` reads the tars through the card's `configs`; each row of the metadata tables
    holds its json record's key, size, copy index, source row and columns (under the json's paths) and the sha256
    of its image's bytes in the tar."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache-default")
    samples = datasets.load_dataset(str(built), split="train", cache_dir=str(tmp_path / "cache"))
    tables = datasets.load_dataset("parquet", data_files=str(built / sidecars.METADATA_GLOB), split="train",
                                   cache_dir=str(tmp_path / "cache"))
    images = {key: files["png"] for name in NAMES for key, files in tar_samples(layout.tar_path(built, name))}
    rows = {row["key"]: row for row in tables}
    assert sorted(samples["__key__"]) == sorted(rows) == sorted(images) == sorted(k for keys in KEYS for k in keys)
    assert {"source.row", "source.columns.category", "source.columns.license"} <= set(tables.column_names)
    for sample in samples:
        record, row = sample["json"], rows[sample["__key__"]]
        assert (row["width"], row["height"]) == sample["png"].size == (record["width"], record["height"])
        assert row["copy_index"] == record["copy_index"] and row["prompt"] == sample["txt"]
        assert row["sha256"] == hashlib.sha256(images[sample["__key__"]]).hexdigest()
        assert row["source.row"] == record["source"]["row"]
        assert row["source.columns.category"] == record["source"]["columns"]["category"]


def test_card_front_matter_points_the_viewer_at_the_tars(built):
    card = (built / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["tags"] == ["synthetic", "hdiff"] and header["task_categories"] == ["text-to-image"]
    assert header["pretty_name"] == "tiny-test"
    assert (header["license"], header["license_name"]) == ("other", "model-and-source-terms")
    assert header["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.tar"}]}]
    assert "![sample grid](grid.png)" in card


@pytest.mark.parametrize("card, header", [
    ({"license": "cc-by-4.0", "license_name": None, "license_link": None}, {"license": "cc-by-4.0"}),
    ({"license": "other", "license_name": "my-terms-1.0", "license_link": "https://example.org/terms"},
     {"license": "other", "license_name": "my-terms-1.0", "license_link": "https://example.org/terms"}),
])
def test_the_configs_card_section_sets_the_cards_license(built, card, header):
    manifest = Manifest.read(built)
    text = dataset_card(built, manifest.model_copy(update={"config": {**manifest.config, "card": card}}))
    front = yaml.safe_load(text.split("---\n")[1])
    assert {key: front[key] for key in front if key.startswith("license")} == header
    assert f"## License\n\n`{header['license']}`" in text


def card_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Each table of a markdown text as markdown-it (GFM tables) parses it: the header cells, and each body row's
    cells as its source line writes them (split at unescaped pipes), to count against the header."""
    from markdown_it import MarkdownIt

    lines = text.splitlines()
    tables, header = [], None
    for token in MarkdownIt("commonmark").enable("table").parse(text):
        if token.type == "table_open":
            header = None
        elif token.type == "tr_open" and header is None:
            header = written_cells(lines[token.map[0]])
            tables.append((header, []))
        elif token.type == "tr_open":
            tables[-1][1].append(written_cells(lines[token.map[0]]))
    return tables


def written_cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_every_table_of_the_card_renders_with_a_cell_per_column(built):
    """The card's tables (one with provenance and scores added, their cells holding `|` and `<`), parsed as the Hub
    renders markdown: every separator line starts a table, every row has its header's cells, `str | None` and
    `sha256:<hex>` show as written."""
    from markdown_it import MarkdownIt

    manifest = Manifest.read(built)
    provenance = {"source": {"dataset": "owner/prompts|v2", "hub": True, "name": None, "split": "train",
                             "revision": "abc"},
                  "model": {"id": "hdiff/shapes", "revision": "sha256:<hex>", "pipeline_class": "Pipe"}}
    scored = manifest.model_copy(update={"provenance": Manifest.model_validate(
        {**manifest.model_dump(), "provenance": provenance}).provenance,
        "scorers": {"clip": {"scorer": "clip", "id": "a/b", "revision": "r|1"}}})
    for text in ((built / "README.md").read_text(encoding="utf-8"), dataset_card(built, scored)):
        body = text.split("---\n", 2)[2]
        tables = card_tables(body)
        assert len(tables) == sum(line.startswith("|---") for line in body.splitlines()) >= 5
        for header, rows in tables:
            assert rows and all(len(row) == len(header) for row in rows), (header, rows)
        html = MarkdownIt("commonmark").enable("table").render(body)
        assert "<td>str | None</td>" in html and "sha256:&lt;hex&gt;" in html
    assert "<td><code>r|1</code></td>" in html and "<code>owner/prompts|v2</code>" in html


def test_manifest_totals_and_artifacts(built):
    manifest = Manifest.read(built)
    assert manifest.to_json() == layout.manifest_path(built).read_bytes()
    totals = manifest.totals
    assert totals.samples == 15 and totals.standard_rows == 15 * 8
    assert totals.unet_rows == pytest.approx(SHARDS * (2 * 2 + PER_SHARD * 2 * 2))
    assert totals.percent_saved == pytest.approx(100 * (1 - 72 / 120))
    assert totals.oracle_accuracy is None and "oracle_accuracy" not in json.loads(manifest.to_json())["totals"]
    assert manifest.ingest.dropped == {"duplicate": 3, "empty": 2}
    rows = shard_table_rows(manifest)
    assert [r["shard"] for r in rows] == NAMES
    assert [v.version for v in manifest.versions] == [1]
    assert manifest.versions[0].shards_added == sorted(NAMES)
    summary = prefect_summary_markdown(manifest)
    assert "40.0%" in summary and "| duplicate | 3 |" in summary


def test_stats_record_when_the_shard_started_and_ended_and_older_stats_without_them_verify(copy, tmp_path):
    """Each shard's stats hold its UTC start (`wall_before` seconds before the writer started: the sampler's share)
    and end times, ISO 8601 in its json; stats written before hdiff recorded them still verify."""
    before = datetime.now(timezone.utc)
    stats = write_shard(tmp_path / "one", NAMES[0], fake_samples(0), device="cpu", wall_before=2.0)
    after = datetime.now(timezone.utc)
    assert before - timedelta(seconds=2) <= stats.start_time <= after - timedelta(seconds=2)
    assert stats.start_time + timedelta(seconds=2) <= stats.end_time <= after
    written = json.loads(layout.stats_path(tmp_path / "one", NAMES[0]).read_text())
    assert datetime.fromisoformat(written["start_time"]) == stats.start_time
    assert datetime.fromisoformat(written["end_time"]) == stats.end_time
    assert all(read_stats(copy, name).start_time <= read_stats(copy, name).end_time for name in NAMES)
    for name in NAMES:
        edit_json(layout.stats_path(copy, name), lambda stats: [stats.pop(key) for key in ("start_time", "end_time")])
    assert verify_build(copy) == []


def test_a_run_that_changes_nothing_brings_an_older_builds_tables_and_card_up_to_date(copy):
    """A dataset as an older hdiff left it (source_<name> columns, no size or image sha256, a table cell broken by
    `str | None`): verify names each table and the card, and a run that changes nothing rewrites them, adding no
    version."""
    import pyarrow.parquet as pq

    for name in NAMES:
        path = sidecars.metadata_path(copy, name)
        table = pq.read_table(path).drop_columns(["copy_index", "width", "height", "sha256"])
        old = table.rename_columns([c.replace("source.columns.", "source_").replace(".", "_")
                                    for c in table.column_names])
        tar_sha256 = file_sha256(layout.tar_path(copy, name)).encode()
        pq.write_table(old.replace_schema_metadata({sidecars.TAR_SHA256_KEY: tar_sha256}), path)
    layout.card_path(copy).write_text(layout.card_path(copy).read_text().replace("str \\| None", "str | None"))
    manifest = layout.manifest_path(copy).read_bytes()
    problems = verify_build(copy)
    assert sorted(p.split(": ")[0] for p in problems) == ["README.md"] + sorted(f"data/{n}.parquet" for n in NAMES)
    assert all("has the columns of version 1" in p for p in problems if p.startswith("data/"))
    commit(copy, fake_plan(), committed=read_committed(copy))
    assert verify_build(copy) == [] and layout.manifest_path(copy).read_bytes() == manifest


def test_verify_names_a_truncated_tar_and_a_bad_record(copy, capsys):
    truncated = layout.tar_path(copy, NAMES[1])
    truncated.write_bytes(truncated.read_bytes()[:3000])

    def break_record(name: str, data: bytes) -> bytes:
        if name != f"{KEYS[2][3]}.json":
            return data
        record = json.loads(data)
        del record["seed"]
        record["steps"] = "many"
        return json.dumps(record).encode()

    rewrite_tar(layout.tar_path(copy, NAMES[2]), break_record)
    problems = verify_build(copy)
    assert any(p.startswith(f"data/{NAMES[1]}.tar") and "truncated" in p for p in problems)
    bad = [p for p in problems if p.startswith(f"data/{NAMES[2]}.tar: {KEYS[2][3]}:")]
    assert len(bad) == 1 and "seed" in bad[0] and "steps" in bad[0]
    assert not any(NAMES[0] in p for p in problems)
    assert not shard_is_complete(copy, NAMES[1]) and shard_is_complete(copy, NAMES[0])
    assert run_verify(copy) == 1
    assert f"data/{NAMES[1]}.tar" in capsys.readouterr().out


def test_verify_checks_prompts_keys_pairs_and_totals(copy):
    rewrite_tar(layout.tar_path(copy, NAMES[0]),
                lambda name, data: b"another prompt" if name == f"{KEYS[0][1]}.txt" else data)
    rewrite_tar(layout.tar_path(copy, NAMES[1]), lambda name, data: None if name == f"{KEYS[1][4]}.png" else data)
    layout.stats_path(copy, NAMES[2]).unlink()
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["totals"]["unet_rows"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    problems = "\n".join(verify_build(copy))
    assert f"data/{NAMES[0]}.tar: {KEYS[0][1]}: txt differs from the record's prompt" in problems
    assert f"data/{NAMES[1]}.tar: {KEYS[1][4]}: missing image" in problems
    assert f"data/{NAMES[2]}.tar: has no stats file" in problems
    assert "manifest.json: totals.unet_rows" in problems


def test_a_leftover_partial_is_reported_and_cleaned(copy):
    leftover = partial_path(layout.tar_path(copy, "shard-0123456789abcdef"))
    leftover.write_bytes(b"half a tar")
    assert layout.tar_shards(copy) == sorted(NAMES)
    problems = verify_build(copy)
    assert problems == [f"data/{leftover.name}: leftover partial file of an interrupted write"]
    assert clean_partials(copy) == [leftover]
    assert verify_build(copy) == []


def test_rewriting_a_shard_replaces_it_whole(copy):
    before = read_stats(copy, NAMES[1])
    layout.tar_path(copy, NAMES[1]).write_bytes(b"garbage")
    assert not shard_is_complete(copy, NAMES[1])
    write_shard(copy, NAMES[1], fake_samples(1), wall_seconds=before.wall_seconds, device=before.device)
    assert shard_is_complete(copy, NAMES[1]) and verify_build(copy) == []


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


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def edit_record(out: Path, shard: int, sample: int, change) -> None:
    """Change one record (and its txt when the prompt changes), then re-sync the shard's stats and the manifest's
    byte counts and digests, as someone covering their tracks would: only the record checks can notice."""
    key = KEYS[shard][sample]
    tar = layout.tar_path(out, NAMES[shard])
    with tarfile.open(tar) as opened:
        record = json.loads(opened.extractfile(f"{key}.json").read())
    change(record)
    edited = {f"{key}.json": json.dumps(record).encode(), f"{key}.txt": record["prompt"].encode()}
    rewrite_tar(tar, lambda name, data: edited.get(name, data))
    digest, size = file_sha256(tar), tar.stat().st_size

    def resync(stats: dict) -> None:
        stats.update(sha256=digest, tar_bytes=size)

    edit_json(layout.stats_path(out, NAMES[shard]), resync)

    def resync_manifest(manifest: dict) -> None:
        row = next(row for row in manifest["shards"] if row["shard"] == NAMES[shard])
        resync(row)
        manifest["totals"]["tar_bytes"] = sum(row["tar_bytes"] for row in manifest["shards"])

    edit_json(layout.manifest_path(out), resync_manifest)


def edit_table(out: Path, shard: int, change) -> None:
    """Rewrite a shard's metadata table as `change(table)` (pyarrow) gives it."""
    import pyarrow.parquet as pq

    path = sidecars.metadata_path(out, NAMES[shard])
    pq.write_table(change(pq.read_table(path)), path)


def set_column(name: str, value):
    def change(table):
        return table.set_column(table.schema.get_field_index(name), name, [[value] * table.num_rows])
    return change


def set_in(path: list, value):
    def change(data: dict) -> None:
        node = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value(node.get(path[-1]))
    return change


EDITS = {
    "percent_saved": (lambda out: edit_json(out / "manifest.json", set_in(["totals", "percent_saved"], lambda v: 60.0)),
                      "manifest.json: totals.percent_saved=60.0"),
    "samples": (lambda out: edit_json(out / "manifest.json", set_in(["counts", "samples"], lambda v: v + 1)),
                "manifest.json: counts.samples=16"),
    "tar_bytes": (lambda out: edit_json(out / "manifest.json", set_in(["totals", "tar_bytes"], lambda v: v - 512)),
                  "manifest.json: totals.tar_bytes="),
    "taus": (lambda out: edit_json(out / "manifest.json", set_in(["counts", "taus"], lambda v: [0.25])),
             "manifest.json: counts.taus=[0.25]"),
    "shard row": (lambda out: edit_json(out / "manifest.json", set_in(["shards", 0, "unet_rows"], lambda v: v / 2)),
                  "manifest.json: shards[{0}].unet_rows="),
    "version": (lambda out: edit_json(out / "manifest.json", set_in(["versions", 0, "samples"], lambda v: 3)),
                "manifest.json: versions[-1].samples=3"),
    "seed": (lambda out: edit_record(out, 1, 2, set_in(["seed"], lambda v: v + 1)),
             "data/{1}.tar: {key}: record seed"),
    "prompt": (lambda out: edit_record(out, 1, 2, set_in(["prompt"], lambda v: "a prompt edited afterwards")),
               "data/{1}.tar: {key}: record prompt_id"),
    "copy_index": (lambda out: edit_record(out, 1, 2, set_in(["copy_index"], lambda v: 1)),
                   "data/{1}.tar: {key}: record key"),
    "settings": (lambda out: layout.settings_path(out).unlink(), "build_settings.json: missing"),
    "grid": (lambda out: layout.grid_path(out).write_bytes(b""), "grid.png: missing or does not decode"),
    "card": (lambda out: layout.card_path(out).unlink(), "README.md: missing"),
    # every figure of the manifest, the card's, the sidecars, the identity, and the folder's layout (issue 23.6)
    "oracle_accuracy": (lambda out: edit_json(out / "manifest.json", set_in(
        ["totals", "oracle_accuracy"], lambda v: {"all": 1.0, "n": 15, "unscored": 0})),
        "manifest.json: totals.oracle_accuracy"),
    "version unet_rows": (lambda out: edit_json(out / "manifest.json", set_in(["versions", 0, "unet_rows"],
                                                                                lambda v: v + 1)),
                          "manifest.json: versions[0].unet_rows=73.0, the shards it generated give 72"),
    "version standard_rows": (lambda out: edit_json(out / "manifest.json", set_in(
        ["versions", 0, "standard_rows"], lambda v: 0)), "manifest.json: versions[0].standard_rows=0"),
    "prompts_added": (lambda out: edit_json(out / "manifest.json", set_in(["versions", 0, "prompts_added"],
                                                                            lambda v: 14)),
                      "manifest.json: versions[0].prompts_added=14"),
    "ingest": (lambda out: edit_json(out / "manifest.json", set_in(["ingest", "read"], lambda v: 25)),
               "manifest.json: ingest.read=25"),
    "config": (lambda out: edit_json(out / "manifest.json", set_in(["config", "generation", "steps"], lambda v: 50)),
               "manifest.json: config.generation.steps 50, the identity says 4"),
    "card figure": (lambda out: layout.card_path(out).write_text(
        layout.card_path(out).read_text().replace("saving 40.0%", "saving 90.0%")),
        "README.md: differs from the card manifest.json gives, at line"),
    "sizes.json": (lambda out: edit_json(out / "data" / "sizes.json", set_in([f"{NAMES[0]}.tar"], lambda v: 6)),
                   "data/sizes.json: differs"),
    "parquet deleted": (lambda out: (out / "data" / f"{NAMES[1]}.parquet").unlink(), "data/{1}.parquet: missing"),
    "parquet of another tar": (lambda out: shutil.copy(out / "data" / f"{NAMES[0]}.parquet",
                                                       out / "data" / f"{NAMES[1]}.parquet"),
                               "data/{1}.parquet: made for other tar bytes"),
    "parquet image sha256": (lambda out: edit_table(out, 1, set_column("sha256", "0" * 64)),
                             "data/{1}.parquet: its rows differ from the records of data/{1}.tar"),
    "parquet of an older hdiff": (lambda out: edit_table(out, 1, lambda table: table.replace_schema_metadata(
        {**table.schema.metadata, sidecars.COLUMNS_VERSION_KEY: b"1"})),
        "data/{1}.parquet: has the columns of version 1"),
    "stats times": (lambda out: edit_json(layout.stats_path(out, NAMES[1]), set_in(
        ["end_time"], lambda v: "2000-01-01T00:00:00Z")),
        "stats/{1}.json: end_time 2000-01-01T00:00:00+00:00 is before"),
    "stats end time only": (lambda out: edit_json(layout.stats_path(out, NAMES[1]), lambda stats: stats.pop(
        "start_time")), "stats/{1}.json: has end_time only"),
    "stray file": (lambda out: (out / "notes.txt").write_text("mine"), "notes.txt: unexpected entry"),
    "stray folder": (lambda out: (out / "data" / "extra").mkdir(), "data/extra: unexpected entry"),
    "unlisted shard": (lambda out: shutil.copy(layout.tar_path(out, NAMES[0]),
                                               layout.tar_path(out, "shard-0123456789abcdef")),
                       "data/shard-0123456789abcdef.tar: a shard manifest.json does not list"),
    "symlinked tar": (lambda out: symlink_outside(layout.tar_path(out, NAMES[1])),
                      "data/{1}.tar: a symbolic link"),
    "record steps": (lambda out: edit_record(out, 1, 2, set_in(["steps"], lambda v: 5)),
                     "data/{1}.tar: {key}: record steps 5, the dataset's generation.steps is 4"),
    "settings file": (lambda out: edit_json(layout.settings_path(out), set_in(["generation.steps"], lambda v: 9)),
                      "build_settings.json: generation.steps 9, the manifest says 4"),
}


def symlink_outside(path: Path) -> None:
    """Replace a file with a symbolic link to a copy of it outside the dataset folder."""
    outside = path.parents[2] / f"outside-{path.name}"
    shutil.copy(path, outside)
    path.unlink()
    path.symlink_to(outside)


@pytest.mark.parametrize("edit", list(EDITS))
def test_verify_names_each_edited_field(copy, edit):
    """A good build, one thing edited: verify fails and its message names the file and the field."""
    change, expected = EDITS[edit]
    change(copy)
    problems = verify_build(copy)
    expected = expected.format(*NAMES, key=KEYS[1][2])
    assert any(problem.startswith(expected) for problem in problems), problems


def test_a_failed_commit_leaves_the_previous_dataset(copy, monkeypatch):
    """The card is written after the grid and before the manifest: a failure there leaves the committed manifest as
    it was, and no partial files."""
    import hdiff.dataset.card as card

    before = layout.manifest_path(copy).read_bytes()
    for name in NAMES:
        layout.stats_path(copy, name).unlink()
        layout.tar_path(copy, name).unlink()

    def broken_card(out, manifest):
        raise OSError("the disk went away")

    monkeypatch.setattr(card, "write_dataset_card", broken_card)
    with pytest.raises(OSError):
        build(copy)
    assert layout.manifest_path(copy).read_bytes() == before
    assert layout.partial_files(copy) == []


@pytest.mark.parametrize("fault", ["a corpus prompt in no shard", "a tar that is not its stats"])
def test_a_commit_refuses_a_dataset_verify_would_reject(copy, fault):
    """No false success: the commit checks the dataset before writing its manifest, and names the problem."""
    layout.manifest_path(copy).unlink()
    if fault == "a corpus prompt in no shard":
        with pytest.raises(HdiffError, match=r"nothing committed.*1 sample\(s\) of the corpus are in no shard"):
            commit(copy, fake_plan(extra_prompt="a prompt that was never generated"))
    else:
        rewrite_tar(layout.tar_path(copy, NAMES[2]),  # same samples, other bytes
                    lambda name, data: data + b" " if name.endswith(".json") else data)
        with pytest.raises(HdiffError, match=f"nothing committed.*{NAMES[2]}: its tar differs from its stats"):
            commit(copy, fake_plan())
    assert not layout.manifest_path(copy).exists() and layout.partial_files(copy) == []


def test_while_a_run_holds_the_lock_verify_checks_the_last_commit_only(copy, capsys):
    """Mid-prune: an unlisted new shard, a partial file and sizes.json already rewritten for the next commit. Verify
    says a run holds the folder, reports none of that, and still checks the listed shards."""
    write_shard(copy, "shard-0123456789abcdef", fake_samples(0)[:2], device="cpu")
    partial_path(layout.tar_path(copy, "shard-0123456789abcdef")).write_bytes(b"half")
    (copy / "data" / "sizes.json").write_text("{}")
    assert verify_build(copy) != []  # no run holds it: all of that is wrong
    with exclusive_lock(layout.lock_path(copy), "output folder"):
        assert lock_holder(layout.lock_path(copy)).startswith(f"pid {os.getpid()} on ")
        assert verify_build(copy) == []
        assert run_verify(copy) == 0
        assert "a run holds the folder (pid " in capsys.readouterr().out
        damaged = layout.tar_path(copy, NAMES[2])
        damaged.write_bytes(damaged.read_bytes()[:2048])
        assert any(p.startswith(f"data/{NAMES[2]}.tar: ") for p in verify_build(copy))
    assert lock_holder(layout.lock_path(copy)) is None
