"""The whole dataset build through `hdiff build` and `hdiff verify`: killed and resumed, corrupted, read back with
datasets and the training loader, fed bad input, and repeated for byte-identical tars.

Builds use the session's tiny random-weight shapes model and Prefect server (tests/conftest.py) and the 96-prompt
demo corpus cut into 6 shards. The uninterrupted build that six tests read is a module fixture; each other build is
what its test asserts on (packed, on two devices, killed and resumed, re-run with other settings, a changing corpus,
bad input), and none gives another's bytes: packed shards differ from the reference's in the last grey level.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from hdiff import cli
from hdiff.dataset import layout
from hdiff.dataset.writer import file_sha256, read_stats

REPO = Path(__file__).resolve().parents[1]
DEMO_CORPUS = REPO / "tests" / "data" / "prompts96.jsonl"  # 96 prompts: 6 shards here
SHARDING = {"min_size": 8, "max_size": 24}  # 96 prompts → 6 shards
KILL_TIMEOUT_S = 300


def write_config(folder: Path, *, name: str, output: Path, source: str, model: str, cache: Path,
                 **sections) -> Path:
    config = {"name": name, "output": str(output), "source": {"path_or_id": source},
              "sharding": SHARDING, "model": {"id": model}, "embedding": {"cache_dir": str(cache)}, **sections}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def build(config: Path) -> None:
    assert cli.main(["build", str(config)]) == 0


def tar_bytes(out: Path) -> dict[str, bytes]:
    """Every tar of a build by shard name: the dataset's whole content."""
    return {shard: layout.tar_path(out, shard).read_bytes() for shard in layout.tar_shards(out)}


def tar_contents(data: bytes) -> dict[str, bytes]:
    """Member name → bytes of one tar."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def all_keys(out: Path) -> list[str]:
    return [key for shard in layout.stats_shards(out) for key in read_stats(out, shard).keys]


def listed_shards(out: Path) -> list[str]:
    """The dataset's shards in the manifest's order."""
    return [row["shard"] for row in json.loads(layout.manifest_path(out).read_text())["shards"]]


@pytest.fixture(scope="module")
def model(tiny_shapes) -> str:
    """The session's tiny shapes model (conftest): read, never written."""
    return tiny_shapes


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory, model, prefect_api):
    """A config factory for the demo corpus: same settings, its own output and embedding cache each call. Builds
    report to the session's Prefect server (conftest), and the killed build's subprocess to the same."""
    root = tmp_path_factory.mktemp("configs")

    def make(name: str) -> tuple[Path, Path]:
        out = root / name / "out"
        out.parent.mkdir()
        return write_config(out.parent, name=name, output=out, source=str(DEMO_CORPUS), model=model,
                            cache=out.parent / "embeddings"), out

    return make


@pytest.fixture(scope="module")
def reference(demo_config) -> Path:
    """An uninterrupted build of the demo corpus, read by most tests here (do not change it: copy it)."""
    config, out = demo_config("reference")
    build(config)
    return out


# ---------------------------------------------------------------------------------------------- the finished build


def test_reference_build_verifies_and_has_every_prompt_once(reference, capsys):
    assert cli.main(["verify", str(reference)]) == 0
    assert re.search(r": ok \(96 samples in 6 shards\)$", capsys.readouterr().out.strip())
    keys = all_keys(reference)
    assert len(keys) == len(set(keys)) == 96
    manifest = json.loads(layout.manifest_path(reference).read_text())
    assert manifest["ingest"] == {"read": 96, "kept": 96, "dropped": {}, "truncated": 0}
    assert manifest["counts"]["taus"] == [1.0]  # τ unset: the model's own (the tiny model has no prior: 1.0)
    assert all(shard["taus"] == [1.0] for shard in manifest["shards"])
    oracle = manifest["totals"]["oracle_accuracy"]  # a shapes-world model: the oracle scores every image
    assert oracle["n"] + oracle["unscored"] == 96 and 0 <= oracle["all"] <= 1
    assert oracle["not_understood"] == 16  # the corpus's two-object prompts: the reader reads one object
    assert f"| oracle accuracy | {100 * oracle['all']:.1f}% of {oracle['n']} images |" in \
        (reference / layout.CARD_NAME).read_text()
    assert "| τ | 1 |" in (reference / layout.CARD_NAME).read_text()
    for name in (layout.CARD_NAME, layout.GRID_NAME, layout.DENDROGRAM_NAME):
        assert (reference / name).is_file(), name
    assert layout.partial_files(reference) == []


