"""Scores and filters in a build: every record scored (json and parquet), filtered images not written but counted by
rule, with the UNet rows they cost (verify checks them), in the stats, manifest and card; verify content, a re-run
regenerates nothing, and the loader's `where`. A shard whose every image is filtered out is its stats alone (no tar,
no parquet), through a grown corpus, a resume after a kill, pruning, the loaders and the card's viewer config; a
dataset whose every image is filtered out is committed, verified, kept by a re-run, pushed and pulled."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hdiff import cli
from hdiff.data import image_dataset, make_loader
from hdiff.dataset import layout, sidecars
from hdiff.dataset.writer import read_stats
from hdiff.errors import HdiffError
from hdiff.shapes.prompts import clustered_set

READABLE = [p for p, _ in clustered_set(8, seed=5)]  # the tiny random model draws no right scene: dropped
UNREADABLE = [f"a photo of a cat number {i}" for i in range(8)]  # the oracle reads nothing here: NaN, kept
MORE = [p for p, _ in clustered_set(8, seed=6)]  # a later shard, every image of it dropped


def write_build(root: Path, name: str, prompts: list[str], **sections) -> Path:
    """A build config of `prompts` into root/name, scored by the oracle and filtered by `oracle_min: 50`."""
    corpus = root / f"{name}.jsonl"
    corpus.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    config = {"name": "scored", "output": str(root / name), "source": {"path_or_id": str(corpus)},
              "sharding": {"min_size": 8, "max_size": 16}, "embedding": {"cache_dir": str(root / "cache")},
              "model": {"id": sections.pop("model"), "device": "cpu"},
              "scores": ["oracle"], "filter": {"oracle_min": 50}, **sections}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_shapes, prefect_api, one_torch_thread) -> tuple[Path, Path]:
    """A one-shard build of the tiny random-weight shapes model scored by the oracle, `oracle_min: 50` dropping the
    8 readable prompts and keeping the 8 it cannot read."""
    root = tmp_path_factory.mktemp("scored")
    path = write_build(root, "out", READABLE + UNREADABLE, model=tiny_shapes)
    assert cli.main(["build", str(path)]) == 0
    return path, root / "out"


def manifest_of(out: Path) -> dict:
    return json.loads(layout.manifest_path(out).read_text())


def verify(out: Path, capsys) -> None:
    capsys.readouterr()
    assert cli.main(["verify", str(out)]) == 0, capsys.readouterr().out


def test_every_written_image_is_scored_and_the_filtered_ones_are_counted(built):
    _, out = built
    manifest = manifest_of(out)
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


def test_the_unet_rows_of_filtered_images_are_in_the_compute(built):
    """The rows the dropped images cost are counted apart and with the written ones' give the whole generation's,
    as the sampler reports it for the same shard."""
    from hdiff.dataset.config import load_config
    from hdiff.dataset.pipeline import cached_adapter
    from hdiff.generate import ImageJob, generate_packed
    from hdiff.prompts import prompt_id

    config_path, out = built
    manifest = manifest_of(out)
    (shard,) = [row["shard"] for row in manifest["shards"]]
    stats = read_stats(out, shard)
    config = load_config(config_path)
    adapter = cached_adapter(config.model, "cpu")
    job = ImageJob.from_prompts(sorted(READABLE + UNREADABLE, key=prompt_id), base_seed=config.generation.seed)
    (generation,) = generate_packed(adapter, [job], config.generation_settings().for_model(adapter))
    standard = sum(r.standard_unet_rows for r in generation.records)
    assert stats.filtered_unet_rows > 0
    assert stats.filtered_unet_rows == pytest.approx(sum(d.unet_rows for d in stats.dropped))
    assert stats.unet_rows + stats.filtered_unet_rows == pytest.approx(generation.unet_rows)
    assert stats.standard_rows + stats.filtered_standard_rows == standard
    totals, version = manifest["totals"], manifest["versions"][0]
    assert totals["filtered_unet_rows"] == pytest.approx(stats.filtered_unet_rows)
    assert totals["filtered_standard_rows"] == stats.filtered_standard_rows
    assert totals["percent_saved"] == pytest.approx(100 * (1 - generation.unet_rows / standard))
    assert version["filtered_unet_rows"] == pytest.approx(stats.filtered_unet_rows) and version["filtered"] == 8
    card = layout.card_path(out).read_text()
    assert f"It also spent {stats.filtered_unet_rows:,.0f} UNet rows on 8 images a filter dropped" in card
    assert "| UNet rows on the 8 images filtered out (hdiff / standard) |" in card


@pytest.mark.parametrize("where", ["stats", "totals", "version"])
def test_verify_checks_the_unet_rows_of_filtered_images(built, tmp_path, where):
    from hdiff.dataset.verify import verify_build

    out = copy_dataset(built[1], tmp_path / "out")
    manifest = manifest_of(out)
    if where == "stats":
        path = layout.stats_path(out, manifest["shards"][0]["shard"])
        stats = json.loads(path.read_text())
        stats["dropped"][0]["unet_rows"] += 1.0
        path.write_text(json.dumps(stats))
    else:
        entry = manifest["totals"] if where == "totals" else manifest["versions"][0]
        entry["filtered_unet_rows"] += 1.0
        layout.manifest_path(out).write_text(json.dumps(manifest))
    assert any("filtered_unet_rows" in problem for problem in verify_build(out))


def test_a_filtered_dataset_an_earlier_hdiff_wrote_still_reads_verifies_and_grows(built, tmp_path, capsys):
    """Stats and manifest as hdiff wrote them before it counted the filtered images' UNet rows and each version's
    drops: the dataset is read (not "missing or damaged"), a re-run brings its card up to date and verify passes;
    its filtered rows stay unknown (None), never a made-up 0."""
    from hdiff.dataset.update import read_committed
    from hdiff.dataset.verify import verify_build

    config, source = built
    out = copy_dataset(source, tmp_path / "out")
    manifest = manifest_of(out)
    for row in manifest["shards"]:
        path = layout.stats_path(out, row["shard"])
        stats = json.loads(path.read_text())
        for key in ("filtered_unet_rows", "filtered_standard_rows"):
            stats.pop(key, None)
            row.pop(key, None)
        for dropped in stats.get("dropped") or ():
            dropped.pop("unet_rows"), dropped.pop("standard_rows")
        path.write_text(json.dumps(stats))
    for entry in [manifest["totals"], *manifest["versions"]]:
        for key in ("filtered_unet_rows", "filtered_standard_rows", *(("filtered",) if entry is not manifest["totals"]
                                                                     else ())):
            entry.pop(key, None)
    totals = manifest["totals"]  # saved as it was counted then: over the written images alone
    totals["percent_saved"] = 100 * (1 - totals["unet_rows"] / totals["standard_rows"])
    layout.manifest_path(out).write_text(json.dumps(manifest))
    assert sum(len(keys) for keys in read_committed(out).filtered.values()) == 8
    moved = yaml.safe_load(config.read_text())
    moved["output"] = str(out)
    config = tmp_path / "old.yaml"
    config.write_text(yaml.safe_dump(moved))
    assert cli.main(["build", str(config)]) == 0, capsys.readouterr().err
    assert verify_build(out) == []
    totals = manifest_of(out)["totals"]
    assert totals["filtered"] == {"oracle_min": 8} and "filtered_unet_rows" not in totals


def test_scoring_time_is_accounted_apart_from_generation(built):
    _, out = built
    manifest = manifest_of(out)
    stats = read_stats(out, manifest["shards"][0]["shard"])
    assert stats.scoring_seconds > 0 and manifest["totals"]["scoring_seconds"] == stats.scoring_seconds
    assert manifest["versions"][0]["scoring_seconds"] == stats.scoring_seconds
    assert "| scoring time (apart from generation) |" in layout.card_path(out).read_text()


def test_a_filtered_build_verifies_and_a_rerun_regenerates_nothing(built, capsys):
    config, out = built
    verify(out, capsys)
    before = {p.name: p.read_bytes() for p in (out / "data").glob("*.tar")}
    assert cli.main(["build", str(config)]) == 0
    assert {p.name: p.read_bytes() for p in (out / "data").glob("*.tar")} == before
    assert len(manifest_of(out)["versions"]) == 1
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


def copy_dataset(out: Path, to: Path) -> Path:
    shutil.copytree(out, to)
    return to


def test_a_shard_whose_every_image_is_filtered_is_its_stats_alone(built, tiny_shapes, capsys):
    """A grown corpus adds a shard whose 8 images are all dropped: it is committed as stats only, verifies, is reused
    by a build resumed after a kill, the loaders read around it, and pruning rewrites or removes it."""
    _, first = built
    root = first.parent
    grown = copy_dataset(first, root / "grown")
    config = write_build(root, "grown", READABLE + UNREADABLE + MORE, model=tiny_shapes)
    assert cli.main(["build", str(config)]) == 0
    manifest = manifest_of(grown)
    (added,) = manifest["versions"][1]["shards_added"]
    stats = read_stats(grown, added)
    assert stats.samples == 0 and stats.keys == [] and stats.sha256 is None and stats.tar_bytes == 0
    assert stats.filtered == {"oracle_min": 8} and stats.filtered_unet_rows > 0
    assert not layout.tar_path(grown, added).exists() and not sidecars.metadata_path(grown, added).exists()
    assert f"{added}.tar" not in json.loads(sidecars.sizes_path(grown).read_text())
    assert manifest["versions"][1]["filtered"] == 16 and manifest["totals"]["filtered"] == {"oracle_min": 16}
    assert "1 shard(s) lost every image to the filter" in layout.card_path(grown).read_text()
    verify(grown, capsys)
    samples = list(image_dataset(str(grown), shuffle_shards=False, shuffle_buffer=0, decode="pil"))
    assert sorted(p for _, p, _ in samples) == sorted(UNREADABLE)
    (batch,) = list(make_loader(str(grown), batch_size=8, shuffle_buffer=0))
    assert sorted(batch[1]) == sorted(UNREADABLE)
    import datasets  # the card's configs, as the Hub's viewer reads them: the tars there are

    viewed = datasets.load_dataset(str(grown), split="train", cache_dir=str(root / "datasets-cache"))
    assert sorted(viewed["txt"]) == sorted(UNREADABLE)

    # killed after the stats-only shard was done, before the commit: the resumed build reuses it
    killed = copy_dataset(first, root / "killed")
    shutil.copy(layout.stats_path(grown, added), layout.stats_path(killed, added))
    (killed / layout.DATA_DIR / f"{added}.tar.0123456789ab.partial").write_bytes(b"half a tar")
    resumed = write_build(root, "killed", READABLE + UNREADABLE + MORE, model=tiny_shapes)
    assert cli.main(["build", str(resumed)]) == 0
    assert layout.stats_path(killed, added).read_bytes() == layout.stats_path(grown, added).read_bytes()
    assert manifest_of(killed)["shards"] == manifest["shards"] and layout.partial_files(killed) == []
    verify(killed, capsys)

    # pruned: the mixed shard written again with its drops carried over, the stats-only one smaller, then gone
    pruned = write_build(root, "grown", READABLE[2:] + UNREADABLE[2:] + MORE[4:], model=tiny_shapes,
                         update={"prune": True})
    assert cli.main(["build", str(pruned)]) == 0
    manifest = manifest_of(grown)
    rows = {row["shard"]: row for row in manifest["shards"]}
    mixed, = [read_stats(grown, name) for name, row in rows.items() if row["samples"]]
    tarless, = [read_stats(grown, name) for name, row in rows.items() if not row["samples"]]
    assert mixed.samples == 6 and mixed.filtered == {"oracle_min": 6} and len(mixed.dropped) == 6
    assert tarless.filtered == {"oracle_min": 4} and tarless.sha256 is None and tarless.shard != added
    assert manifest["versions"][2]["prompts_removed"] == 8 and manifest["versions"][2]["filtered"] == 10
    verify(grown, capsys)
    emptied = write_build(root, "grown", READABLE[2:] + UNREADABLE[2:], model=tiny_shapes, update={"prune": True})
    assert cli.main(["build", str(emptied)]) == 0
    assert [row["shard"] for row in manifest_of(grown)["shards"]] == [mixed.shard]
    assert layout.stats_shards(grown) == [mixed.shard] and manifest_of(grown)["totals"]["filtered"] == {"oracle_min": 6}
    verify(grown, capsys)


@pytest.fixture(scope="module")
def everything_dropped(tmp_path_factory, tiny_shapes, prefect_api, one_torch_thread) -> tuple[Path, Path, str]:
    """A build whose every image `oracle_min: 50` drops (the 8 readable prompts): its config, folder and summary."""
    root = tmp_path_factory.mktemp("dropped")
    path = write_build(root, "out", READABLE, model=tiny_shapes)
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        assert cli.main(["build", str(path)]) == 0
    return path, root / "out", summary.getvalue()


def dataset_bytes(out: Path) -> dict[str, bytes]:
    """Every file of the dataset folder but the run lock, by its path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}


