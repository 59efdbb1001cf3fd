"""What the whole suite shares: the environment, the marks that split the fast loop from the rest, and the expensive
setup made once per session (a Prefect server, the Hub-compatible server, the tiny shapes model, the shipped model).

Marks (pyproject.toml registers them; `make test-fast` deselects `slow`):
- `server`: starts a server process: the Prefect API, the Hub-compatible server (olah), a Ray cluster;
- `subprocess`: starts another program (a build to kill, a fresh interpreter; a fork of this one, as a DataLoader's
  workers, is not counted);
- `shipped`: loads the shipped shapes model (hdiff/shapes/weights);
- `slow`: any of the three, added here; `-m "not slow"` is the fast loop.
`server` and `shipped` are added from the fixtures a test uses (SERVER_FIXTURES, SHIPPED_FIXTURES), so they cannot be
forgotten; a test that starts a process or opens the shipped weights without its mark fails at teardown (an audit
hook watches for both).
"""

import contextlib
import hashlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# torch on one intra-op thread, here and in every process the tests start (set before torch loads): the tiny models
# gain nothing from threads, and on a busy 2-core machine two spinning threads made the suite take twice the CPU
# time; one count everywhere also keeps in-process and subprocess builds byte-comparable
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
sys.path.insert(0, str(Path(__file__).parent))


# datasets and Prefect bind their log handlers to the stderr of the moment they are first imported: import them here,
# outside any test's captured (and later closed) stream (a handler writing to a closed stream prints the record's
# arguments as a "Logging error", tokens included)
import datasets  # noqa: E402,F401
import prefect  # noqa: E402,F401


import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED_WEIGHTS = str(REPO / "hdiff" / "shapes" / "weights")

SERVER_FIXTURES = {"prefect_api", "hub_server", "prefect_server", "two_node_cluster"}
SHIPPED_FIXTURES = {"shipped", "shipped_reader"}
SLOW_MARKS = ("server", "subprocess", "shipped")


# ---------------------------------------------------------------------------------------------------- marks


def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & SERVER_FIXTURES:
            item.add_marker("server")
        if used & SHIPPED_FIXTURES:
            item.add_marker("shipped")
        if any(item.get_closest_marker(name) for name in SLOW_MARKS):
            item.add_marker("slow")


class _Watch:
    """What the running test did that its marks must admit: processes started, shipped weights opened."""

    item = None
    processes: list[str] = []
    shipped: list[str] = []


# a program started (not a fork of this interpreter: a DataLoader's workers are cheap and stay in the fast loop)
PROCESS_EVENTS = {"subprocess.Popen", "os.posix_spawn", "os.spawn", "os.exec", "os.system"}


def _audit(event: str, args: tuple) -> None:
    if _Watch.item is None:
        return
    if event in PROCESS_EVENTS:
        _Watch.processes.append(f"{event} {str(args[:2])[:200]}")
    elif event == "open" and args and isinstance(args[0], (str, os.PathLike)):
        path = os.fspath(args[0])
        if isinstance(path, str) and os.path.abspath(path).startswith(SHIPPED_WEIGHTS):
            _Watch.shipped.append(path)


platform.processor()  # cached: its one `uname -p` runs now, not in whichever test first asks for the machine
sys.addaudithook(_audit)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _Watch.item, _Watch.processes, _Watch.shipped = item, [], []
    try:
        yield
    finally:
        _Watch.item = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    problems = []
    if _Watch.processes and not (item.get_closest_marker("subprocess") or item.get_closest_marker("server")):
        problems.append(f"started a process without the `subprocess` mark: {_Watch.processes[0]}")
    if _Watch.shipped and not item.get_closest_marker("shipped"):
        problems.append(f"opened the shipped weights without the `shipped` mark: {_Watch.shipped[0]}")
    _Watch.processes, _Watch.shipped = [], []
    if problems:
        pytest.fail(f"{item.nodeid}: " + "; ".join(problems) + " (the fast loop, `make test-fast`, must not run it)",
                    pytrace=False)
    return result


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def one_torch_thread():
    """For a module of tiny-model runs where OMP_NUM_THREADS asked for more than one thread (it defaults to 1 here):
    they gain nothing from intra-op threads, and on a busy 2-core machine two spinning threads made them several
    times slower. Per module, not per session: a build compared byte for byte with one made in a subprocess must use
    the subprocess's thread count. Restored after the module."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory) -> str:
    """The tiny random-weight shapes model (tests/tiny_models.py), built once for the session: its folder. Read it,
    never write into it (copy it first: shutil.copytree); the session checks at its end that nothing changed."""
    from tiny_models import tiny_shapes_model

    folder = Path(tiny_shapes_model(tmp_path_factory.mktemp("tiny-shapes") / "model"))
    before = folder_digest(folder)
    yield str(folder)
    assert folder_digest(folder) == before, f"a test changed the shared tiny shapes model in {folder}"


@pytest.fixture(scope="session")
def shipped():
    """The shipped shapes model (hdiff/shapes/weights) on the CPU, loaded once for the session. Do not change it."""
    from hdiff.models import load_adapter

    return load_adapter("hdiff/shapes", device="cpu")


@pytest.fixture(scope="session")
def shipped_reader(shipped):
    """The shipped model's prompt reader (hdiff.shapes.reader), as the session's adapter loaded it."""
    reader = shipped.info["reader"]
    assert reader is not None
    return reader


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api_healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2).json() is True
    except (httpx.HTTPError, ValueError):
        return False


def drain_prefect_workers() -> None:
    """Send what Prefect's log and event workers still hold (prefect_test_harness does this before it stops)."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        try:
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        except RuntimeError:  # never started
            pass
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())