def test_packed_shards_build_the_same_dataset(reference, demo_config, tmp_path):
    """generation.pack_shards = 3: two tasks sample three shards each; same keys, same images (to one grey level)."""
    import numpy as np
    from PIL import Image

    config, packed = demo_config("packed")
    config.write_text(config.read_text() + "generation: {pack_shards: 3}\n")
    build(config)
    assert cli.main(["verify", str(packed)]) == 0
    assert all_keys(packed) == all_keys(reference)
    manifest = json.loads(layout.manifest_path(packed).read_text())
    expected = json.loads(layout.manifest_path(reference).read_text())
    assert manifest["totals"]["unet_rows"] == expected["totals"]["unet_rows"]
    for shard, data in tar_bytes(packed).items():
        ours, theirs = tar_contents(data), tar_contents(tar_bytes(reference)[shard])
        assert ours.keys() == theirs.keys()
        for name in ours:
            if name.endswith(".png"):
                a = np.asarray(Image.open(io.BytesIO(ours[name])), dtype=int)
                b = np.asarray(Image.open(io.BytesIO(theirs[name])), dtype=int)
                assert np.abs(a - b).max() <= 1, name


def test_the_local_runner_builds_on_every_listed_device(reference, demo_config, monkeypatch):
    """model.device lists two GPUs: shards run on both, one model copy each, and the dataset is the reference's.
    (No GPU here: the devices are taken as present, and the loader records the device it was asked for and loads
    on the CPU.)"""
    import functools

    from hdiff.dataset import pipeline

    monkeypatch.setattr(pipeline, "check_present", lambda device: device)
    asked = []
    load = pipeline._load_adapter.__wrapped__

    def load_on_cpu(model_id, prior, device, *options):
        asked.append(device)
        return load(model_id, prior, "cpu", *options)

    monkeypatch.setattr(pipeline, "_load_adapter", functools.lru_cache(maxsize=None)(load_on_cpu))
    config, out = demo_config("two-devices")
    settings = yaml.safe_load(config.read_text())
    settings["model"]["device"] = ["cuda:0", "cuda:1"]
    config.write_text(yaml.safe_dump(settings))
    build(config)
    assert sorted(asked) == ["cuda:0", "cuda:1"]  # one copy per device
    ran_on = [read_stats(out, shard).device for shard in listed_shards(out)]
    assert set(ran_on) == {"cuda:0", "cuda:1"}, ran_on
    assert tar_bytes(out) == tar_bytes(reference)


def test_a_pack_returns_its_shards_once_they_are_on_disk(demo_config):
    """generate_pack (what a Prefect task runs): the stats of the shards it wrote, on disk when it returns, with its
    device time; called again, it skips them."""
    from hdiff.dataset.config import load_config
    from hdiff.dataset.pipeline import generate_pack, prepare
    from hdiff.dataset.writer import shard_is_complete

    config_path, out = demo_config("one-pack")
    config = load_config(config_path)
    shards = prepare(config, progress=False).shards[:2]
    pack = generate_pack(config, shards)
    assert [(stats.shard, generated) for stats, generated in pack.shards] == [(s.name, True) for s in shards]
    assert all(shard_is_complete(out, s.name) for s in shards) and pack.device_s > 0 and pack.device_waited_s >= 0
    again = generate_pack(config, shards)
    assert [(stats, generated) for stats, generated in again.shards] == [(stats, False) for stats, _ in pack.shards]


# ---------------------------------------------------------------------------------------------- killed and resumed


def tar_problem(path: Path, stats) -> str | None:
    """Why the tar under a final name is not a finished shard (None when it is): it must read to its end-of-archive
    blocks, hold whole samples, and, once its stats exist, match them."""
    data = path.read_bytes()
    if len(data) % tarfile.RECORDSIZE or data[-2 * tarfile.BLOCKSIZE:] != bytes(2 * tarfile.BLOCKSIZE):
        return f"{path.name}: no end-of-archive ({len(data)} bytes)"
    try:
        names = list(tar_contents(data))
    except (tarfile.TarError, EOFError, OSError) as exc:
        return f"{path.name}: unreadable: {exc}"
    keys = list(dict.fromkeys(name.split(".", 1)[0] for name in names))
    if len(names) != 3 * len(keys):
        return f"{path.name}: {len(names)} members for {len(keys)} samples"
    if stats is not None and (stats.samples != len(keys) or stats.sha256 != file_sha256(path)):
        return f"{path.name}: differs from its stats ({len(keys)} samples, stats say {stats.samples})"
    return None


