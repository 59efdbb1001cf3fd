"""Sources as users name them, against the Hub-compatible server (tests/hub_server.py): a Hub corpus by id with
revision, subset name, split and data_files, or by hf:// path, read whole or streamed, with its columns kept.

One subprocess reads every source online into a fresh cache (huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE
when imported); the tests then read the same sources here, offline, from that cache.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import FIRST_REVISION, PROMPT_DATASET, corpus_rows

from hdiff.dataset.sources import Corpus, hub_dataset, matching, open_corpus
from hdiff.errors import HdiffError

REPO = Path(__file__).resolve().parents[1]

# (label, open_corpus keyword arguments) read online by the subprocess, then offline here
SOURCES = {
    "animals@v1": dict(path_or_id=PROMPT_DATASET, name="animals", revision=FIRST_REVISION),
    "objects@main": dict(path_or_id=PROMPT_DATASET, name="objects", keep_columns="all"),
    "hf-path": dict(path_or_id=f"hf://datasets/{PROMPT_DATASET}@{FIRST_REVISION}/objects/*.parquet",
                    keep_columns=["source_url"]),
    "data_files": dict(path_or_id=PROMPT_DATASET, data_files="animals/train-*.parquet", streaming=True),
}

READ_ONLINE = """
import json, sys
from hdiff.dataset.sources import open_corpus
out = {}
for label, kwargs in json.loads(sys.argv[1]).items():
    corpus = open_corpus(kwargs.pop("path_or_id"), **kwargs)
    out[label] = {"revision": corpus.revision, "rows": [[v, c] for v, c in corpus.rows()]}
