"""A real Hub-compatible server for tests: the olah mirror (pip package, pinned below) serving local git
repositories offline, behind a thin recording front.

olah runs from its own virtual environment (it pins psutil<6; the project's environment keeps the psutil its other
packages want), created on first use or by `make test`: `python tests/hub_server.py install`. The server is a
subprocess, stopped by its process id.

The front forwards every request to olah unchanged, except one call olah's offline local mirrors do not answer:
`/api/{models,datasets}/{owner}/{name}` without a revision (diffusers' `DiffusionPipeline.from_pretrained` makes it),
which it forwards to `.../revision/main`, the route olah answers, and records in `HubServer.forwarded`.

The repositories are tiny random-weight versions laid out like the real ones (tests/tiny_models.py builders,
`save_pretrained` folders committed to git), and a parquet prompt corpus with two revisions and two subsets.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
OLAH_REQUIREMENT = "olah==0.5.4"
OLAH_VENV = REPO_ROOT / ".venv-olah"
STARTUP_TIMEOUT_S = 60

KANDINSKY_PRIOR = "kandinsky-community/kandinsky-2-2-prior"
KANDINSKY_DECODER = "kandinsky-community/kandinsky-2-2-decoder"
STABLE_UNCLIP = "fusing/stable-unclip-2-1-l"
STABLE_DIFFUSION = "stable-diffusion-v1-5/stable-diffusion-v1-5"
PROMPT_DATASET = "hdiff-test/prompt-corpus"
PARTI_PROMPTS = "nateraw/parti-prompts"  # the corpus configs/kandinsky22.yaml names, as a tiny copy
PICKLE_DECOY = "unet/diffusion_pytorch_model.bin"  # real repos carry pickle copies of their weights; never fetched
SUBSETS = ("animals", "objects")
FIRST_REVISION = "v1"  # a tag on the corpus's first commit; `main` is the second

_META_WITHOUT_REVISION = re.compile(r"^/api/(models|datasets)/([^/?]+/[^/?]+)(\?.*)?$")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


# ---------------------------------------------------------------------------------------------------- olah itself


def olah_cli() -> Path:
    """olah's command, installed into its own virtual environment when missing."""
    exe = OLAH_VENV / "bin" / "olah-cli"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(OLAH_VENV)], check=True)
        subprocess.run([str(OLAH_VENV / "bin" / "pip"), "install", "--quiet", OLAH_REQUIREMENT], check=True)
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HubServer:
    """olah serving `mirrors` (`models/<owner>/<name>` and `datasets/<owner>/<name>` git repositories) offline, at
    `url` through the recording front. `forwarded` lists the revision-less metadata paths the front rewrote."""

    def __init__(self, mirrors: Path, workdir: Path):
        self.mirrors = mirrors
        self.workdir = workdir
        self.forwarded: list[str] = []
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) as the front saw them
        self._process: subprocess.Popen | None = None
        self._front: ThreadingHTTPServer | None = None
        self._olah_port = 0

    def start(self) -> HubServer:
        self._olah_port = free_port()
        config = self.workdir / "olah.toml"
        config.write_text(
            f'[basic]\nhost = "127.0.0.1"\nport = {self._olah_port}\nrepos-path = "{self.workdir / "repos"}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n[accessibility]\noffline = true\n')
        log = open(self.workdir / "olah.out", "wb")
        self._process = subprocess.Popen([str(olah_cli()), "-c", str(config)], cwd=self.workdir, stdout=log,
                                         stderr=subprocess.STDOUT)
        log.close()
        self._wait_until_up()
        self._front = ThreadingHTTPServer(("127.0.0.1", 0), _front_handler(self))
        self._front.daemon_threads = True
        threading.Thread(target=self._front.serve_forever, name="hub-front", daemon=True).start()
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"olah exited:\n{(self.workdir / 'olah.out').read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self._olah_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"olah did not listen within {STARTUP_TIMEOUT_S} s")

    def stop(self) -> None:
        if self._front is not None:
            self._front.shutdown()
            self._front.server_close()
            self._front = None
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=10)
        self._process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._front.server_address[1]}"

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> http.client.HTTPResponse:
        missing_route = _META_WITHOUT_REVISION.match(path)
        if missing_route:
            kind, repo_id, query = missing_route.groups()
            self.forwarded.append(path)
            path = f"/api/{kind}/{repo_id}/revision/main{query or ''}"
        connection = http.client.HTTPConnection("127.0.0.1", self._olah_port, timeout=60)
        connection.request(method, path, body=body or None, headers=headers)
        return connection.getresponse()