def test_a_dataset_whose_every_image_is_filtered_is_committed_and_kept(everything_dropped, capsys):
    """Nothing written: the stats alone, a manifest and card that verify (no viewer config over no tar), the summary
    counting the drops and their rows; a re-run keeps it as it is; the loaders say there is nothing to load."""
    from huggingface_hub import DatasetCard

    config, out, summary = everything_dropped
    manifest = manifest_of(out)
    (row,) = manifest["shards"]
    assert row["samples"] == 0 and "sha256" in row and row["sha256"] is None
    assert manifest["totals"]["samples"] == 0 and manifest["totals"]["filtered"] == {"oracle_min": 8}
    rows = manifest["totals"]["filtered_unet_rows"]
    assert f"0 images in {out}" in summary and f"8 filtered by oracle_min (their {rows:.0f} UNet rows" in summary
    assert sorted(p.name for p in (out / layout.DATA_DIR).iterdir()) == [sidecars.SIZES_NAME]
    assert json.loads(sidecars.sizes_path(out).read_text()) == {}
    header = DatasetCard.load(layout.card_path(out)).data.to_dict()
    assert header["viewer"] is False and "configs" not in header
    verify(out, capsys)
    before = dataset_bytes(out)
    assert cli.main(["build", str(config)]) == 0
    assert dataset_bytes(out) == before
    for given in (out, out / layout.DATA_DIR):  # the build folder or its data/
        with pytest.raises(HdiffError, match="a filter dropped every image"):
            image_dataset(str(given))


