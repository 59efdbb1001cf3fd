"""Shard tasks on a Ray cluster of two nodes started on this machine (`ray start --head` and `ray start --address`):
the shards spread over both nodes, one node is killed mid-build, and the dataset is still the uninterrupted one."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import torch

from hdiff.dataset import layout
from hdiff.dataset.config import apply_overrides, load_config
from hdiff.dataset.verify import verify_build
from hdiff.dataset.writer import read_stats

REPO = Path(__file__).resolve().parents[1]


def build(tmp_path: Path, runner: str, model: str, **overrides) -> Path:
    from flows.build_dataset import build_dataset_from_config

    out = tmp_path / runner
    config = apply_overrides(load_config(REPO / "configs/demo.yaml"), {
        "output": str(out), "source.path_or_id": str(REPO / "tests/data/prompts96.jsonl"),
        "embedding.cache_dir": str(tmp_path / "embeddings"), "model.id": model,
        "ingest.limit": 48, "sharding.min_size": 4, "sharding.max_size": 8, "runner.kind": runner, **overrides})
    build_dataset_from_config(config)
    return out


def build_on_one_thread(tmp_path: Path, model: str, **overrides) -> Path:
    """The local runner's build with torch on one thread, as each one-CPU Ray task runs (OMP_NUM_THREADS=1): CPU
    float results depend on the intra-op thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build(tmp_path, "local", model, **overrides)
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- two nodes, one lost


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def two_node_cluster(monkeypatch):
    """`ray start --head` and a second `ray start --address`, each a one-CPU node in its own process group on this
    machine, started in the background (the worker once the head listens); calling the fixture's value waits until
    both are up and gives (address, nodes). Afterwards each group is killed by its id, and every process under the
    cluster's temp folder by pid."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # Ray 2.60's head turns token auth on; this cluster is local
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's unix sockets live under it
    port = free_port()
    ray_cli = str(Path(sys.executable).with_name("ray"))
    common = ["--num-cpus=1", "--block", "--disable-usage-stats"]
    nodes: dict[str, subprocess.Popen] = {}

    def start_the_worker() -> None:
        wait_for(lambda: port_open(port), 120, "the head node's GCS")
        nodes["worker"] = subprocess.Popen([ray_cli, "start", f"--address=127.0.0.1:{port}", *common],
                                           start_new_session=True, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)

    def up() -> tuple[str, dict[str, subprocess.Popen]]:
        worker.result()
        wait_for(lambda: raylet_of(nodes["worker"]) is not None, 120, "the worker node's raylet")
        return f"127.0.0.1:{port}", nodes

    starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-start")
    try:
        nodes["head"] = subprocess.Popen(
            [ray_cli, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}", *common],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        worker = starter.submit(start_the_worker)
        yield up
    finally:
        starter.shutdown(wait=True)
        for node in nodes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait(timeout=60)
        leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(temp) in " ".join(p.info["cmdline"] or [])]
        for process in leftovers:  # Ray's workers run in process groups of their own
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(leftovers, timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not ready after {timeout} s"
        time.sleep(0.2)


def raylet_of(node: subprocess.Popen) -> psutil.Process | None:
    children = psutil.Process(node.pid).children(recursive=True)
    return next((p for p in children if p.name() == "raylet"), None)


def node_pids(node: subprocess.Popen) -> set[int]:
    """Every process of a node: its group's, and the workers its raylet started."""
    raylet = raylet_of(node)
    processes = psutil.Process(node.pid).children(recursive=True) + (raylet.children(recursive=True) if raylet else [])
    return {node.pid} | {p.pid for p in processes}


def worker_pid(out: Path, shard: str) -> int | None:
    stats = read_stats(out, shard)
    return int(stats.worker.rsplit(":", 1)[1]) if stats is not None and stats.worker else None


def warm_every_node(ray) -> None:
    """Import the build's code in one worker of each node, so that both start on the shards together (a fresh
    node's first task otherwise spends its first seconds importing torch and Prefect)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=1)
    def import_the_build() -> int:
        import flows.build_dataset  # noqa: F401
        import hdiff.dataset.pipeline  # noqa: F401

        return os.getpid()

    wait_for(lambda: sum(node["Alive"] for node in ray.nodes()) == 2, 120, "two live nodes")
    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    ray.get([import_the_build.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
             for node in nodes])


def test_a_node_lost_mid_build_is_retried_on_the_other(tmp_path, prefect_api, tiny_shapes, two_node_cluster):
    """Shards run on both nodes; while the worker node runs one, it is killed (its processes SIGKILLed); the shard
    is retried on the head, and the dataset is byte-identical to an uninterrupted build."""
    reference = build_on_one_thread(tmp_path, tiny_shapes)  # while the nodes start
    address, nodes = two_node_cluster()
    out = tmp_path / "ray"
    killed: dict[str, object] = {}

    def kill_the_worker_node_while_it_runs_a_shard():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and "pids" not in killed:
            pids = node_pids(nodes["worker"])
            if any(runs_a_shard(pid) for pid in pids):
                killed.update(pids=pids, shards_done=len(layout.stats_shards(out)))
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    import ray

    ray.init(address=address, log_to_driver=False)  # the flow's runner joins this driver, and its warm workers
    try:
        warm_every_node(ray)
        killer = threading.Thread(target=kill_the_worker_node_while_it_runs_a_shard, daemon=True)
        killer.start()
        build(tmp_path, "ray", tiny_shapes, **{"runner.ray_address": address})
        killer.join(timeout=60)
    finally:
        ray.shutdown()

    total = len(layout.tar_shards(reference))
    assert "pids" in killed and killed["shards_done"] < total, killed  # killed mid-build, mid-shard
    assert nodes["worker"].poll() is not None  # the node is gone
    on_the_lost_node = [s for s in layout.stats_shards(out) if worker_pid(out, s) in killed["pids"]]
    assert len(on_the_lost_node) <= killed["shards_done"]  # what it had not finished ran again on the head
    assert {name: layout.tar_path(out, name).read_bytes() for name in layout.tar_shards(out)} == \
        {name: layout.tar_path(reference, name).read_bytes() for name in layout.tar_shards(reference)}
    assert verify_build(out) == []


def runs_a_shard(pid: int) -> bool:
    """Whether a Ray worker is executing a shard task now (Ray titles a busy worker `ray::<task name>`)."""
    from flows.build_dataset import generate_shards_task

    try:
        return " ".join(psutil.Process(pid).cmdline()).startswith(f"ray::{generate_shards_task.name}")
    except psutil.Error:
        return False