def stop_group(process: subprocess.Popen) -> None:
    """SIGKILL the build's whole process group (it was started as its own session), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=60)


@pytest.mark.subprocess
def test_killed_build_resumes_to_the_uninterrupted_dataset(reference, demo_config, prefect_api, capfd):
    """Killed (SIGKILL, the whole process group) once a shard is done and another is being written by the writer
    pool (its encoders slowed by tests/slow_encoder_build.py), the build resumes to the uninterrupted dataset."""
    total = len(layout.stats_shards(reference))
    assert total >= 4
    config, out = demo_config("killed")
    log = config.parent / "build.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen([sys.executable, str(REPO / "tests" / "slow_encoder_build.py"), "build",
                                    str(config)], cwd=config.parent,
                                   stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PREFECT_API_URL": prefect_api})
    try:
        lock, deadline = layout.lock_path(out), time.monotonic() + KILL_TIMEOUT_S
        while not (lock.is_file() and f"pid {process.pid} " in lock.read_text()):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        assert cli.main(["build", str(config)]) == 2  # a second build into the folder stops: one writer at a time
        in_use = [line for line in capfd.readouterr().err.splitlines() if line.startswith("hdiff: ")]
        assert len(in_use) == 1 and f"is in use by another run (pid {process.pid} on " in in_use[0], in_use

        done, writing = [], []
        while not (done and writing):  # a shard finished, and another's tar being written
            assert process.poll() is None, f"the build ended before it was killed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no shard finished in {KILL_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
            done = layout.stats_shards(out)
            writing = [path for path in layout.partial_files(out) if ".tar." in path.name]
            for shard in layout.tar_shards(out):
                problem = tar_problem(layout.tar_path(out, shard), read_stats(out, shard))
                assert problem is None, problem
            time.sleep(0.02)
        stop_group(process)
    finally:
        if process.returncode is None:
            stop_group(process)
    assert process.returncode == -signal.SIGKILL
    killed_at = layout.stats_shards(out)
    assert 1 <= len(killed_at) < total, f"killed after {len(killed_at)} of {total} shards"
    assert any(".tar." in path.name for path in layout.partial_files(out))  # killed mid-write
    for shard in layout.tar_shards(out):  # what the kill left under final names is whole
        assert tar_problem(layout.tar_path(out, shard), read_stats(out, shard)) is None
    finished = {shard: layout.stats_path(out, shard).read_bytes() for shard in killed_at}

    build(config)
    assert {shard: layout.stats_path(out, shard).read_bytes() for shard in killed_at} == finished  # skipped
    assert layout.partial_files(out) == []
    assert all_keys(out) == all_keys(reference)
    assert tar_bytes(out) == tar_bytes(reference)  # same keys, same image bytes, nothing lost or duplicated
    assert (out / layout.DENDROGRAM_NAME).is_file()
    capfd.readouterr()
    assert cli.main(["verify", str(out)]) == 0, capfd.readouterr().out


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a build folder but its lock file (which names the last run's process)."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name != layout.LOCK_NAME}


def test_resuming_with_other_image_settings_stops_before_generating(reference, model, tmp_path, capfd, caplog):
    """A re-run into a folder of finished shards must have the identity they were made with (or it would mix two
    datasets): every setting that changes bytes, batching included, and the model folder's content; the identity is
    in the manifest, so deleting build_settings.json hides nothing. The device and runner may differ, and then
    every finished shard is kept."""
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    identity = json.loads(layout.manifest_path(out).read_text())["identity"]
    assert json.loads(layout.settings_path(out).read_text()) == identity  # recorded by the first run
    assert identity["generation.tau"] is None and identity["model.revision"].startswith("sha256:")
    before = folder_bytes(out)

    def refused(name: str, model_id: str = model, **sections) -> str:
        config = write_config(tmp_path, name=name, output=out, source=str(DEMO_CORPUS), model=model_id,
                              cache=tmp_path / "embeddings", **sections)
        assert cli.main(["build", str(config)]) == 2
        printed = capfd.readouterr()
        assert "Traceback" not in printed.out + printed.err + caplog.text
        messages = [line for line in printed.err.splitlines() if line.startswith("hdiff: ")]
        assert len(messages) == 1, printed.err[-2000:]
        assert folder_bytes(out) == before  # nothing written, nothing removed
        return messages[0]

    assert "holds shards built with other settings (generation.tau None → 0.5; generation.seed 0 → 3; recorded " \
        "in manifest.json)" in refused("changed", generation={"tau": 0.5, "seed": 3})
    layout.settings_path(out).unlink()
    del before[layout.SETTINGS_NAME]
    assert "(generation.max_batch 64 → 7; generation.pack_shards 1 → 2; recorded in manifest.json)" in \
        refused("batched", generation={"max_batch": 7, "pack_shards": 2})

    other_model = tmp_path / "model"  # the same folder name, one byte of its content changed
    other_model.mkdir()
    shutil.copytree(model, other_model / Path(model).name)
    config_file = next(p for p in (other_model / Path(model).name).rglob("*.json"))
    config_file.write_text(config_file.read_text() + " ")
    message = refused("other-model", model_id=str(other_model / Path(model).name))
    assert f"model.revision {identity['model.revision']!r} → 'sha256:" in message

    faster = write_config(tmp_path, name="faster", output=out, source=str(DEMO_CORPUS), model=model,
                          cache=tmp_path / "embeddings", runner={"gpu_concurrency": 2, "retries": 0})
    assert cli.main(["build", str(faster)]) == 0
    after = folder_bytes(out)
    kept = [name for name in before if name.startswith((layout.DATA_DIR, layout.STATS_DIR))]
    assert {name: after[name] for name in kept} == {name: before[name] for name in kept}  # every shard skipped
    assert json.loads(layout.settings_path(out).read_text()) == identity  # written again


# ---------------------------------------------------------------------------------------------- a changing corpus


def corpus_keys(lines: list[str]) -> list[str]:
    from hdiff.prompts import prompt_id, sample_key

    return sorted(sample_key(prompt_id(json.loads(line)["prompt"]), 0) for line in lines)


def test_a_growing_and_shrinking_corpus_updates_the_dataset(demo_config, capsys):
    """The schedule's case: the same command re-run as the corpus file changes. Appended prompts become new shards
    and nothing else is touched; an unchanged corpus changes nothing; removed prompts stay until pruned, and
    pruning rewrites only the shards that held them."""
    lines = DEMO_CORPUS.read_text(encoding="utf-8").splitlines()
    config, out = demo_config("growing")
    corpus = config.parent / "corpus.jsonl"
    config.write_text(config.read_text().replace(str(DEMO_CORPUS), str(corpus)))

    corpus.write_text("\n".join(lines[:64]) + "\n", encoding="utf-8")
    build(config)
    first = folder_bytes(out)
    first_shards = listed_shards(out)

    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")  # 32 prompts appended
    capsys.readouterr()
    build(config)
    assert capsys.readouterr().out.startswith("version 2: 32 new prompt(s), 0 removed, ")
    assert sorted(all_keys(out)) == corpus_keys(lines)  # each prompt exactly once
    grown = folder_bytes(out)
    assert {name: grown[name] for name in first if name.endswith(".tar")} == \
        {name: data for name, data in first.items() if name.endswith(".tar")}  # no tar rewritten
    manifest = json.loads(layout.manifest_path(out).read_text())
    v1, v2 = manifest["versions"]
    added = [read_stats(out, name) for name in v2["shards_added"]]
    assert v2["shards_removed"] == [] and set(listed_shards(out)) == set(first_shards) | set(v2["shards_added"])
    assert sum(stats.samples for stats in added) == v2["prompts_added"] == 32  # compute of run 2: new prompts only
    assert v2["unet_rows"] == pytest.approx(sum(stats.unet_rows for stats in added))
    assert v2["standard_rows"] == sum(stats.standard_rows for stats in added)
    assert v1["corpus"]["fingerprint"] != v2["corpus"]["fingerprint"] and v2["samples"] == 96
    assert "| v2 |" in (out / layout.CARD_NAME).read_text()
    assert cli.main(["verify", str(out)]) == 0

    capsys.readouterr()
    build(config)  # unchanged corpus: nothing written, no version
    assert capsys.readouterr().out.startswith("nothing changed")
    assert folder_bytes(out) == grown

    removed = lines[:4]
    corpus.write_text("\n".join(lines[4:]) + "\n", encoding="utf-8")
    build(config)
    assert "4 prompt(s) of the dataset are no longer in the corpus (kept" in capsys.readouterr().out
    assert folder_bytes(out) == grown

    assert cli.main(["build", str(config), "--set", "update.prune=true"]) == 0
    assert capsys.readouterr().out.startswith("version 3: 0 new prompt(s), 4 removed, ")
    assert sorted(all_keys(out)) == corpus_keys(lines[4:])
    v3 = json.loads(layout.manifest_path(out).read_text())["versions"][-1]
    touched = {row for row in v3["shards_removed"]}
    assert 1 <= len(touched) <= len(removed) and v3["unet_rows"] == 0
    pruned = folder_bytes(out)
    untouched = [name for name in grown if name.endswith(".tar") and Path(name).stem not in touched]
    assert {name: pruned[name] for name in untouched} == {name: grown[name] for name in untouched}
    assert not any(Path(name).stem in touched for name in pruned)
    assert cli.main(["verify", str(out)]) == 0


# ---------------------------------------------------------------------------------------------- corruption


def rewrite_member(path: Path, suffix: str, change) -> str:
    """Rewrite the first `*.suffix` member of a tar with `change(bytes) -> bytes`; returns its sample key."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    target = next(m.name for m, _ in members if m.name.endswith(f".{suffix}"))
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            if member.name == target:
                data = change(data)
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return target.split(".", 1)[0]


