"""Publishing to the Hub, against the local stand-in in tests/hub_standin.py reached through HF_ENDPOINT."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, constants
from hub_standin import HubStandIn
from test_writer_verify import KEYS, NAMES, PER_SHARD, fake_prompts, fake_samples, identity

from hdiff.dataset import layout
from hdiff.dataset.finalize import commit_run
from hdiff.dataset.ingest import IngestReport
from hdiff.dataset.manifest import Corpus, Manifest
from hdiff.dataset.update import Rewrite, RunPlan, ShardJob, corpus_fingerprint, read_committed
from hdiff.dataset.verify import dataset_files, verify_build
from hdiff.dataset.writer import write_shard
from hdiff.errors import HdiffError
from hdiff.files import exclusive_lock, write_atomically
from hdiff.prompts import prompt_id, sample_key
from hdiff.publish import push_dataset, scrub

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # huggingface_hub's LFS PUT

TOKEN = "hf_standinSECRETtoken0123456789"
REPO = "someone/hdiff-demo"

# The README's push example; the test below runs the Python half.
README_PUSH = '''
# export HF_TOKEN=hf_...   (or: hf auth login)
# hdiff push out/demo --repo you/hdiff-demo
from hdiff.publish import push_dataset

url = push_dataset("out/demo", "you/hdiff-demo")  # creates the dataset repo if needed; returns its URL
'''


def commit_version(out: Path, shards: list[int], removed: tuple[int, ...] = ()) -> Manifest:
    """Commit a version of the fake dataset (tests/test_writer_verify.py) holding `shards`: new ones written, the
    `removed` ones pruned whole, as a build's run would."""
    committed = read_committed(out)
    for s in shards:
        if NAMES[s] not in committed.shards:
            write_shard(out, NAMES[s], fake_samples(s), device="cpu")
    ids = [prompt_id(p) for s in shards for p in fake_prompts(s)]
    corpus = Corpus(source="test", revision=None, prompts=len(ids), fingerprint=corpus_fingerprint(ids))
    plan = RunPlan([ShardJob(NAMES[s], tuple(fake_prompts(s))) for s in shards if NAMES[s] not in committed.shards],
                   [Rewrite(NAMES[s], frozenset(KEYS[s]), None) for s in removed], corpus=corpus,
                   expected_keys=frozenset(sample_key(pid, 0) for pid in ids), not_in_corpus=0,
                   removed=PER_SHARD * len(removed))
    write_atomically(layout.settings_path(out), json.dumps(identity()).encode())
    return commit_run(out, config={"name": "hdiff-demo"}, committed=committed, plan=plan,
                      ingest=IngestReport(read=len(ids), kept=len(ids)), wall_seconds=1.0, keep_extra=False,
                      identity=identity())


def write_build(out: Path) -> Path:
    """A finished, verified build of two shards: v1."""
    commit_version(out, [0, 1])
    assert verify_build(out) == []
    return out


@pytest.fixture
def build(tmp_path) -> Path:
    return write_build(tmp_path / "out")


