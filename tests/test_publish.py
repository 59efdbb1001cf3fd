"""Publishing to the Hub, against the local stand-in in tests/hub_standin.py reached through HF_ENDPOINT."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, constants
from hub_standin import HubStandIn
from test_loaders import write_shards
from test_manifest import stats, tiny_manifest, version

from hdiff.dataset.manifest import Manifest
from hdiff.errors import HdiffError
from hdiff.publish import push_dataset, scrub

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # huggingface_hub's LFS PUT

TOKEN = "hf_standinSECRETtoken0123456789"
REPO = "someone/hdiff-demo"
PUSHED = ["README.md", "data/shard-00000.tar", "data/shard-00001.tar", "dendrogram.png", "grid.png", "manifest.json"]

# The README's push example; the test below runs the Python half.
README_PUSH = '''
# export HF_TOKEN=hf_...   (or: hf auth login)
# hdiff push out/demo --repo you/hdiff-demo
from hdiff.publish import push_dataset

url = push_dataset("out/demo", "you/hdiff-demo")  # creates the dataset repo if needed; returns its URL
'''


def write_build(out: Path) -> Path:
    """A finished build: shards, stats, card, manifest, figures, plus files a push must leave behind."""
    write_shards(out / "data", n_shards=2, per_shard=2)
    (out / "stats").mkdir()
    for shard in ("shard-00000", "shard-00001"):
        (out / "stats" / f"{shard}.json").write_text(json.dumps({"shard": shard, "images": 2}))
    tiny_manifest([stats("shard-00000"), stats("shard-00001")], versions=0).write(out)  # no versions yet: no tag
    (out / "README.md").write_text("---\nlicense: mit\ntask_categories:\n- text-to-image\n---\n# hdiff demo\n")
    (out / "grid.png").write_bytes(b"\x89PNG grid")
    (out / "dendrogram.png").write_bytes(b"\x89PNG dendrogram")
    (out / "data" / "shard-00002.tar.0123abcd.partial").write_bytes(b"an interrupted write")
    (out / "manifest.json.4567cdef.partial").write_bytes(b"another")
    (out / "config.yaml").write_text("not for the Hub\n")
    return out


@pytest.fixture
def build(tmp_path) -> Path:
    return write_build(tmp_path / "out")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The stand-in, accepting only TOKEN, with huggingface_hub pointed at it as HF_ENDPOINT would."""
    home = tmp_path / "hf-home"  # no real login is read, no registry cache written outside tmp
    with HubStandIn(token=TOKEN, multipart_chunk=4096) as standin:
        for name, value in {"HF_ENDPOINT": standin.url, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": TOKEN,
                            "HF_HOME": str(home)}.items():
            monkeypatch.setenv(name, value)
        for offline in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # conftest sets them; the stand-in is local
            monkeypatch.delenv(offline, raising=False)
        # huggingface_hub reads these at import; the subprocess test covers the plain environment variables.
        for name, value in {"ENDPOINT": standin.url, "HF_HUB_DISABLE_XET": True, "HF_HUB_OFFLINE": False,
                            "HF_TOKEN_PATH": str(home / "token"),
                            "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json")}.items():
            monkeypatch.setattr(constants, name, value)
        yield standin
        assert standin.unhandled == []


def local_files(out: Path) -> dict[str, bytes]:
    return {path: (out / path).read_bytes() for path in PUSHED}


def test_push_uploads_exactly_the_build(build, hub):
    url = push_dataset(build, REPO)
    assert url == f"{hub.url}/datasets/{REPO}"
    assert hub.repos[REPO].repo_type == "dataset"
    assert hub.files(REPO) == local_files(build)
    assert len(hub.commits) == 1 and hub.commits[0]["summary"] == "hdiff build: 2 shards"
    assert hub.authorizations() == {f"Bearer {TOKEN}"}
    assert any(path.startswith("/lfs/") and path.count("/") == 3 for _, path, _ in hub.requests)  # multi-part


def test_second_push_to_existing_repo_updates_it(build, hub):
    push_dataset(build, REPO)
    manifest = Manifest.read(build)
    manifest.updated_utc = "2026-12-02T00:00:00+00:00"
    manifest.write(build)
    push_dataset(build, REPO, commit_message="second", private=True)
    assert hub.files(REPO) == local_files(build)
    assert [c["summary"] for c in hub.commits] == ["hdiff build: 2 shards", "second"]
    assert hub.repos[REPO].visibility is None  # private applies on creation only


def set_versions(out: Path, count: int) -> None:
    manifest = Manifest.read(out)
    manifest.versions = [version(n, []) for n in range(1, count + 1)]
    manifest.write(out)


