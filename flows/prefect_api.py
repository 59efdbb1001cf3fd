"""The Prefect API a build reports to: the one PREFECT_API_URL names, else a temporary local server the build owns.

Prefect would start its own temporary server when no API is configured, and stop it only at a clean exit: a
`kill -9` of the build left it running (about 200 MB each time). hdiff starts that server itself instead, the same
uvicorn app Prefect runs, tied to the build's process: a parent-death signal (Linux `prctl(PR_SET_PDEATHSIG)`, set
before the server's program starts) kills it when the build dies, however it dies; a clean exit stops it first.

An API that is already running (PREFECT_API_URL set, e.g. `prefect server start`) is used as it is and nothing is
started: a build then saves the server's start-up (see docs/speed.md).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from hdiff.errors import HdiffError

MIN_STARTUP_SECONDS = 120

# Runs in the server's process before uvicorn: ask the kernel for SIGKILL when the parent (the build) dies; exit if
# it died already (between the fork and the prctl). The signal survives the exec of uvicorn.
_TIED_TO_PARENT = """
import ctypes, os, signal, sys
parent = int(sys.argv[1])
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != parent:
    sys.exit(0)
os.execv(sys.executable, [sys.executable, "-m", "uvicorn", *sys.argv[2:]])
"""


def configured_api_url() -> str | None:
    """The API URL Prefect's settings name (PREFECT_API_URL, or the active profile's), None when none is set."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


class ApiStart:
    """A Prefect API on its way up: the configured one (nothing to start), else a temporary server whose process is
    started at construction, so that it boots while the caller imports and plans (`hdiff build` makes one before
    its heavy imports: the server's start-up, most of a small build's fixed cost, then overlaps them). Pass it to
    `prefect_api`, or `close` it when the run is refused before it starts. `use_configured=False`: a temporary
    server whatever API is configured."""

    def __init__(self, timeout: float | None = None, *, use_configured: bool = True):
        self.configured = configured_api_url() if use_configured else None
        self.process: subprocess.Popen | None = None
        self.port = 0
        if self.configured is None:
            from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

            self.timeout = timeout or max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(),
                                          MIN_STARTUP_SECONDS)
            self._launch()

    def _launch(self) -> None:
        self.port = _free_port()
        self.process = _start(self.port)

    @property
    def url(self) -> str:
        return self.configured or f"http://127.0.0.1:{self.port}/api"

    def wait_ready(self) -> str:
        """The API's URL once it answers; HdiffError when a temporary server does not within its timeout."""
        if self.configured is not None:
            return self.configured
        for attempt in range(3):  # another program may take the free port before the server binds it
            if attempt:
                _stop(self.process)
                self._launch()
            if _wait_healthy(self.process, self.url, self.timeout):
                return self.url
            if self.process.poll() is None:
                self.close()
                raise HdiffError(f"the temporary Prefect server did not answer within {self.timeout:g} s; set "
                                 "PREFECT_API_URL to a running server (`prefect server start`)")
        code = self.process.returncode
        self.close()
        raise HdiffError(f"the temporary Prefect server exited at start (code {code}); set PREFECT_API_URL to a "
                         "running server (`prefect server start`)")

    def close(self) -> None:
        """Stop the temporary server, if one was started."""
        if self.process is not None:
            _stop(self.process)


@contextlib.contextmanager
def prefect_api(start: ApiStart | None = None) -> Iterator[str]:
    """The API for the block: the configured one, else a temporary server (begun by `start`, or now) made the
    current settings' PREFECT_API_URL for the block (a Prefect settings context: the process's environment is
    untouched). The server is stopped when the block ends."""
    start = start or ApiStart()
    try:
        url = start.wait_ready()
        if start.configured is not None:
            yield url
            return
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _drain_prefect_workers()  # the run's last logs and events reach the server before it stops
    finally:
        start.close()


def _drain_prefect_workers() -> None:
    """Send what Prefect's log and event workers still hold, and stop them (as prefect_test_harness does before it
    stops its server): a server stopped first loses them, and each worker's retries delay the exit."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    try:
        APILogWorker.instance().drain()
    except RuntimeError:  # never started
        pass
    EventsWorker.drain_all(timeout=10)


@contextlib.contextmanager
def temporary_server(timeout: float | None = None) -> Iterator[str]:
    """A Prefect API server on a free local port, for the block, whatever API is configured; it dies with this
    process (see the module's docstring). Yields its API URL once it answers; HdiffError when it does not within
    `timeout` seconds (default: PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, at least MIN_STARTUP_SECONDS: a
    first start creates the database, which took 46 s on a busy 2-core machine)."""
    start = ApiStart(timeout, use_configured=False)
    try:
        yield start.wait_ready()
    finally:
        start.close()


def _start(port: int) -> subprocess.Popen:
    """The server process: Prefect's app under uvicorn, as Prefect starts its temporary server, tied to us."""
    import prefect
    from prefect.settings import get_current_settings

    environment = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                   "PREFECT__SERVER_FINAL": "1", **get_current_settings().to_environment_variables(exclude_unset=True)}
    environment.pop("PREFECT_API_URL", None)
    arguments = ["--app-dir", str(prefect.__module_path__.parent), "--factory", "prefect.server.api.server:create_app",
                 "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"]
    return subprocess.Popen([sys.executable, "-c", _TIED_TO_PARENT, str(os.getpid()), *arguments], env=environment,
                            stdin=subprocess.DEVNULL)


def _wait_healthy(process: subprocess.Popen, url: str, timeout: float) -> bool:
    """True once the server answers its health check; False when it exits or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