@contextlib.contextmanager
def standin_hub(monkeypatch: pytest.MonkeyPatch, home: Path):
    """The stand-in, accepting only TOKEN, with huggingface_hub pointed at it as HF_ENDPOINT would; `home` is its
    HF_HOME (no real login is read, no registry cache written outside it)."""
    with HubStandIn(token=TOKEN, multipart_chunk=4096) as standin:
        for name, value in {"HF_ENDPOINT": standin.url, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": TOKEN,
                            "HF_HOME": str(home)}.items():
            monkeypatch.setenv(name, value)
        for offline in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # conftest sets them; the stand-in is local
            monkeypatch.delenv(offline, raising=False)
        # huggingface_hub reads these at import; the subprocess test covers the plain environment variables.
        resolve = standin.url + "/{repo_id}/resolve/{revision}/{filename}"  # hf_hub_download's (pull)
        for name, value in {"ENDPOINT": standin.url, "HUGGINGFACE_CO_URL_TEMPLATE": resolve,
                            "HF_HUB_DISABLE_XET": True, "HF_HUB_OFFLINE": False,
                            "HF_TOKEN_PATH": str(home / "token"),
                            "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json")}.items():
            monkeypatch.setattr(constants, name, value)
        yield standin
        assert standin.unhandled == []


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The stand-in (standin_hub) for one test."""
    with standin_hub(monkeypatch, tmp_path / "hf-home") as standin:
        yield standin


def local_files(out: Path) -> dict[str, bytes]:
    """What a push publishes: the files the manifest lists (the list verify checks), by their path."""
    return {path: file.read_bytes() for path, file in dataset_files(out, Manifest.read(out)).items()}


def test_push_uploads_exactly_the_build(build, hub):
    url = push_dataset(build, REPO)
    assert url == f"{hub.url}/datasets/{REPO}"
    assert hub.repos[REPO].repo_type == "dataset"
    assert sorted(hub.files(REPO)) == sorted([f"data/{name}.{ext}" for name in NAMES[:2] for ext in ("tar", "parquet")]
                                             + [f"stats/{name}.json" for name in NAMES[:2]]
                                             + ["README.md", "data/sizes.json", "grid.png", "manifest.json",
                                                "build_settings.json", "hdiff.yaml"])
    assert hub.files(REPO) == local_files(build)
    assert len(hub.commits) == 1 and hub.commits[0]["summary"] == "hdiff build v1: 2 shards"
    assert hub.repos[REPO].tags == {"v1": hub.commits[0]["oid"]}
    assert hub.authorizations() == {f"Bearer {TOKEN}"}
    assert any(path.startswith("/lfs/") and path.count("/") == 3 for _, path, _ in hub.requests)  # multi-part


def test_second_push_to_existing_repo_updates_it(build, hub):
    push_dataset(build, REPO)
    manifest = Manifest.read(build)
    manifest.updated_utc = "2026-12-02T00:00:00+00:00"
    manifest.write(build)
    push_dataset(build, REPO, commit_message="second", private=True)
    assert hub.files(REPO) == local_files(build)
    assert [c["summary"] for c in hub.commits] == ["hdiff build v1: 2 shards", "second"]
    assert hub.repos[REPO].visibility is None  # private applies on creation only


def test_versions_push_only_what_changed_and_are_tagged(build, hub):
    """v1 pushed whole; the same dataset again makes no commit; v2 (one shard added, one removed) commits the new
    shard, its table, the changed files and the deletions only, and leaves files hdiff does not manage alone."""
    push_dataset(build, REPO)
    (first,) = hub.commits
    assert sorted(first["paths"]) == sorted(local_files(build)) and first["summary"] == "hdiff build v1: 2 shards"
    assert hub.repos[REPO].tags == {"v1": first["oid"]}
    HfApi(token=TOKEN).upload_file(path_or_fileobj=b"CC-BY-4.0\n", path_in_repo="LICENSE", repo_id=REPO,
                                   repo_type="dataset")  # the owner's own file

    push_dataset(build, REPO)
    assert len(hub.commits) == 2 and hub.repos[REPO].tags == {"v1": first["oid"]}  # nothing new: no commit, no tag

    commit_version(build, [1, 2], removed=(0,))
    assert verify_build(build) == []
    push_dataset(build, REPO)
    second = hub.commits[-1]
    gone = [f"data/{NAMES[0]}.parquet", f"data/{NAMES[0]}.tar", f"stats/{NAMES[0]}.json"]
    assert sorted(second["paths"]) == sorted(gone + [f"data/{NAMES[2]}.parquet", f"data/{NAMES[2]}.tar",
                                                     f"stats/{NAMES[2]}.json", "README.md", "data/sizes.json",
                                                     "grid.png", "manifest.json", "hdiff.yaml"])
    assert second["deleted"] == gone and second["summary"] == "hdiff build v2: 2 shards"
    assert hub.repos[REPO].tags == {"v1": first["oid"], "v2": second["oid"]}
    assert hub.files(REPO) == {**local_files(build), "LICENSE": b"CC-BY-4.0\n"}


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


@pytest.mark.parametrize(("fault", "complaint"), [
    ("no manifest", "is not an hdiff build: no manifest.json$"),
    ("no tars", f"fails verification, nothing pushed: stats/{NAMES[0]}.json: its tar data/{NAMES[0]}.tar is missing"),
    ("no stats", f"fails verification, nothing pushed: data/{NAMES[1]}.tar: has no stats file"),
    ("a killed commit's shard", "fails verification, nothing pushed: data/shard-0123456789abcdef.parquet: a shard "
                                "manifest.json does not list"),
    ("a stray file", "fails verification, nothing pushed: config.yaml: unexpected entry"),
    ("an edited figure", "fails verification, nothing pushed: manifest.json: totals.tar_bytes="),
])
def test_push_refuses_what_verify_rejects(build, hub, fault, complaint):
    """Publish = verified: a dataset verify rejects is not pushed, and the message is verify's first problem."""
    if fault == "no manifest":
        layout.manifest_path(build).unlink()
    elif fault == "no tars":
        for tar in (build / "data").glob("*.tar"):
            tar.unlink()
    elif fault == "no stats":
        layout.stats_path(build, NAMES[1]).unlink()
    elif fault == "a killed commit's shard":  # finished by a run killed before its commit: not the dataset's
        write_shard(build, "shard-0123456789abcdef", fake_samples(2), device="cpu")
    elif fault == "a stray file":
        (build / "config.yaml").write_text("not for the Hub\n")
    else:
        manifest = Manifest.read(build)
        manifest.totals.tar_bytes += 1
        manifest.write(build)
    with pytest.raises(HdiffError, match=complaint) as caught:
        push_dataset(build, REPO)
    assert "\n" not in str(caught.value)
    assert hub.requests == []