def test_versions_push_only_what_changed_and_are_tagged(build, hub):
    """v1 pushed whole; the same dataset again makes no commit; v2 (one shard added, one removed) commits the new
    shard, the manifest and the deletion only, and leaves files hdiff does not manage alone."""
    set_versions(build, 1)
    push_dataset(build, REPO)
    (first,) = hub.commits
    assert sorted(first["paths"]) == PUSHED and first["summary"] == "hdiff build v1: 2 shards"
    assert hub.repos[REPO].tags == {"v1": first["oid"]}
    HfApi(token=TOKEN).upload_file(path_or_fileobj=b"CC-BY-4.0\n", path_in_repo="LICENSE", repo_id=REPO,
                                   repo_type="dataset")  # the owner's own file

    push_dataset(build, REPO)
    assert len(hub.commits) == 2 and hub.repos[REPO].tags == {"v1": first["oid"]}  # nothing new: no commit, no tag

    write_shards(build / "extra", n_shards=3, per_shard=2)
    (build / "extra" / "shard-00002.tar").rename(build / "data" / "shard-00002.tar")
    (build / "stats" / "shard-00002.json").write_text(json.dumps({"shard": "shard-00002", "images": 2}))
    for old in ("data/shard-00000.tar", "stats/shard-00000.json"):
        (build / old).unlink()
    set_versions(build, 2)
    push_dataset(build, REPO)
    second = hub.commits[-1]
    assert sorted(second["paths"]) == ["data/shard-00000.tar", "data/shard-00002.tar", "manifest.json"]
    assert second["deleted"] == ["data/shard-00000.tar"] and second["summary"] == "hdiff build v2: 2 shards"
    assert hub.repos[REPO].tags == {"v1": first["oid"], "v2": second["oid"]}
    published = {path: (build / path).read_bytes() for path in PUSHED if (build / path).exists()}
    published["data/shard-00002.tar"] = (build / "data" / "shard-00002.tar").read_bytes()
    assert hub.files(REPO) == {**published, "LICENSE": b"CC-BY-4.0\n"}


def test_push_to_a_branch_and_private_repo(build, hub):
    push_dataset(build, REPO, revision="v1", private=True)
    assert hub.repos[REPO].visibility == "private"
    assert hub.files(REPO, "v1") == local_files(build) and hub.files(REPO) == {}


def test_token_argument_beats_environment(build, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrongWRONGwrong0123456789")
    push_dataset(build, REPO, token=TOKEN)
    assert hub.authorizations() == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize(("fragment", "status"), [("/api/repos/create", 401), ("/api/repos/create", 500),
                                                 ("/commit/", 401), ("/commit/", 500)])
def test_failures_never_show_the_token(build, hub, caplog, capfd, fragment, status):
    hub.failures[fragment] = status
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HdiffError) as caught:
        push_dataset(build, REPO)
    message = str(caught.value)
    assert f"pushing {build} to {REPO} failed" in message and str(status) in message
    assert "rejected request with Authorization: Bearer ***" in message  # the echo arrived, scrubbed
    assert "\n" not in message and caught.value.__cause__ is None and caught.value.__suppress_context__
    captured = capfd.readouterr()
    for text in (message, caplog.text, captured.out, captured.err):
        assert TOKEN not in text


def test_wrong_token_is_a_one_line_error(build, hub):
    with pytest.raises(HdiffError, match="401"):
        push_dataset(build, REPO, token="hf_notTheRightOne0123456789")


def test_token_from_the_hf_login(build, hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    Path(constants.HF_TOKEN_PATH).parent.mkdir(parents=True)
    Path(constants.HF_TOKEN_PATH).write_text(TOKEN)  # where `hf auth login` keeps it
    push_dataset(build, REPO)
    assert hub.authorizations() == {f"Bearer {TOKEN}"}


def test_missing_token_is_reported_before_any_request(build, hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HdiffError, match="no Hugging Face token"):
        push_dataset(build, REPO)
    assert hub.requests == []


@pytest.mark.parametrize(("remove", "complaint"), [("manifest.json", "no manifest.json"),
                                                   ("data", "no data/\\*.tar"),
                                                   ("stats/shard-00001.json", "no stats for shard-00001$")])
def test_not_a_finished_build(build, hub, remove, complaint):
    target = build / remove
    if target.is_dir():
        for child in target.iterdir():
            child.unlink()
    else:
        target.unlink()
    with pytest.raises(HdiffError, match=complaint):
        push_dataset(build, REPO)
    assert hub.requests == []


def test_a_damaged_manifest_is_not_pushed(build, hub):
    (build / "manifest.json").write_text(json.dumps({"shards": 2, "images": 4}))
    with pytest.raises(HdiffError, match="manifest.json is not an hdiff manifest"):
        push_dataset(build, REPO)
    assert hub.requests == []


def test_scrub_removes_token_and_bearer_values():
    text = "401 for Authorization: Bearer abc.def\nsecret=my-secret hf_abcdefghijkl"
    assert scrub(text, "my-secret") == "401 for Authorization: Bearer *** secret=*** hf_***"


def test_readme_example(tmp_path, hub, monkeypatch):
    demo = write_build(tmp_path / "out" / "demo")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(README_PUSH, namespace)
    assert namespace["url"] == f"{hub.url}/datasets/you/hdiff-demo"
    assert hub.files("you/hdiff-demo") == local_files(demo)


@pytest.mark.subprocess
def test_plain_environment_variables_reach_the_stand_in(build, hub):
    """As a user runs it: HF_ENDPOINT, HF_HUB_DISABLE_XET and HF_TOKEN read by a fresh process."""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": TOKEN,
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    code = f"from hdiff.publish import push_dataset; print(push_dataset({str(build)!r}, {REPO!r}))"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{hub.url}/datasets/{REPO}"
    assert hub.files(REPO) == local_files(build)
    assert TOKEN not in result.stdout + result.stderr
