"""A local stand-in for the Hugging Face Hub's HTTP API: just enough for huggingface_hub's
`create_repo`, `create_branch` and `upload_folder` (legacy LFS path, so run with HF_HUB_DISABLE_XET=1).

It records what it received: repos created, each branch's files with their bytes (LFS uploads reassembled from
single or multi-part PUTs), and the Authorization header of every request. Routes (from huggingface_hub 2.4.0's
hf_api.py, _commit_api.py and lfs.py):

    POST /api/repos/create                               create_repo; 409 + url when it exists
    POST /api/validate-yaml                              README.md metadata check
    GET  /api/agent-harnesses                            huggingface_hub's daily user-agent registry fetch
    GET  /api/{type}s/{repo}[/revision/{revision}]       repo_info (create_repo asks after a 401/403)
    POST /api/{type}s/{repo}/branch/{branch}             create_branch; 409 when it exists
    POST /api/{type}s/{repo}/preupload/{revision}        upload mode per file: "lfs" or "regular"
    POST /{prefix}{repo}.git/info/lfs/objects/batch      LFS batch: where to PUT each object
    PUT  /lfs/{oid}  |  PUT /lfs/{oid}/{part}            object upload, whole or in parts   } presigned: no
    POST /lfs/{oid}                                      multi-part completion              } Authorization
    POST /lfs-verify/{oid}                               LFS verify
    POST /api/{type}s/{repo}/commit/{revision}           ndjson commit: header, file (base64), lfsFile, deletedFile
    GET  /api/{type}s/{repo}/tree/{revision}              list_repo_tree (recursive) of a branch, tag or commit
    GET  /api/{type}s/{repo}/refs                         list_repo_refs: branches and tags
    POST /api/{type}s/{repo}/tag/{revision}               create_tag on a branch's head or a commit; 409 when taken
    GET  /api/{type}s/{repo}/revision/{revision}          repo_info of a branch, tag or commit: its sha, its files
    HEAD|GET /{prefix}{repo}/resolve/{revision}/{path}    a file at a branch, tag or commit (hf_hub_download)

Every commit's files are kept (`snapshots`), so a tag or an old commit still gives what it pointed at.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import threading
from urllib.parse import unquote
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPO_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
ANONYMOUS = ("/lfs/", "/api/agent-harnesses")  # presigned uploads (as on S3) and a public registry: no token
REGULAR_SUFFIXES = (".md", ".json", ".txt", ".yaml", ".yml", ".gitattributes")


@dataclass
class Repo:
    repo_type: str
    visibility: str | None
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    heads: dict[str, str] = field(default_factory=lambda: {"main": "0" * 40})  # branch -> commit oid
    tags: dict[str, str] = field(default_factory=dict)  # tag -> commit oid
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"0" * 40: {}})  # commit oid -> files

    def commit_of(self, revision: str) -> str | None:
        """The commit a branch, tag or commit oid names; None when none."""
        oid = self.heads.get(revision) or self.tags.get(revision) or revision
        return oid if oid in self.snapshots else None


class HubStandIn:
    """The Hub at http://127.0.0.1:{port}; `token` set: requests with another Bearer token get a 401."""

    def __init__(self, token: str | None = None, multipart_chunk: int | None = None):
        self.token = token
        self.multipart_chunk = multipart_chunk  # LFS objects larger than this are uploaded in parts
        self.repos: dict[str, Repo] = {}
        self.objects: dict[str, bytes] = {}  # LFS store, by sha256
        self.parts: dict[str, dict[int, bytes]] = {}
        self.commits: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization header)
        self.unhandled: list[tuple[str, str]] = []
        self.failures: dict[str, int] = {}  # path fragment -> status; the body echoes the Authorization header
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> HubStandIn:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},  # a quick shutdown
                         name="hub-standin", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "stand-in not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- what was received ------------------------------------------------------------------------------------

    def files(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        """Path in repo -> bytes, as committed to `branch`."""
        return dict(self.repos[repo_id].branches[branch])

    def authorizations(self) -> set[str | None]:
        """Authorization headers seen on requests that need one."""
        return {auth for _, path, auth in self.requests if not path.startswith(ANONYMOUS)}

    # -- request handling -------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, auth: str | None, body: bytes) -> tuple[int, Any, dict[str, str]]:
        """One request -> (status, JSON-able body or bytes, extra headers)."""
        with self.lock:
            self.requests.append((method, path, auth))
            for fragment, status in self.failures.items():
                if fragment in path:  # 4xx: JSON error, as the Hub sends; 5xx: plain text, as a proxy might
                    echo = f"rejected request with Authorization: {auth}"
                    return status, {"error": echo} if status < 500 else echo.encode(), {"X-Error-Message": echo}
        if self.token is not None and not path.startswith(ANONYMOUS) and auth != f"Bearer {self.token}":
            return 401, {"error": "Invalid credentials in Authorization header"}, {}
        for route_method, pattern, action in self._routes():
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                with self.lock:
                    return action(body, **match.groupdict())
        with self.lock:
            self.unhandled.append((method, path))
        return 404, {"error": f"stand-in has no route for {method} {path}"}, {}

    def _routes(self):
        repo = r"(?P<kind>models|datasets|spaces)/(?P<repo_id>[^/]+/[^/]+)"
        return [
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", lambda body: (200, {"errors": [], "warnings": []}, {})),
            ("GET", r"/api/agent-harnesses", lambda body: (200, {"standardEnvVars": [], "harnesses": {}}, {})),
            ("GET", rf"/api/{repo}(/revision/(?P<revision>[^/?]+))?(\?.*)?", self._repo_info),
            ("POST", rf"/api/{repo}/branch/(?P<branch>[^/?]+)", self._create_branch),
            ("POST", rf"/api/{repo}/preupload/(?P<revision>[^/?]+)(\?.*)?", self._preupload),
            ("POST", r"/(?P<prefix>datasets/|spaces/)?(?P<repo_id>[^/]+/[^/]+)\.git/info/lfs/objects/batch",
             self._lfs_batch),
            ("PUT", r"/lfs/(?P<oid>[0-9a-f]{64})", self._lfs_put),
            ("PUT", r"/lfs/(?P<oid>[0-9a-f]{64})/(?P<part>\d+)", self._lfs_put_part),
            ("POST", r"/lfs/(?P<oid>[0-9a-f]{64})", self._lfs_complete),
            ("POST", r"/lfs-verify/(?P<oid>[0-9a-f]{64})", self._lfs_verify),
            ("POST", rf"/api/{repo}/commit/(?P<revision>[^/?]+)(\?.*)?", self._commit),
            ("GET", rf"/api/{repo}/tree/(?P<revision>[^/?]+)(\?.*)?", self._tree),
            ("GET", rf"/api/{repo}/refs(\?.*)?", self._refs),
            ("POST", rf"/api/{repo}/tag/(?P<revision>[^/?]+)", self._tag),
            ("HEAD", r"/(?P<prefix>datasets/|spaces/)?(?P<repo_id>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/"
                     r"(?P<path>[^?]+)(\?.*)?", self._resolve_head),
            ("GET", r"/(?P<prefix>datasets/|spaces/)?(?P<repo_id>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/"
                    r"(?P<path>[^?]+)(\?.*)?", self._resolve),
        ]

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{REPO_PREFIXES[repo_type]}{repo_id}"

    def _create_repo(self, body: bytes):
        payload = json.loads(body)
        repo_id = f"{payload.get('organization') or 'standin-user'}/{payload['name']}"
        repo_type = payload.get("type") or "model"
        url = self._repo_url(repo_type, repo_id)
        if repo_id in self.repos:
            return 409, {"error": "You already created this repo", "url": url}, {}
        self.repos[repo_id] = Repo(repo_type=repo_type, visibility=payload.get("visibility"))
        return 200, {"url": url, "name": repo_id}, {}

    def _find_repo(self, kind: str, repo_id: str) -> Repo | None:
        found = self.repos.get(repo_id)
        return found if found is not None and f"{found.repo_type}s" == kind else None

    def _repo_info(self, body: bytes, kind: str, repo_id: str, revision: str | None = None):
        repo = self._find_repo(kind, repo_id)
        oid = repo.commit_of(unquote(revision or "main")) if repo is not None else None
        if oid is None:
            return 404, {"error": "Repository or revision not found"}, {"X-Error-Code": "RevisionNotFound"}
        siblings = [{"rfilename": path} for path in sorted(repo.snapshots[oid])]
        return 200, {"id": repo_id, "sha": oid, "private": repo.visibility == "private", "siblings": siblings}, {}

    def _file_at(self, prefix: str | None, repo_id: str, revision: str, path: str):
        repo = self.repos.get(repo_id)
        kind = {None: "model", "datasets/": "dataset", "spaces/": "space"}[prefix]
        oid = repo.commit_of(unquote(revision)) if repo is not None and repo.repo_type == kind else None
        data = self.repos[repo_id].snapshots[oid].get(unquote(path)) if oid is not None else None
        if data is None:
            return None, {"X-Error-Code": "EntryNotFound"}
        return data, {"X-Repo-Commit": oid, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}

    def _resolve_head(self, body: bytes, repo_id: str, revision: str, path: str, prefix: str | None = None):
        data, headers = self._file_at(prefix, repo_id, revision, path)
        if data is None:
            return 404, {"error": "Entry not found"}, headers
        return 200, b"", {**headers, "X-Content-Length": str(len(data))}

    def _resolve(self, body: bytes, repo_id: str, revision: str, path: str, prefix: str | None = None):
        data, headers = self._file_at(prefix, repo_id, revision, path)
        if data is None:
            return 404, {"error": "Entry not found"}, headers
        return 200, data, headers

    def _create_branch(self, body: bytes, kind: str, repo_id: str, branch: str):
        repo = self._find_repo(kind, repo_id)
        if repo is None:
            return 404, {"error": "Repository not found"}, {}
        if branch in repo.branches:
            return 409, {"error": f"Reference already exists: refs/heads/{branch}"}, {}
        repo.branches[branch] = dict(repo.branches["main"])
        repo.heads[branch] = repo.heads["main"]
        return 200, {}, {}

    def _preupload(self, body: bytes, kind: str, repo_id: str, revision: str):
        if self._find_repo(kind, repo_id) is None:
            return 404, {"error": "Repository not found"}, {}
        files = [
            {
                "path": f["path"],
                "uploadMode": "regular" if f["path"].endswith(REGULAR_SUFFIXES) else "lfs",
                "shouldIgnore": False,
                "oid": None,  # never "unchanged": every push commits every file
            }
            for f in json.loads(body)["files"]
        ]
        return 200, {"files": files}, {}

    def _lfs_batch(self, body: bytes, repo_id: str, prefix: str | None = None):
        if repo_id not in self.repos:
            return 404, {"error": "Repository not found"}, {}
        objects = []
        for obj in json.loads(body)["objects"]:
            oid, size = obj["oid"], obj["size"]
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.objects:  # already stored: no actions, the client skips the upload
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/lfs/{oid}", "header": self._upload_header(oid, size)},
                    "verify": {"href": f"{self.url}/lfs-verify/{oid}"},
                }
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}, {}

    def _upload_header(self, oid: str, size: int) -> dict[str, str]:
        if self.multipart_chunk is None or size <= self.multipart_chunk:
            return {}
        n_parts = math.ceil(size / self.multipart_chunk)
        parts = {str(i): f"{self.url}/lfs/{oid}/{i}" for i in range(1, n_parts + 1)}
        return {"chunk_size": str(self.multipart_chunk), **parts}

    def _store(self, oid: str, data: bytes):
        if hashlib.sha256(data).hexdigest() != oid:
            return 400, {"error": "sha256 mismatch"}, {}
        self.objects[oid] = data
        return 200, {}, {}

    def _lfs_put(self, body: bytes, oid: str):
        return self._store(oid, body)

    def _lfs_put_part(self, body: bytes, oid: str, part: str):
        self.parts.setdefault(oid, {})[int(part)] = body
        return 200, {}, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}

    def _lfs_complete(self, body: bytes, oid: str):
        numbers = [p["partNumber"] for p in json.loads(body)["parts"]]
        received = self.parts.pop(oid, {})
        if sorted(received) != numbers:
            return 400, {"error": f"parts {numbers} completed, {sorted(received)} received"}, {}
        return self._store(oid, b"".join(received[n] for n in numbers))

    def _lfs_verify(self, body: bytes, oid: str):
        stored = self.objects.get(oid)
        if stored is None or len(stored) != json.loads(body)["size"]:
            return 404, {"error": "object not uploaded"}, {}
        return 200, {}, {}

    def _commit(self, body: bytes, kind: str, repo_id: str, revision: str):
        repo = self._find_repo(kind, repo_id)
        if repo is None:
            return 404, {"error": "Repository not found"}, {}
        if revision not in repo.branches:
            return 404, {"error": f"Invalid rev id: {revision}"}, {}
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header, operations = lines[0], lines[1:]
        assert header["key"] == "header", header
        staged = dict(repo.branches[revision])
        for op in operations:
            value = op["value"]
            if op["key"] == "file":
                staged[value["path"]] = base64.b64decode(value["content"])
            elif op["key"] == "lfsFile":
                if value["oid"] not in self.objects:
                    return 400, {"error": f"LFS object {value['oid']} was never uploaded"}, {}
                staged[value["path"]] = self.objects[value["oid"]]
            elif op["key"] == "deletedFile":
                staged.pop(value["path"], None)
            else:
                return 400, {"error": f"stand-in does not handle {op['key']}"}, {}
        repo.branches[revision] = staged
        oid = hashlib.sha1(body).hexdigest()
        repo.heads[revision] = oid
        repo.snapshots[oid] = dict(staged)
        self.commits.append({"repo_id": repo_id, "revision": revision, "summary": header["value"]["summary"],
                             "paths": [op["value"]["path"] for op in operations], "oid": oid,
                             "deleted": [op["value"]["path"] for op in operations if op["key"] == "deletedFile"]})
        commit_url = f"{self._repo_url(repo.repo_type, repo_id)}/commit/{oid}"
        return 200, {"success": True, "commitOid": oid, "commitUrl": commit_url}, {}

    def _tree(self, body: bytes, kind: str, repo_id: str, revision: str):
        repo = self._find_repo(kind, repo_id)
        oid = repo.commit_of(unquote(revision)) if repo is not None else None
        if oid is None:
            return 404, {"error": "Repository or revision not found"}, {}
        files = repo.branches[revision] if revision in repo.branches else repo.snapshots[oid]
        entries = []
        for path, data in sorted(files.items()):
            entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}
            if not path.endswith(REGULAR_SUFFIXES):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return 200, entries, {}

    def _refs(self, body: bytes, kind: str, repo_id: str):
        repo = self._find_repo(kind, repo_id)
        if repo is None:
            return 404, {"error": "Repository not found"}, {}
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid} for b, oid in repo.heads.items()]
        tags = [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": oid} for t, oid in repo.tags.items()]
        return 200, {"branches": branches, "tags": tags, "converts": []}, {}

    def _tag(self, body: bytes, kind: str, repo_id: str, revision: str):
        repo = self._find_repo(kind, repo_id)
        if repo is None:
            return 404, {"error": "Repository not found"}, {}
        tag = json.loads(body)["tag"]
        if tag in repo.tags:
            return 409, {"error": f"Tag {tag} already exists"}, {}
        repo.tags[tag] = repo.heads.get(revision, revision)
        return 200, {}, {}


def git_blob_id(data: bytes) -> str:
    """The git object id of a file's bytes, as the Hub reports it for files not in LFS."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _handler_for(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline().strip():  # trailers
                    pass
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            status, payload, headers = hub.handle(self.command, self.path, self.headers.get("Authorization"),
                                                  self._body())
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if isinstance(payload, bytes) else "application/json")
            headers = dict(headers)
            self.send_header("Content-Length", headers.pop("X-Content-Length", str(len(data))))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

        def log_message(self, format, *args) -> None:  # keep test output quiet
            pass

    return Handler
