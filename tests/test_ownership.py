"""A build writes only into its own folders: absent, empty, or made by hdiff; never the root, home or the source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hdiff.cli import main
from hdiff.dataset import layout, ownership
from hdiff.errors import HdiffError
from hdiff.files import exclusive_lock

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def refused(out, source=None) -> str:
    with pytest.raises(HdiffError) as caught:
        ownership.check_output_folder(out, source)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def user_files(folder: Path) -> dict[str, bytes]:
    (folder / "data").mkdir(parents=True)
    (folder / "stats").mkdir()
    files = {"data/my-backup.tar": b"not hdiff's", "stats/my-metrics.json": b'{"mine": 1}',
             "README.md": b"# my notes\n", "grid.png": b"my picture"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_absent_empty_and_hdiff_made_folders_are_accepted(tmp_path):
    ownership.check_output_folder(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    ownership.check_output_folder(tmp_path / "empty")
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / "README.md").write_text("a card")
    ownership.claim(marked)
    ownership.check_output_folder(marked)
    older = tmp_path / "older"  # built before the marker: an hdiff manifest
    older.mkdir()
    layout.manifest_path(older).write_text(json.dumps({"totals": {}, "versions": [], "shards": []}))
    ownership.check_output_folder(older)
    killed = tmp_path / "killed"  # a killed first build, before the marker: its lock and a finished shard
    (killed / "stats").mkdir(parents=True)
    layout.lock_path(killed).write_text("pid 1")
    layout.stats_path(killed, "shard-0123456789abcdef").write_text("{}")
    ownership.check_output_folder(killed)


def test_a_folder_of_someone_elses_files_is_refused(tmp_path):
    user_files(tmp_path / "X")
    assert refused(tmp_path / "X") == (f"output {tmp_path / 'X'} holds files hdiff did not write (README.md, data, "
                                       "grid.png, ...); build into an empty or new folder")
    (tmp_path / "Y").mkdir()
    layout.manifest_path(tmp_path / "Y").write_text('{"not": "a manifest"}')
    assert "holds files hdiff did not write (manifest.json)" in refused(tmp_path / "Y")
    (tmp_path / "f").write_text("x")
    assert refused(tmp_path / "f").endswith("is a file, not a folder")


def test_root_home_and_the_source_are_refused(tmp_path, monkeypatch):
    assert "is the file-system root" in refused("/")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    assert "is the home folder" in refused(tmp_path / "home")
    corpus = tmp_path / "corpus"
    (corpus / "part").mkdir(parents=True)
    (corpus / "part" / "a.jsonl").write_text('{"prompt": "a red circle"}\n')
    assert "holds the source corpus" in refused(tmp_path / "corpus", str(corpus))
    assert "holds the source corpus" in refused(tmp_path, str(corpus / "part" / "a.jsonl"))  # a folder above it
    assert "is inside the source folder" in refused(corpus / "out", str(corpus))
    assert "is inside the source folder" in refused(corpus / "part" / "out", f"{corpus}/**/*.jsonl")
    ownership.check_output_folder(tmp_path / "out", str(corpus / "part" / "a.jsonl"))  # a sibling is fine
    ownership.check_output_folder(tmp_path / "out", "nateraw/parti-prompts")  # a Hub id has no folder


def test_only_shard_named_files_are_the_datasets(tmp_path):
    user_files(tmp_path)
    ownership.claim(tmp_path)
    layout.tar_path(tmp_path, "shard-0123456789abcdef").write_bytes(b"")
    layout.stats_path(tmp_path, "shard-0123456789abcdef").write_text("{}")
    assert layout.tar_shards(tmp_path) == layout.stats_shards(tmp_path) == ["shard-0123456789abcdef"]


def test_a_build_into_someone_elses_folder_stops_before_work_and_touches_nothing(tmp_path, capsys):
    out = tmp_path / "X"
    files = user_files(out)
    assert main(["build", str(DEMO), "--set", f"output={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hdiff: output ") and "holds files hdiff did not write" in err and "\n" not in err
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_a_folder_another_run_is_writing_is_reported_in_use_not_foreign(tmp_path, capsys):
    """While a run holds the folder's lock, its files may be half-written (the marker's temporary name): a second
    build is told the folder is in use, and touches nothing."""
    out = tmp_path / "X"
    out.mkdir()
    half_written = out / ".hdiff-dataset.c8f5bbebd005.partial"
    half_written.write_bytes(b"hdiff dataset")
    with exclusive_lock(layout.lock_path(out), "output folder"):
        assert main(["build", str(DEMO), "--set", f"output={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hdiff: output folder {out} is in use by another run (pid ") and "\n" not in err
    assert sorted(p.name for p in out.iterdir()) == sorted([layout.LOCK_NAME, half_written.name])
