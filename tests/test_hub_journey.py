"""The real user's journey, against a real Hub-compatible server (tests/hub_server.py) reached through HF_ENDPOINT:
the README's real-model commands, run verbatim in a subprocess each (huggingface_hub reads HF_HUB_OFFLINE and
HF_ENDPOINT when it is imported).

Online with an empty cache they fetch the model (and its prior) and the corpus and run; offline with the now-warm
cache they give byte-identical images; offline with an empty cache they fail with one line naming the command that
fetches just what is needed, and once that command has run, they work offline.

The runs are started together when the module starts, on two lanes (this machine's two cores; each lane one run at
a time), and each test waits for the runs it reads. The lanes never fetch the same repository at once: the Kandinsky
repositories are fetched online by one lane only.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from hub_server import (KANDINSKY_DECODER, KANDINSKY_PRIOR, PARTI_PROMPTS, PICKLE_DECOY, STABLE_DIFFUSION,
                        STABLE_UNCLIP)

from hdiff.dataset import layout

pytestmark = pytest.mark.subprocess  # every test runs the README's commands in a subprocess

REPO = Path(__file__).resolve().parents[1]
README_MARK = "<!-- tests/test_hub_journey.py runs these commands -->"
RUN_TIMEOUT_S = 300


def readme_commands() -> dict[str, list[str]]:
    """The commands in the README's marked block, by subcommand (`generate`, `build`)."""
    block = REPO.joinpath("README.md").read_text(encoding="utf-8").split(README_MARK, 1)[1].split("```")[1]
    commands = [shlex.split(line, comments=True) for line in block.splitlines()[1:]]
    return {words[1]: words for words in commands if words}


def run(words: list[str], *, cwd: Path, home: Path, hub, offline: bool,
        prefect_api: str | None = None) -> subprocess.CompletedProcess:
    """`hdiff ...` or `hf ...` as a user's shell finds them, with this HF cache, online or offline."""
    flag = "1" if offline else "0"
    env = {**os.environ, "HF_HOME": str(home), "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": flag,
           "HF_DATASETS_OFFLINE": flag, "TRANSFORMERS_OFFLINE": flag, "PYTHONPATH": str(REPO),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # this venv's hdiff and hf
           "OMP_NUM_THREADS": "1"}  # tiny models: threads only add overhead on a shared machine
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    return subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)


def workdir(root: Path) -> Path:
    """A folder laid out as the repository for the commands' relative paths (prompts, configs)."""
    for relative in ("data/prompts/demo.jsonl", "configs/kandinsky22.yaml"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / relative, root / relative)
    return root


def succeeded(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-4000:]


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("hdiff: ")]
    assert len(lines) == 1, result.stderr[-4000:]
    return lines[0]


def folder_bytes(folder: Path, pattern: str) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.glob(pattern))}


def cached_files(home: Path, kind: str, repo_id: str) -> set[str]:
    snapshots = home / "hub" / f"{kind}s--{repo_id.replace('/', '--')}" / "snapshots"
    return {p.relative_to(snapshot).as_posix() for snapshot in snapshots.iterdir() for p in snapshot.rglob("*")
            if p.is_file()}


def output_of(words: list[str]) -> str:
    return words[words.index("--out") + 1]


def other_model_words(model_id: str) -> list[str]:
    return ["hdiff", "generate", "--model", model_id, "--prompts", "data/prompts/demo.jsonl", "--steps", "3",
            "--tau", "0.5", "--out", "out/model"]


OTHER_MODELS = [(STABLE_UNCLIP, "StableUnCLIPPipeline"), (STABLE_DIFFUSION, "StableDiffusionPipeline")]


@pytest.fixture(scope="module")
def commands() -> dict[str, list[str]]:
    return readme_commands()