def _front_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Front(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            response = hub.forward(self.command, self.path, dict(self.headers.items()), body)
            data = response.read()
            hub.requests.append((self.command, self.path, response.status))
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_HEAD = do_POST = _relay

        def log_message(self, format, *args) -> None:
            pass

    return Front


# ---------------------------------------------------------------------------------------------------- repositories

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "hdiff-tests", "GIT_AUTHOR_EMAIL": "tests@hdiff.invalid",
                "GIT_COMMITTER_NAME": "hdiff-tests", "GIT_COMMITTER_EMAIL": "tests@hdiff.invalid",
                "GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z"}


def commit_all(folder: Path, message: str, tag: str | None = None) -> str:
    """Commit everything in `folder` (a git repository on branch main, made if needed); returns the commit sha."""
    env = {**os.environ, **GIT_IDENTITY}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], check=True, env=env, capture_output=True,
                              text=True).stdout.strip()

    if not (folder / ".git").exists():
        git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", message)
    if tag:
        git("tag", tag)
    return git("rev-parse", "HEAD")


def model_folder(mirrors: Path, repo_id: str) -> Path:
    return mirrors / "models" / repo_id


def build_model_repos(mirrors: Path) -> dict[str, str]:
    """The four model repositories; returns repo id -> commit sha."""
    import tiny_models

    def decoder():  # its UNet's sample_size sets its default image size, as the real one's (64 × 8 = 512 px)
        return tiny_models.kandinsky_decoder(sample_size=8)

    pipelines = {KANDINSKY_PRIOR: tiny_models.kandinsky_prior, KANDINSKY_DECODER: decoder,
                 STABLE_UNCLIP: tiny_models.stable_unclip, STABLE_DIFFUSION: tiny_models.stable_diffusion}
    commits = {}
    for repo_id, make in pipelines.items():
        folder = model_folder(mirrors, repo_id)
        make().save_pretrained(folder)
        if repo_id == KANDINSKY_DECODER:
            (folder / PICKLE_DECOY).write_bytes(b"not loaded: hdiff reads safetensors unless allow_pickle")
        commits[repo_id] = commit_all(folder, f"tiny random-weight {repo_id}")
    return commits


CORPUS_CARD = """---
license: cc0-1.0
configs:
- config_name: animals
  data_files:
  - split: train
    path: animals/train-*.parquet
- config_name: objects
  data_files:
  - split: train
    path: objects/train-*.parquet
---
# A prompt corpus for hdiff's tests

Two subsets, `animals` and `objects`; the tag `v1` holds fewer prompts than `main`.
"""


def corpus_rows(subset: str, count: int) -> dict[str, list]:
    colours = ("red", "blue", "green", "yellow")
    return {"prompt": [f"a {colours[i % 4]} {subset[:-1]} number {i}" for i in range(count)],
            "category": [subset] * count, "license": ["cc0-1.0"] * count,
            "source_url": [f"https://example.invalid/{subset}/{i}" for i in range(count)]}


def build_corpus_repo(mirrors: Path, sizes: tuple[int, int] = (6, 10)) -> dict[str, str]:
    """The parquet prompt corpus: tag v1 with sizes[0] rows per subset, main with sizes[1]; revision -> sha."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = mirrors / "datasets" / PROMPT_DATASET
    commits = {}
    for revision, count in zip((FIRST_REVISION, "main"), sizes):
        for subset in SUBSETS:
            (folder / subset).mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(corpus_rows(subset, count)), folder / subset / "train-00000-of-00001.parquet")
        (folder / "README.md").write_text(CORPUS_CARD)
        commits[revision] = commit_all(folder, f"{count} prompts a subset",
                                       tag=FIRST_REVISION if revision == FIRST_REVISION else None)
    return commits


def build_parti_repo(mirrors: Path, count: int = 12) -> str:
    """A tiny nateraw/parti-prompts: its columns (Prompt, Category, Challenge, Note) in one parquet file, no subsets."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = mirrors / "datasets" / PARTI_PROMPTS
    (folder / "data").mkdir(parents=True)
    categories = ("Animals", "Artifacts", "Outdoor Scenes")
    rows = {"Prompt": [f"a {c.lower()} scene, picture {i}" for i, c in enumerate(categories * (count // 3))],
            "Category": list(categories * (count // 3)), "Challenge": ["Basic"] * count, "Note": [""] * count}
    pq.write_table(pa.table(rows), folder / "data" / "train-00000-of-00001.parquet")
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# PartiPrompts (a tiny copy for tests)\n")
    return commit_all(folder, "parti prompts")


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python tests/hub_server.py install")
    print(olah_cli())