def test_verify_names_a_truncated_tar_and_a_bad_record(reference, tmp_path, capsys):
    out = Path(shutil.copytree(reference, tmp_path / "out"))
    names = listed_shards(out)
    truncated = layout.tar_path(out, names[1])
    with open(truncated, "r+b") as f:
        f.truncate(truncated.stat().st_size // 2 + 100)  # inside a member's data

    def wrong_seed_type(data: bytes) -> bytes:
        record = json.loads(data)
        record["seed"] = "not a number"
        return json.dumps(record).encode()

    bad_key = rewrite_member(layout.tar_path(out, names[2]), "json", wrong_seed_type)

    assert cli.main(["verify", str(out)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"data/{names[1]}.tar: unreadable") and "truncated" in line
               for line in lines), lines
    assert any(line.startswith(f"data/{names[2]}.tar: {bad_key}") and "seed" in line
               for line in lines), lines
    assert not any(names[s] in line for line in lines for s in (0, 3, 4, 5)), lines


# ---------------------------------------------------------------------------------------------- reading it back


def test_datasets_reads_image_txt_and_json_for_every_sample(reference, tmp_path):
    import datasets
    from PIL import Image

    data = datasets.load_dataset("webdataset", data_files={"train": f"{reference}/{layout.DATA_FILES_GLOB}"},
                                 split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert {"png", "txt", "json"} <= set(data.column_names)
    assert len(data) == 96
    assert sorted(data["__key__"]) == sorted(all_keys(reference))
    for row in data:
        assert isinstance(row["png"], Image.Image) and row["png"].size == (32, 32)
        assert isinstance(row["txt"], str) and row["txt"] == row["json"]["prompt"]
        assert row["json"]["key"] == row["__key__"]


def test_training_loader_reads_every_sample_once(reference):
    from hdiff.data import image_dataset, make_loader

    keys = []
    for images, prompts, records in make_loader(reference, batch_size=16, seed=1):
        assert images.shape[1:] == (3, 32, 32) and len(prompts) == len(records) == len(images)
        assert [r["prompt"] for r in records] == prompts
        keys += [r["key"] for r in records]
    assert sorted(keys) == sorted(all_keys(reference))
    plain = [record["key"] for _, _, record in image_dataset(reference, shuffle_buffer=0, shuffle_shards=False)]
    assert plain == all_keys(reference)


# ---------------------------------------------------------------------------------------------- bad input

# End to end, through `hdiff build`: one error and one counted drop. Every other bad input is tested where it is
# caught, at the function level (tests/test_ingest.py, tests/test_config.py, tests/test_cli.py).
# (id, raw bytes of {tmp}/corpus.jsonl, expected: an error regex, or the manifest's ingest section and the prompts
#  stored in the tars)
BAD_INPUT = [
    ("malformed JSON line", b'{"prompt": "a red circle"}\n{"prompt": "a blue square"\n',
     r"corpus\.jsonl:2: not a JSON object"),
    ("mixed types", "".join(json.dumps({"prompt": p}) + "\n" for p in (None, 3, 2.5, True, "a red circle",
                                                                     "a blue square")).encode(),
     ({"read": 6, "kept": 2, "dropped": {"not_text": 4}, "truncated": 0}, ["a red circle", "a blue square"])),
]


@pytest.fixture(scope="module")
def embedding_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embeddings")


@pytest.mark.parametrize("data, expected", [case[1:] for case in BAD_INPUT], ids=[case[0] for case in BAD_INPUT])
def test_bad_input_gives_one_line_error_or_counted_drop(tmp_path, model, embedding_cache, prefect_api, capfd, caplog,
                                                        data, expected):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(data)
    out = tmp_path / "out"
    config = write_config(tmp_path, name="bad-input", output=out, source=str(corpus), model=model,
                          cache=embedding_cache, sharding={"min_size": 1, "max_size": 8})

    code = cli.main(["build", str(config)])
    printed = capfd.readouterr()
    assert "Traceback" not in printed.out + printed.err + caplog.text  # neither printed nor logged by Prefect
    if isinstance(expected, str):
        assert code == 2
        messages = [line for line in printed.err.splitlines() if line.startswith("hdiff: ")]
        assert len(messages) == 1 and re.search(expected, messages[0]), printed.err[-2000:]
        assert printed.err.count("not a JSON object") == 1  # printed once, not again by each failed run
        assert not out.exists()  # refused before any shard: no folder left behind, not even its lock
        return

    ingest_counts, stored = expected
    assert code == 0, printed.err[-2000:]
    assert json.loads(layout.manifest_path(out).read_text())["ingest"] == ingest_counts
    texts = [data.decode() for shard in tar_bytes(out).values()
             for name, data in tar_contents(shard).items() if name.endswith(".txt")]
    assert sorted(texts) == sorted(stored)
    assert cli.main(["verify", str(out)]) == 0


def test_a_streamed_corpus_plans_what_the_whole_read_plans(tmp_path, model, embedding_cache, monkeypatch):
    """The build's prepare() on a parquet corpus in row groups of 10, read whole and streamed: the same shards, the
    same source rows and columns, the same corpus fingerprint; nothing left in the scratch folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hdiff.dataset.config import load_config
    from hdiff.dataset.pipeline import prepare

    texts = [json.loads(line)["prompt"] for line in DEMO_CORPUS.read_text(encoding="utf-8").splitlines()]
    corpus = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"prompt": texts + texts[:5], "tag": [f"t{i}" for i in range(len(texts) + 5)]}), corpus,
                   row_group_size=10)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where TMPDIR would put the scratch files
    plans = {}
    for streaming in (False, True):
        config = write_config(tmp_path, name=f"streaming-{streaming}", output=tmp_path / f"out-{streaming}",
                              source=str(corpus), model=model, cache=embedding_cache)
        settings = yaml.safe_load(config.read_text(encoding="utf-8"))
        settings["source"].update(streaming=streaming, keep_columns=["tag"])
        config.write_text(yaml.safe_dump(settings), encoding="utf-8")
        plans[streaming] = prepare(load_config(str(config)), progress=False)
        assert list(scratch.iterdir()) == []
    whole, streamed = plans[False].plan, plans[True].plan
    assert len(whole.shards) == 6 and streamed.shards == whole.shards and streamed.corpus == whole.corpus
    assert plans[True].ingest_report == plans[False].ingest_report
    assert plans[True].ingest_report.dropped == {"duplicate": 5}
    first = {text: source for shard in streamed.shards for text, source in zip(shard.prompts, shard.sources)}
    assert first[texts[3]]["row"] == 3 and first[texts[3]]["columns"] == {"tag": "t3"}
