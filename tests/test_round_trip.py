"""Issue 25's round trip with a real build: build from a local corpus, push (stand-in), pull into a new folder,
`hdiff verify` it, grow the corpus beside the pulled hdiff.yaml, `hdiff build OUT/hdiff.yaml`, push v2 (only the
new shards and the changed metadata), pull v1 again; and the same versions pulled through the Hub-compatible server
(olah, tests/hub_server.py) in a subprocess, as a user's shell runs `hdiff pull`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import commit_all
from test_build import DEMO_CORPUS, write_config
from test_publish import REPO, TOKEN, local_files, standin_hub

from hdiff import cli
from hdiff.dataset import layout
from hdiff.dataset.manifest import Manifest
from hdiff.pull import pull_dataset
from hdiff.publish import push_dataset

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]


def corpus(path: Path, lines: int) -> Path:
    path.write_text("".join(DEMO_CORPUS.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The stand-in (tests/test_publish.py's standin_hub) for the module: both tests read the versions it holds."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        with standin_hub(monkeypatch, tmp_path_factory.mktemp("hf-home")) as standin:
            yield standin


@pytest.fixture(scope="module")
def versions(tmp_path_factory, tiny_shapes, prefect_api, hub):
    """(first build folder, pulled-and-extended folder, the stand-in's files of v1 and v2), made once."""
    tmp_path = tmp_path_factory.mktemp("versions")
    work = tmp_path / "work"
    work.mkdir()
    source = corpus(work / "prompts.jsonl", 32)
    config = write_config(work, name="round-trip", output=work / "out", source=str(source), model=tiny_shapes,
                          cache=tmp_path / "embeddings")
    assert cli.main(["build", str(config)]) == 0
    push_dataset(work / "out", REPO)
    v1 = hub.files(REPO)

    pulled = pull_dataset(REPO, tmp_path / "pulled")
    assert cli.main(["verify", str(pulled)]) == 0
    corpus(pulled / "prompts.jsonl", 64)  # the grown corpus, beside hdiff.yaml under the name it gives
    assert cli.main(["build", str(pulled / layout.CONFIG_NAME), "--set", f"model.id={tiny_shapes}",
                     "--set", f"embedding.cache_dir={tmp_path / 'embeddings'}"]) == 0
    assert cli.main(["verify", str(pulled)]) == 0
    before = len(hub.commits)
    push_dataset(pulled, REPO)
    assert len(hub.commits) == before + 1
    return work / "out", pulled, v1, hub.files(REPO)


def test_pull_build_push_extends_the_dataset_by_its_new_shards(versions, hub, tmp_path, tmp_path_factory):
    first, pulled, v1, v2 = versions
    assert v1 == local_files(first) and v2 == local_files(pulled)
    old, new = Manifest.read(first), Manifest.read(pulled)
    assert [v.version for v in new.versions] == [1, 2] and new.totals.samples == 64
    added = {f"data/{name}{suffix}" for name in new.versions[-1].shards_added for suffix in (".tar", ".parquet")}
    added |= {f"stats/{name}.json" for name in new.versions[-1].shards_added}
    changed = {"README.md", "manifest.json", "hdiff.yaml", "data/sizes.json", "grid.png"}
    assert set(hub.commits[-1]["paths"]) <= added | changed and added <= set(hub.commits[-1]["paths"])
    assert {row.shard for row in old.shards} <= {row.shard for row in new.shards}  # v1's shards kept, not re-sent
    assert "prompts.jsonl" not in v2  # the local corpus stays local
    assert set(hub.repos[REPO].tags) == {"v1", "v2"}
    assert local_files(pull_dataset(f"{REPO}@v1", tmp_path / "v1-again")) == v1
    machine = [str(tmp_path_factory.getbasetemp()).encode(), str(Path.home()).encode(), TOKEN.encode()]
    leaks = {path: [m for m in machine if m in data] for path, data in v2.items() if any(m in data for m in machine)}
    assert leaks == {}


@pytest.mark.subprocess
def test_versions_pull_through_the_hub_compatible_server(versions, hub_server, tmp_path):
    """v1 and v2, committed and tagged in a dataset repository the olah server serves, pulled by `hdiff pull` in a
    subprocess: each verifies and holds that version's files."""
    _, _, v1, v2 = versions
    repo = hub_server.mirrors / "datasets" / "hdiff-test" / "round-trip"
    for tag, files in (("v1", v1), ("v2", v2)):
        if repo.exists():
            shutil.rmtree(repo / "data"), shutil.rmtree(repo / "stats")
        for path, data in files.items():
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_bytes(data)
        commit_all(repo, f"hdiff build {tag}", tag=tag)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_ENDPOINT": hub_server.url, "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_XET": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HF_TOKEN", None)
    for spec, files in (("hdiff-test/round-trip@v1", v1), ("hdiff-test/round-trip", v2)):
        out = tmp_path / spec.replace("/", "_").replace("@", "_")
        result = subprocess.run([sys.executable, "-m", "hdiff.cli", "pull", spec, str(out)], env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert local_files(out) == files, spec