class PrefectServer:
    """The session's Prefect API server: uvicorn serving Prefect's app on a free port, SQLite in a temporary folder,
    in a process group of its own, stopped by that group's id. Started as soon as collection is done when a collected
    test uses `prefect_api` (it starts up while the tests before them run), else by the fixture (always, in a worker
    of pytest-xdist: `make test` runs whole files on two workers, and a worker starts the server when its first
    Prefect test runs)."""

    process: subprocess.Popen | None = None

    @classmethod
    def start(cls) -> None:
        if cls.process is not None:
            return
        cls.home = Path(tempfile.mkdtemp(prefix="hdiff-prefect-"))
        port = free_port()
        cls.url = f"http://127.0.0.1:{port}/api"
        env = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(cls.home),
                   PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{cls.home}/prefect.db",
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
                   PREFECT__SERVER_EPHEMERAL="1", PREFECT_LOGGING_SERVER_LEVEL="WARNING")
        with open(cls.home / "server.log", "wb") as log:
            cls.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app", "--host",
                 "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @classmethod
    def wait_until_up(cls, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while not api_healthy(cls.url):
            assert cls.process.poll() is None, f"the Prefect server exited:\n{cls.log_tail()}"
            assert time.monotonic() < deadline, f"no Prefect server after {timeout:.0f} s:\n{cls.log_tail()}"
            time.sleep(0.2)
        return cls.url

    @classmethod
    def log_tail(cls) -> str:
        return (cls.home / "server.log").read_text(errors="replace")[-3000:]

    @classmethod
    def stop(cls) -> None:
        if cls.process is None:
            return
        try:
            os.killpg(cls.process.pid, signal.SIGTERM)
            cls.process.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(cls.process.pid, signal.SIGKILL)
            cls.process.wait(timeout=20)
        cls.process = None
        shutil.rmtree(cls.home, ignore_errors=True)


def pytest_collection_finish(session):
    # a worker of pytest-xdist does not know yet whether it will run a Prefect test: its fixture starts the server
    if os.environ.get("PYTEST_XDIST_WORKER") is None and not session.config.option.collectonly and any(
            "prefect_api" in getattr(item, "fixturenames", ()) for item in session.items):
        PrefectServer.start()


def pytest_sessionfinish(session):
    PrefectServer.stop()  # when no test asked for it after all (an interrupted run); else the fixture did


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """The session's Prefect API server (PrefectServer) for the builds: in this process, in their subprocesses and
    on Ray workers; its URL.

    Importing the flow here sets up Prefect's console logging outside any test's output capture, whose stream closes
    when that test ends.
    """
    import flows.build_dataset  # noqa: F401
    import prefect.context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    PrefectServer.start()
    try:
        url = PrefectServer.wait_until_up()
        with contextlib.ExitStack() as stack:
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
            # also the process-wide default, for threads whose context was copied before this (as the harness does)
            settings = prefect.context.get_settings_context()
            stack.enter_context(prefect.context._temporary_global_settings_context(settings))
            yield url
            drain_prefect_workers()  # the logs and events still queued for this server, before it stops
    finally:
        PrefectServer.stop()


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    """The Hub-compatible server (tests/hub_server.py) with the tiny model repositories and the prompt corpus, one
    per session; `commits` maps each repo id (and the corpus's revisions) to its commit sha."""
    from hub_server import (PARTI_PROMPTS, PROMPT_DATASET, HubServer, build_corpus_repo, build_model_repos,
                            build_parti_repo)

    root = tmp_path_factory.mktemp("hub")
    mirrors = root / "mirrors"
    commits = build_model_repos(mirrors)
    commits.update({f"{PROMPT_DATASET}@{rev}": sha for rev, sha in build_corpus_repo(mirrors).items()})
    commits[PARTI_PROMPTS] = build_parti_repo(mirrors)
    server = HubServer(mirrors, root).start()
    server.commits = commits
    yield server
    server.stop()
