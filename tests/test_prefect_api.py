"""The Prefect API of `hdiff build` (flows/prefect_api.py): a configured API is used and nothing is started; else
a temporary server that dies with the build, kill -9 included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

import flows.prefect_api as prefect_api

REPO = Path(__file__).resolve().parents[1]

# A build's process as far as the server is concerned: it starts the server, says where, and waits to be killed.
HOLDER = """
import time
from flows.prefect_api import temporary_server
with temporary_server() as url:
    print(url, flush=True)
    time.sleep(600)
"""


def test_a_configured_api_is_used_and_nothing_is_started(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    def no_server(port):
        raise AssertionError("a server was started although PREFECT_API_URL is set")

    monkeypatch.setattr(prefect_api, "_start", no_server)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}), prefect_api.prefect_api() as url:
        assert url == "http://127.0.0.1:9/api"


@pytest.mark.subprocess
def test_a_build_refused_after_its_server_began_starting_stops_it(tmp_path, monkeypatch, capsys):
    """`hdiff build` checks its config and output folder, then starts the temporary server before its heavy imports
    and the other checks (so that they overlap): a folder it may not write is refused with no program started; a
    device the machine lacks is refused after, and the server it began is stopped. The server's process is a
    stand-in that records its start and waits (the real one's start is what the kill -9 test below covers)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hdiff.cli import main

    started = []

    def waiting_process(port):
        started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]))
        return started[-1]

    monkeypatch.setattr(prefect_api, "_start", waiting_process)
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("not a folder")

    def build(output, device):
        config = tmp_path / "build.yaml"
        config.write_text(f"name: refused\noutput: {output}\nsource: {{path_or_id: {REPO / 'data/demo_prompts.jsonl'}}}\n"
                          f"model: {{id: hdiff/shapes, device: '{device}'}}\n")
        with temporary_settings({PREFECT_API_URL: None}):
            return main(["build", str(config)])

    assert build(not_a_folder, "cpu") == 2 and str(not_a_folder) in capsys.readouterr().err
    assert started == []
    assert build(tmp_path / "out", "cuda:7") == 2 and "'cuda:7' is not on this machine" in capsys.readouterr().err
    (process,) = started
    assert process.poll() is not None, "the temporary server was left running after the build was refused"
    assert not (tmp_path / "out").exists()


@pytest.mark.subprocess
def test_the_temporary_server_dies_with_the_build_even_on_kill_9(tmp_path):
    environment = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    environment.update(PYTHONPATH=str(REPO), PREFECT_HOME=str(tmp_path / "prefect"))  # a throwaway database
    build = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=REPO, env=environment, stdout=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        url = build.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        (server,) = psutil.Process(build.pid).children()
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        os.kill(build.pid, signal.SIGKILL)  # the build alone, not its process group
        build.wait(timeout=30)
        gone, alive = psutil.wait_procs([server], timeout=30)
        assert alive == [], "the temporary Prefect server outlived the build"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=2)
    finally:
        try:
            os.killpg(build.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        build.wait(timeout=30)