@pytest.mark.parametrize("change", [{"keys": ["x"]}, {"unet_rows": 1.0},
                                    {"start_time": "2026-12-05T10:00:00Z", "end_time": "2026-12-05T09:00:00Z"}])
def test_verify_checks_the_stats_of_a_shard_without_a_tar(everything_dropped, tmp_path, change):
    from hdiff.dataset.verify import verify_build

    out = copy_dataset(everything_dropped[1], tmp_path / "out")
    (row,) = manifest_of(out)["shards"]
    path = layout.stats_path(out, row["shard"])
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    assert any(f"{layout.STATS_DIR}/{row['shard']}.json" in problem and (next(iter(change)) in problem)
               for problem in verify_build(out))


def test_push_and_pull_carry_a_dataset_without_tars(everything_dropped, monkeypatch, tmp_path):
    from test_publish import standin_hub

    from hdiff.dataset.manifest import Manifest
    from hdiff.dataset.verify import dataset_files, verify_build
    from hdiff.publish import push_dataset
    from hdiff.pull import pull_dataset

    _, out, _ = everything_dropped
    (shard,) = [row.shard for row in Manifest.read(out).shards]
    with standin_hub(monkeypatch, tmp_path / "hf-home") as hub:
        push_dataset(out, "someone/dropped")
        pushed = hub.files("someone/dropped")
        assert pushed == {path: file.read_bytes() for path, file in dataset_files(out, Manifest.read(out)).items()}
        assert f"stats/{shard}.json" in pushed and not any(path.endswith((".tar", ".parquet")) for path in pushed)
        pulled = pull_dataset("someone/dropped", tmp_path / "pulled", cache_dir=tmp_path / "hub-cache")
    assert verify_build(pulled) == [] and (pulled / f"stats/{shard}.json").read_bytes() == pushed[f"stats/{shard}.json"]