print(json.dumps(out))
"""


def read(kwargs: dict) -> Corpus:
    kwargs = dict(kwargs)
    return open_corpus(kwargs.pop("path_or_id"), **kwargs)


def rows_of(corpus: Corpus) -> list[list]:
    return [[value, columns] for value, columns in corpus.rows()]


@pytest.fixture(scope="module")
def online(hub_server, tmp_path_factory) -> dict:
    """Every source read online into an empty cache: {label: {"revision", "rows"}}, and the cache's folder."""
    home = tmp_path_factory.mktemp("hf-home")
    env = {**os.environ, "HF_HOME": str(home), "HF_ENDPOINT": hub_server.url, "HF_HUB_OFFLINE": "0",
           "HF_DATASETS_OFFLINE": "0", "PYTHONPATH": str(REPO), "HF_DATASETS_CACHE": str(home / "datasets")}
    result = subprocess.run([sys.executable, "-c", READ_ONLINE, json.dumps(SOURCES)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return {"read": json.loads(result.stdout.splitlines()[-1]), "cache": home / "hub"}


@pytest.fixture
def offline_cache(monkeypatch, tmp_path):
    """Offline, with huggingface_hub's cache pointed at `folder` (and datasets' Arrow cache in tmp_path)."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")

    def use(folder: Path) -> None:
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))

    return use


def test_online_reads_each_revision_subset_and_path(hub_server, online):
    read_online = online["read"]
    commits = {rev: hub_server.commits[f"{PROMPT_DATASET}@{rev}"] for rev in (FIRST_REVISION, "main")}
    assert read_online["animals@v1"]["revision"] == commits[FIRST_REVISION]
    assert [v for v, _ in read_online["animals@v1"]["rows"]] == corpus_rows("animals", 6)["prompt"]
    objects = corpus_rows("objects", 10)
    assert read_online["objects@main"]["revision"] == commits["main"]
    assert read_online["objects@main"]["rows"][3] == [objects["prompt"][3], {
        "category": "objects", "license": "cc0-1.0", "source_url": objects["source_url"][3]}]
    assert read_online["hf-path"]["revision"] == commits[FIRST_REVISION]
    assert [c for _, c in read_online["hf-path"]["rows"]] == [{"source_url": u}
                                                              for u in corpus_rows("objects", 6)["source_url"]]
    assert [v for v, _ in read_online["data_files"]["rows"]] == corpus_rows("animals", 10)["prompt"]


def test_offline_reads_the_same_revisions_from_the_cache(online, offline_cache):
    offline_cache(online["cache"])
    for label, kwargs in SOURCES.items():
        corpus = read(kwargs)
        assert corpus.revision == online["read"][label]["revision"], label
        assert rows_of(corpus) == online["read"][label]["rows"], label


def test_streaming_and_whole_reads_agree(online, offline_cache):
    offline_cache(online["cache"])
    whole = read({**SOURCES["objects@main"], "streaming": False})
    streamed = read({**SOURCES["objects@main"], "streaming": True})
    assert type(whole.dataset).__name__ == "Dataset" and type(streamed.dataset).__name__ == "ParquetStream"
    assert rows_of(streamed) == rows_of(whole)


def test_offline_cold_cache_names_the_files_to_fetch(online, offline_cache, tmp_path):
    offline_cache(tmp_path / "empty")
    with pytest.raises(HdiffError) as cold:
        read(SOURCES["animals@v1"])
    command = str(cold.value).split("`")[1]
    assert shlex.split(command) == ["hf", "download", PROMPT_DATASET, "--repo-type", "dataset", "--revision",
                                    FIRST_REVISION, "--include", "README.md", "--include", "animals/*"]
    partial = shutil.copytree(online["cache"], tmp_path / "partial", symlinks=True)
    snapshot = partial / f"datasets--{PROMPT_DATASET.replace('/', '--')}" / "snapshots" / online["read"]["hf-path"][
        "revision"]
    shutil.rmtree(snapshot / "objects")
    offline_cache(partial)  # the card is cached, the subset is not: the card's exact patterns are named
    with pytest.raises(HdiffError) as partly:
        read({**SOURCES["animals@v1"], "name": "objects"})
    assert str(partly.value).split("`")[1].endswith("--include README.md --include 'objects/train-*.parquet'")


@pytest.mark.parametrize("kwargs, message", [
    (dict(name=None), r"choose source.name of animals, objects$"),
    (dict(name="plants"), r"no subset 'plants'; choose one of animals, objects$"),
    (dict(split="test"), r"subset 'animals' has no split 'test'; choose one of train$"),
    (dict(column="caption"), r"no column 'caption'; available columns: prompt, category, license, source_url$"),
    (dict(keep_columns=["author"]), r"keep_columns names 'author', not in it"),
])
def test_bad_hub_settings_are_one_line(online, offline_cache, kwargs, message):
    offline_cache(online["cache"])
    with pytest.raises(HdiffError, match=message):
        read({**SOURCES["animals@v1"], **kwargs})


def test_hub_settings_on_local_files_and_bad_hf_paths_are_refused(tmp_path):
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("a red circle\n")
    with pytest.raises(HdiffError, match=r"prompts\.txt: revision, name applies to Hub datasets only"):
        hub_dataset(str(corpus), revision="v1", name="x")
    with pytest.raises(HdiffError, match=r"hf://datasets/OWNER/NAME\[@REVISION\]\[/PATH\]"):
        hub_dataset("hf://models/someone/model")
    with pytest.raises(HdiffError, match="names revision 'v1' but source.revision is 'v2'"):
        hub_dataset("hf://datasets/o/n@v1/x.parquet", revision="v2")
    assert hub_dataset("hf://datasets/o/n@refs%2Fconvert%2Fparquet/a/*.parquet").revision == "refs/convert/parquet"


def test_data_files_patterns_match_as_on_the_hub():
    files = ["a/train-0.parquet", "a/b/train-1.parquet", "train-2.parquet", "README.md"]
    assert matching(files, ("a/*.parquet",)) == ["a/train-0.parquet"]
    assert matching(files, ("**/*.parquet",)) == ["a/b/train-1.parquet", "a/train-0.parquet", "train-2.parquet"]
    assert matching(files, ("a/**",)) == ["a/b/train-1.parquet", "a/train-0.parquet"]
