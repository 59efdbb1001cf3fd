"""`runner: {kind: ray}` writes the same tars as the default runner, on a local Ray instance started here."""

from pathlib import Path

import psutil
import pytest
import torch

from hdiff.dataset.config import apply_overrides, load_config
from tiny_models import tiny_shapes_model

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def prefect_api():
    """A temporary Prefect API (SQLite) for this test, stopped at its end.

    Importing the flow here sets up Prefect's console logging outside the test's output capture.
    """
    import flows.build_dataset  # noqa: F401
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def local_ray():
    """A 2-CPU Ray instance of this process; afterwards every process it started (raylet, GCS, workers) is gone."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        started = [p for p in psutil.Process().children(recursive=True) if _is_ray_process(p)]
        ray.shutdown()
        _, alive = psutil.wait_procs(started, timeout=30)
        for process in alive:
            process.kill()
        assert not alive, f"still running after ray.shutdown(): {[p.pid for p in alive]}"


def _is_ray_process(process: psutil.Process) -> bool:
    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return False
    return any(mark in command for mark in ("raylet", "gcs_server", "ray::", "/ray/"))


def build(tmp_path: Path, runner: str) -> Path:
    from flows.build_dataset import build_dataset_from_config

    out = tmp_path / runner
    config = apply_overrides(load_config(REPO / "configs/demo.yaml"), {
        "output": str(out), "source.path_or_id": str(REPO / "data/demo_prompts.jsonl"),
        "embedding.cache_dir": str(tmp_path / "embeddings"), "model.id": tiny_shapes_model(tmp_path / "model"),
        "ingest.limit": 24, "sharding.min_size": 4, "sharding.max_size": 8, "runner.kind": runner})
    build_dataset_from_config(config)
    return out


def test_ray_runner_writes_the_same_tars_as_the_default_runner(tmp_path, prefect_api, local_ray):
    # CPU float results depend on the intra-op thread count; a one-CPU Ray task runs with OMP_NUM_THREADS=1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = build(tmp_path, "local")
    finally:
        torch.set_num_threads(threads)
    on_ray = build(tmp_path, "ray")

    tars = sorted(p.name for p in (local / "data").glob("*.tar"))
    assert len(tars) >= 2, "the corpus should make several shards, so that Ray runs them in parallel"
    assert sorted(p.name for p in (on_ray / "data").glob("*.tar")) == tars
    for name in tars:
        assert (on_ray / "data" / name).read_bytes() == (local / "data" / name).read_bytes(), name