def test_push_waits_for_a_run_to_finish(build, hub):
    with exclusive_lock(layout.lock_path(build), "output folder"):
        with pytest.raises(HdiffError, match=r"is being changed by a run \(pid \d+ on .*\); push it when the run "):
            push_dataset(build, REPO)
    assert hub.requests == []
    push_dataset(build, REPO)
    assert hub.files(REPO) == local_files(build)


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


# ---------------------------------------------------------------------------------------------------- pull


def test_pull_gives_each_pushed_version_and_a_push_from_the_pulled_folder_commits_only_the_change(build, hub,
                                                                                                tmp_path):
    """v1 pushed, pulled into a new folder (verified there), grown to v2 and pushed from that folder: the commit
    holds the new shard and the changed metadata only; pulling v1 again gives v1's bytes."""
    from hdiff.pull import pull_dataset

    push_dataset(build, REPO)
    v1 = local_files(build)
    pulled = pull_dataset(REPO, tmp_path / "pulled")
    assert verify_build(pulled) == [] and local_files(pulled) == v1
    assert sorted(p.relative_to(pulled).as_posix() for p in pulled.rglob("*") if p.is_file()) == sorted(v1)

    commit_version(pulled, [0, 1, 2])
    push_dataset(pulled, REPO)
    second = hub.commits[-1]
    assert sorted(second["paths"]) == sorted([f"data/{NAMES[2]}.tar", f"data/{NAMES[2]}.parquet",
                                              f"stats/{NAMES[2]}.json", "README.md", "data/sizes.json", "grid.png",
                                              "manifest.json", "hdiff.yaml"])
    assert second["deleted"] == [] and set(hub.repos[REPO].tags) == {"v1", "v2"}

    again = pull_dataset(f"{REPO}@v1", tmp_path / "v1-again")
    assert local_files(again) == v1 and Manifest.read(again).versions[-1].version == 1
    latest = pull_dataset(REPO, tmp_path / "latest")
    assert local_files(latest) == local_files(pulled)


def test_pull_refuses_an_existing_folder_and_an_unknown_revision_leaving_nothing(build, hub, tmp_path):
    from hdiff.pull import pull_dataset

    push_dataset(build, REPO)
    (tmp_path / "taken").mkdir()
    with pytest.raises(HdiffError, match="already exists"):
        pull_dataset(REPO, tmp_path / "taken")
    with pytest.raises(HdiffError, match=f"pulling {REPO}@v9 failed") as error:
        pull_dataset(f"{REPO}@v9", tmp_path / "nine")
    assert "\n" not in str(error.value) and TOKEN not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "hf-home") == ["out", "taken"]
    with pytest.raises(HdiffError, match="OWNER/NAME"):
        pull_dataset("no-owner", tmp_path / "x")


def test_nothing_machine_specific_is_pushed(build, hub):
    """Every pushed byte (tars and parquet included) is free of the build's absolute path, the user's name and the
    token; hdiff.yaml says `output: .`."""
    import getpass

    push_dataset(build, REPO)
    needles = [str(build).encode(), str(Path.home()).encode(), TOKEN.encode(), f"/{getpass.getuser()}/".encode()]
    for path, data in hub.files(REPO).items():
        found = [needle for needle in needles if needle in data]
        assert not found, (path, found)
    assert b"\noutput: .\n" in hub.files(REPO)["hdiff.yaml"]