@pytest.fixture(scope="module")
def journey(hub_server, commands, prefect_api, tmp_path_factory) -> dict[str, Future]:
    """Every run of the module, started now on two lanes: name -> Future of what the run's test reads.

    Lane 1 fetches the Kandinsky repositories online (generate, then `hf download`, then build); lane 2 fetches the
    other models and runs everything offline, waiting for lane 1's online runs where it reruns them offline.
    """
    folder = tmp_path_factory.mktemp

    def generate_online():
        """`hdiff generate --model kandinsky-community/kandinsky-2-2-decoder ...` online, from an empty cache:
        (result, work folder, HF home, the images' bytes)."""
        root, home = workdir(folder("generate")), folder("hf-home")
        result = run(commands["generate"], cwd=root, home=home, hub=hub_server, offline=False)
        out = root / output_of(commands["generate"])
        images = folder_bytes(out.rename(out.with_name("online")), "images/*.png") if out.is_dir() else {}
        return result, root, home, images

    def generate_offline_cold():
        """Offline with an empty cache, then the `hf download` its error names, run online: (result, download result
        or None, HF home)."""
        root, home = workdir(folder("cold-generate")), folder("hf-home")
        result = run(commands["generate"], cwd=root, home=home, hub=hub_server, offline=True)
        match = re.search(r"`(hf download [^`]+)`", result.stderr)
        fetched = None
        if match:  # a connected machine
            fetched = run(["bash", "-c", match.group(1)], cwd=root, home=home, hub=hub_server, offline=False)
        return result, fetched, home

    def build_online():
        """`hdiff build configs/kandinsky22.yaml` online, from an empty cache: (result, work folder, HF home, its
        output, moved aside to out/online for the offline rerun)."""
        root, home = workdir(folder("build")), folder("hf-home")
        result = run(commands["build"], cwd=root, home=home, hub=hub_server, offline=False, prefect_api=prefect_api)
        out = root / "out" / "parti-kandinsky22"
        return result, root, home, out.rename(out.with_name("online")) if out.is_dir() else out

    def other_model(model_id: str):
        root, home = workdir(folder("other")), folder("hf-home")
        return run(other_model_words(model_id), cwd=root, home=home, hub=hub_server, offline=False), root, home

    def generate_offline_warm():
        result, root, home, _ = runs["generate online"].result()
        return run(commands["generate"], cwd=root, home=home, hub=hub_server, offline=True)

    def build_offline_cold():
        root, home = workdir(folder("cold-build")), folder("hf-home")
        return run(commands["build"], cwd=root, home=home, hub=hub_server, offline=True), root

    def build_offline_warm():
        """The same command offline, once the online build is done: (result, its output)."""
        _, root, home, _ = runs["build online"].result()
        result = run(commands["build"], cwd=root, home=home, hub=hub_server, offline=True, prefect_api=prefect_api)
        return result, root / "out" / "parti-kandinsky22"

    online, offline = (ThreadPoolExecutor(max_workers=1, thread_name_prefix=name) for name in ("online", "offline"))
    runs: dict[str, Future] = {}
    try:
        runs["generate online"] = online.submit(generate_online)
        for model_id, _ in OTHER_MODELS:
            runs[model_id] = offline.submit(other_model, model_id)
        runs["generate offline cold"] = online.submit(generate_offline_cold)
        runs["build offline cold"] = offline.submit(build_offline_cold)
        runs["build online"] = online.submit(build_online)
        runs["generate offline warm"] = offline.submit(generate_offline_warm)
        runs["build offline warm"] = offline.submit(build_offline_warm)
        yield runs
    finally:
        for lane in (online, offline):
            lane.shutdown(wait=True, cancel_futures=True)


def test_generate_online_from_a_cold_cache_records_revisions(hub_server, journey):
    result, root, home, images = journey["generate online"].result()
    succeeded(result)
    assert len(images) == 6
    record = json.loads((root / "out" / "online" / "report.json").read_text())["images"][0]
    assert record["model"] == KANDINSKY_DECODER and record["prior"] == KANDINSKY_PRIOR
    assert record["model_revision"] == hub_server.commits[KANDINSKY_DECODER]
    assert record["prior_revision"] == hub_server.commits[KANDINSKY_PRIOR]
    assert record["pipeline_class"] == "KandinskyV22Pipeline" and record["scheduler"] == "DDPMScheduler"
    assert (record["height"], record["width"]) == (16, 16)  # the model's own size: its sample_size × MoVQ scale
    # the prior loads as a pipeline: diffusers asked for the repo info olah's mirrors lack, and the front forwarded it
    assert f"/api/models/{KANDINSKY_PRIOR}" in hub_server.forwarded
    assert PICKLE_DECOY not in cached_files(home, "model", KANDINSKY_DECODER)  # safetensors only


