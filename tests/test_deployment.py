"""prefect.yaml against a real local Prefect API server (SQLite; the session's, tests/conftest.py): deploy, start a
worker, run with --param, check the tars.

Every process started here (the worker, and the flow-run processes under it) is stopped by its pid at the end.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from hdiff.dataset.verify import verify_build

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOLS = ("hdiff-cpu", "hdiff-gpu")


class Processes:
    """Long-running commands in their own sessions, logged to files, stopped newest first."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs, self.started = env, logs, []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        process = subprocess.Popen([str(BIN / "prefect"), *args], cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.started.append((name, process))
        return process

    def log_tail(self, name: str, lines: int = 40) -> str:
        text = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
        return f"--- {name} log ---\n" + "\n".join(text[-lines:])

    def stop_all(self) -> None:
        for _, process in reversed(self.started):
            stop(process)


def stop(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to the process's group and to its descendants (flow runs get their own sessions), then SIGKILL."""
    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    _signal_group(process.pid, signal.SIGTERM)
    for member in family[1:]:
        _signal(member, signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=grace)
    _signal_group(process.pid, signal.SIGKILL)
    for member in alive:
        _signal(member, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)
    process.wait(timeout=5)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _signal(member: psutil.Process, sig: int) -> None:
    try:
        member.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


def prefect(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """A short prefect CLI command; its output, or a failure showing it."""
    done = subprocess.run([str(BIN / "prefect"), *args], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def wait_for(check, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := check()) is not None:
            return value
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def prefect_server(prefect_api, tmp_path):
    """The session's Prefect API server, with this test's own PREFECT_HOME for the CLI and the worker; yields (env,
    processes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=prefect_api,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1",
               PREFECT_WORKER_QUERY_SECONDS="1")
    processes = Processes(env, tmp_path)
    try:
        yield env, processes
    finally:
        processes.stop_all()


def flow_run_state(api_url: str, flow_run_id: str) -> str:
    return httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=10).json()["state"]["type"]


def write_revision(folder: Path, prompts: list[str], part: int) -> None:
    """One more parquet file in a local dataset folder: the corpus's next revision."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(exist_ok=True)
    pq.write_table(pa.table({"prompt": prompts}), folder / f"train-{part:05d}.parquet")


def test_demo_deployment_runs_and_reruns_over_a_grown_corpus(tmp_path, prefect_server, tiny_shapes):
    """The scheduled path: deploy, run the deployment, add a revision to the corpus, run it again. The dataset ends
    with every prompt once and the second version's compute covers only the new prompts."""
    env, processes = prefect_server
    api_url = env["PREFECT_API_URL"]
    runs_before = httpx.post(f"{api_url}/flow_runs/count", json={}, timeout=10).json()  # the session's builds
    out, corpus = tmp_path / "out", tmp_path / "corpus"
    prompts = [json.loads(line)["prompt"] for line in (REPO / "tests/data/prompts96.jsonl").read_text().splitlines()]
    write_revision(corpus, prompts[:12], 0)
    overrides = {"model.id": tiny_shapes, "output": str(out),
                 "source.path_or_id": str(corpus), "embedding.cache_dir": str(tmp_path / "embeddings"), "sharding.min_size": 4,
                 "sharding.max_size": 8, "generation.tau": 0.5}

    for pool in POOLS:
        prefect(env, "work-pool", "create", pool, "--type", "process")
    processes.start("worker", "worker", "start", "--pool", "hdiff-cpu")  # starts up while the deploy runs
    deployed = prefect(env, "--no-prompt", "deploy", "--all", timeout=180)
    assert "build-dataset/demo" in deployed and "build-dataset/kandinsky22" in deployed

    # a parameter of the wrong type is refused by the server before a flow run exists
    refused = subprocess.run([str(BIN / "prefect"), "deployment", "run", "build-dataset/demo", "--param",
                              "overrides=[1, 2]"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "UUID" not in refused.stdout, refused.stdout + refused.stderr
    assert httpx.post(f"{api_url}/flow_runs/count", json={}, timeout=10).json() == runs_before

    def run_deployment() -> str:
        created = prefect(env, "deployment", "run", "build-dataset/demo", "--param",
                          f"overrides={json.dumps(overrides)}")
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", created).group(1)

        def finished() -> str | None:
            state = flow_run_state(api_url, flow_run_id)
            return state if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None

        try:
            state = wait_for(finished, timeout=240, what=f"flow run {flow_run_id} to finish", interval=0.5)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{processes.log_tail('worker')}") from None
        assert state == "COMPLETED", processes.log_tail("worker")
        assert verify_build(out) == []
        return httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=10).json()["name"]

    assert run_deployment() == "shapes-demo v1"  # configs/demo.yaml's name, and the version the run commits
    first = {path.name: path.read_bytes() for path in (out / "data").glob("*.tar")}
    assert len(first) >= 2
    write_revision(corpus, prompts[12:20], 1)
    assert run_deployment() == "shapes-demo v2"

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["generation"]["tau"] == 0.5
    from hdiff.prompts import prompt_id, sample_key

    keys = [key for row in manifest["shards"]
            for key in json.loads((out / "stats" / f"{row['shard']}.json").read_text())["keys"]]
    assert sorted(keys) == sorted(sample_key(prompt_id(p), 0) for p in prompts[:20])  # the union, each once
    v1, v2 = manifest["versions"]
    assert (v1["prompts_added"], v2["prompts_added"], v2["samples"]) == (12, 8, 20)
    added = [json.loads((out / "stats" / f"{name}.json").read_text()) for name in v2["shards_added"]]
    assert sum(s["samples"] for s in added) == 8 and v2["shards_removed"] == []
    assert v2["standard_rows"] == sum(s["standard_rows"] for s in added)  # run 2's compute: new prompts only
    assert {name: (out / "data" / name).read_bytes() for name in first} == first  # the first run's tars untouched

    demo = httpx.get(f"{api_url}/deployments/name/build-dataset/demo", timeout=10).json()
    assert demo["parameters"] == {"config_path": "configs/demo.yaml", "overrides": {}}
    assert [s["active"] for s in demo["schedules"]] == [False]
    assert demo["work_pool_name"] == "hdiff-cpu" and demo["enforce_parameter_schema"] is True
    assert demo["parameter_openapi_schema"]["properties"]["config"]["anyOf"][0] == {
        "$ref": "#/definitions/BuildConfig"}  # the UI's form
    gpu = httpx.get(f"{api_url}/deployments/name/build-dataset/kandinsky22", timeout=10).json()
    assert gpu["work_pool_name"] == "hdiff-gpu" and gpu["global_concurrency_limit"]["limit"] == 1
    assert gpu["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert demo["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
