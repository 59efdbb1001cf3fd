"""The real user's journey, against a real Hub-compatible server (tests/hub_server.py) reached through HF_ENDPOINT:
the README's real-model commands, run verbatim in a subprocess each (huggingface_hub reads HF_HUB_OFFLINE and
HF_ENDPOINT when it is imported).

Online with an empty cache they fetch the model (and its prior) and the corpus and run; offline with the now-warm
cache they give byte-identical images; offline with an empty cache they fail with one line naming the command that
fetches just what is needed, and once that command has run, they work offline.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
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


@pytest.fixture(scope="module")
def commands() -> dict[str, list[str]]:
    return readme_commands()


@pytest.fixture(scope="module")
def generated_online(hub_server, commands, tmp_path_factory) -> tuple[Path, Path, dict[str, bytes]]:
    """`hdiff generate --model kandinsky-community/kandinsky-2-2-decoder ...` online, from an empty cache:
    (work folder, HF home, the images' bytes)."""
    root, home = workdir(tmp_path_factory.mktemp("generate")), tmp_path_factory.mktemp("hf-home")
    succeeded(run(commands["generate"], cwd=root, home=home, hub=hub_server, offline=False))
    out = root / output_of(commands["generate"])
    return root, home, folder_bytes(out.rename(out.with_name("online")), "images/*.png")


def output_of(words: list[str]) -> str:
    return words[words.index("--out") + 1]


def test_generate_online_from_a_cold_cache_records_revisions(hub_server, commands, generated_online):
    root, home, images = generated_online
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


@pytest.mark.parametrize("model_id, pipeline_class", [(STABLE_UNCLIP, "StableUnCLIPPipeline"),
                                                     (STABLE_DIFFUSION, "StableDiffusionPipeline")])
def test_other_hub_models_download_from_a_cold_cache_and_run(hub_server, tmp_path, model_id, pipeline_class):
    """The Stable unCLIP and Stable Diffusion repos on the server: fetched by id, safetensors only, and run."""
    root, home = workdir(tmp_path / "work"), tmp_path / "hf-home"
    words = ["hdiff", "generate", "--model", model_id, "--prompts", "data/prompts/demo.jsonl", "--steps", "3",
             "--tau", "0.5", "--out", "out/model"]
    succeeded(run(words, cwd=root, home=home, hub=hub_server, offline=False))
    report = json.loads((root / "out" / "model" / "report.json").read_text())
    assert len(report["images"]) == len(list((root / "out" / "model" / "images").glob("*.png"))) == 6
    record = report["images"][0]
    assert record["model"] == model_id and record["pipeline_class"] == pipeline_class
    assert record["model_revision"] == hub_server.commits[model_id]
    assert (record["height"], record["width"]) == (16, 16)  # as the stock pipeline: UNet sample_size 8 × VAE scale 2
    fetched = cached_files(home, "model", model_id)
    assert "model_index.json" in fetched and not any(f.endswith((".bin", ".ckpt")) for f in fetched)


def test_generate_offline_warm_gives_the_same_bytes(hub_server, commands, generated_online):
    root, home, images = generated_online
    succeeded(run(commands["generate"], cwd=root, home=home, hub=hub_server, offline=True))
    assert folder_bytes(root / output_of(commands["generate"]), "images/*.png") == images


def test_generate_offline_cold_names_the_command_that_fetches_what_it_needs(hub_server, commands, generated_online,
                                                                            tmp_path):
    """The named command, run online, fetches every file the online run fetched and nothing more."""
    root, home = workdir(tmp_path / "work"), tmp_path / "hf-home"
    line = one_line_error(run(commands["generate"], cwd=root, home=home, hub=hub_server, offline=True))
    fetch = re.search(r"`(hf download [^`]+)`", line).group(1)
    assert [shlex.split(part)[2] for part in fetch.split(" && ")] == [KANDINSKY_DECODER, KANDINSKY_PRIOR], line
    succeeded(run(["bash", "-c", fetch], cwd=root, home=home, hub=hub_server, offline=False))  # a connected machine
    online_home = generated_online[1]
    for repo_id in (KANDINSKY_DECODER, KANDINSKY_PRIOR):
        assert cached_files(home, "model", repo_id) == cached_files(online_home, "model", repo_id), repo_id


# ---------------------------------------------------------------------------------------------------- the build


@pytest.fixture(scope="module")
def built_online(hub_server, commands, prefect_api, tmp_path_factory) -> tuple[Path, Path, Path]:
    """`hdiff build configs/kandinsky22.yaml` online, from an empty cache: (work folder, HF home, output)."""
    root, home = workdir(tmp_path_factory.mktemp("build")), tmp_path_factory.mktemp("hf-home")
    succeeded(run(commands["build"], cwd=root, home=home, hub=hub_server, offline=False, prefect_api=prefect_api))
    return root, home, root / "out" / "parti-kandinsky22"


def test_build_online_records_provenance_and_writes_sidecars(hub_server, built_online):
    import datasets
    import pandas as pd

    root, home, out = built_online
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
    assert len(table) == 12 and {"key", "prompt", "seed", "tau", "unet_rows", "cluster_path_length",
                                 "source_row", "source_Category", "source_Challenge"} <= set(table.columns)
    assert json.loads((out / "data" / "sizes.json").read_text()) == {f"{shard}.tar": 12}
    records = datasets.load_dataset(str(out), split="train", cache_dir=str(root / "datasets-cache"))
    record = records[0]["json"]
    assert record["source"]["revision"] == hub_server.commits[PARTI_PROMPTS]
    assert record["source"]["columns"]["Category"] == table.set_index("key").loc[record["key"], "source_Category"]
    metadata = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train",
                                     cache_dir=str(root / "datasets-cache"))
    assert sorted(metadata["key"]) == sorted(records["__key__"])


def test_build_offline_warm_gives_the_same_tars(hub_server, commands, prefect_api, built_online):
    root, home, out = built_online
    online = folder_bytes(out.rename(out.with_name("online")), "data/*")
    succeeded(run(commands["build"], cwd=root, home=home, hub=hub_server, offline=True, prefect_api=prefect_api))
    assert folder_bytes(out, "data/*") == online


def test_build_offline_cold_names_the_model_and_corpus_commands(hub_server, commands, tmp_path):
    root, home = workdir(tmp_path / "work"), tmp_path / "hf-home"
    line = one_line_error(run(commands["build"], cwd=root, home=home, hub=hub_server, offline=True))
    fetch = re.search(r"`(hf download [^`]+)`", line).group(1)
    assert [shlex.split(p)[2] for p in fetch.split(" && ")] == [KANDINSKY_DECODER, KANDINSKY_PRIOR, PARTI_PROMPTS]
    assert not (root / "out").exists()