@pytest.mark.parametrize("model_id, pipeline_class", OTHER_MODELS)
def test_other_hub_models_download_from_a_cold_cache_and_run(hub_server, journey, model_id, pipeline_class):
    """The Stable unCLIP and Stable Diffusion repos on the server: fetched by id, safetensors only, and run."""
    result, root, home = journey[model_id].result()
    succeeded(result)
    report = json.loads((root / "out" / "model" / "report.json").read_text())
    assert len(report["images"]) == len(list((root / "out" / "model" / "images").glob("*.png"))) == 6
    record = report["images"][0]
    assert record["model"] == model_id and record["pipeline_class"] == pipeline_class
    assert record["model_revision"] == hub_server.commits[model_id]
    assert (record["height"], record["width"]) == (16, 16)  # as the stock pipeline: UNet sample_size 8 × VAE scale 2
    fetched = cached_files(home, "model", model_id)
    assert "model_index.json" in fetched and not any(f.endswith((".bin", ".ckpt")) for f in fetched)


def test_generate_offline_warm_gives_the_same_bytes(commands, journey):
    _, root, _, images = journey["generate online"].result()
    succeeded(journey["generate offline warm"].result())
    assert folder_bytes(root / output_of(commands["generate"]), "images/*.png") == images


def test_generate_offline_cold_names_the_command_that_fetches_what_it_needs(journey):
    """The named command, run online, fetches every file the online run fetched and nothing more."""
    result, fetched, home = journey["generate offline cold"].result()
    line = one_line_error(result)
    fetch = re.search(r"`(hf download [^`]+)`", line).group(1)
    assert [shlex.split(part)[2] for part in fetch.split(" && ")] == [KANDINSKY_DECODER, KANDINSKY_PRIOR], line
    succeeded(fetched)
    online_home = journey["generate online"].result()[2]
    for repo_id in (KANDINSKY_DECODER, KANDINSKY_PRIOR):
        assert cached_files(home, "model", repo_id) == cached_files(online_home, "model", repo_id), repo_id


# ---------------------------------------------------------------------------------------------------- the build


def test_build_online_records_provenance_and_writes_sidecars(hub_server, journey):
    import datasets
    import pandas as pd

    result, root, home, out = journey["build online"].result()
    succeeded(result)
    manifest = json.loads(layout.manifest_path(out).read_text())
    provenance = manifest["provenance"]
    assert "oracle_accuracy" not in manifest["totals"]  # no oracle for Kandinsky: absent, not zero
    assert provenance["source"]["dataset"] == PARTI_PROMPTS
    assert provenance["source"]["revision"] == hub_server.commits[PARTI_PROMPTS]
    assert provenance["model"] == {"id": KANDINSKY_DECODER, "revision": hub_server.commits[KANDINSKY_DECODER],
                                   "pipeline_class": "KandinskyV22Pipeline"}
    assert provenance["prior"]["revision"] == hub_server.commits[KANDINSKY_PRIOR]
    for name in (layout.MANIFEST_NAME, layout.CARD_NAME):  # no local absolute paths
        assert str(root) not in (out / name).read_text(), name
    (shard,) = [row["shard"] for row in manifest["shards"]]
    table = pd.read_parquet(out / "data" / f"{shard}.parquet")
    assert len(table) == 12 and {"key", "prompt", "seed", "tau", "unet_rows", "cluster_path_length", "source.row",
                                 "source.columns.Category", "source.columns.Challenge"} <= set(table.columns)
    assert json.loads((out / "data" / "sizes.json").read_text()) == {f"{shard}.tar": 12}
    records = datasets.load_dataset(str(out), split="train", cache_dir=str(root / "datasets-cache"))
    record = records[0]["json"]
    assert record["source"]["revision"] == hub_server.commits[PARTI_PROMPTS]
    row = table.set_index("key").loc[record["key"]]
    assert record["source"]["columns"]["Category"] == row["source.columns.Category"]
    metadata = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train",
                                     cache_dir=str(root / "datasets-cache"))
    assert sorted(metadata["key"]) == sorted(records["__key__"])


def test_build_offline_warm_gives_the_same_tars(journey):
    _, _, _, online = journey["build online"].result()
    result, out = journey["build offline warm"].result()
    succeeded(result)
    assert folder_bytes(out, "data/*") == folder_bytes(online, "data/*") != {}


def test_build_offline_cold_names_the_model_and_corpus_commands(journey):
    result, root = journey["build offline cold"].result()
    line = one_line_error(result)
    fetch = re.search(r"`(hf download [^`]+)`", line).group(1)
    assert [shlex.split(p)[2] for p in fetch.split(" && ")] == [KANDINSKY_DECODER, KANDINSKY_PRIOR, PARTI_PROMPTS]
    assert not (root / "out").exists()
