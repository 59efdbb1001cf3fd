"""Publishing a finished build to the Hugging Face Hub as a dataset repo, one version at a time.

Publish = verified: a push first runs `hdiff verify` and refuses a dataset with any problem (naming the first) or
one a run is changing (its lock is held); it then uploads exactly the files the manifest lists, the list verify
checks (hdiff.dataset.verify.dataset_files): the listed shards with their metadata tables and stats,
data/sizes.json, the card, the manifest, build_settings.json, the portable hdiff.yaml and the figures: all that
`hdiff verify` and a re-run need once pulled (hdiff.pull). A shard a killed run left, the lock, the marker and a
local corpus kept beside hdiff.yaml stay local.

A push compares the build with the branch it goes to and commits only the difference: files that are new or whose
bytes changed, and deletions of the dataset files (shards, figures) the build no longer has; files hdiff does not
write are left alone. The commit is tagged with the dataset's version (`v3`, from the manifest); pushing a dataset
the branch already holds makes no commit.

The token (argument, else HF_TOKEN, else the `hf auth login` token) is handed to huggingface_hub and nowhere
else: it is never logged, and any failure is re-raised as an HdiffError whose message has it scrubbed out and
no chained cause (a traceback printed by Prefect or a logger shows only the scrubbed message).
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
from huggingface_hub.hf_api import RepoFile

from hdiff.dataset import layout, sidecars
from hdiff.dataset.manifest import Manifest
from hdiff.dataset.verify import dataset_files, verify_build
from hdiff.dataset.writer import file_sha256, read_stats
from hdiff.errors import HdiffError
from hdiff.files import lock_holder

log = logging.getLogger(__name__)

UPLOAD_PATTERNS = [layout.DATA_FILES_GLOB, sidecars.METADATA_GLOB, f"{layout.DATA_DIR}/{sidecars.SIZES_NAME}",
                   f"{layout.STATS_DIR}/*.json", layout.CARD_NAME, layout.MANIFEST_NAME, layout.SETTINGS_NAME,
                   layout.CONFIG_NAME, layout.GRID_NAME, layout.DENDROGRAM_NAME]  # the paths a push manages on the Hub: it deletes those the dataset lacks
HTTP_LOGGERS = {"httpx", "httpx2", "httpcore", "httpcore2", "urllib3", "huggingface_hub"}
_NOISE = re.compile(r"For more information check: \S+")  # httpx's link to MDN's page on the status code
_SECRET_SHAPES = [
    (re.compile(r"(?i)(bearer\s+)\S+"), r"\1***"),
    (re.compile(r"hf_[A-Za-z0-9]{8,}"), "hf_***"),
]


def push_dataset(
    out_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Verify the build, create the dataset repo if needed, commit what changed since the branch's last push (the
    files the manifest lists) and tag it with the dataset's version; returns the repo URL. HdiffError, before any
    request, for a build verify rejects or a run is changing."""
    out = Path(out_dir)
    shards = check_build(out)
    secret = token or get_token()
    if not secret:
        raise HdiffError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    with _redacted_transport_logs(secret):
        try:
            url = _create_and_upload(HfApi(token=secret), out, repo_id, private, revision, commit_message)
        except Exception as err:  # huggingface_hub/httpx errors may quote the request or the server's echo of it
            raise HdiffError(f"pushing {out} to {repo_id} failed: {scrub(describe(err), secret)}") from None
    log.info("pushed %d shards to %s", len(shards), url)
    return url


def _create_and_upload(api: HfApi, out: Path, repo_id: str, private: bool, revision: str | None,
                       commit_message: str | None) -> str:
    url = api.create_repo(repo_id, repo_type="dataset", private=private or None, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
    remote = {entry.path: entry for entry in api.list_repo_tree(repo_id, repo_type="dataset", revision=revision,
                                                                recursive=True) if isinstance(entry, RepoFile)}
    local = dataset_files(out, Manifest.read(out))
    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(file)) for path, file in local.items()
                  if path not in remote or not same_content(out, path, file, remote[path])]
    operations += [CommitOperationDelete(path_in_repo=path) for path in sorted(remote)
                   if path not in local and is_published(path)]
    tag = version_tag(out)
    target = revision
    if operations:
        shards = sum(path.endswith(".tar") for path in local)
        default_message = f"hdiff build{f' {tag}' if tag else ''}: {shards} shards"
        commit = api.create_commit(repo_id, operations, repo_type="dataset", revision=revision,
                                   commit_message=commit_message or default_message)
        target = commit.oid
    if tag is not None and tag not in {ref.name for ref in api.list_repo_refs(repo_id, repo_type="dataset").tags}:
        api.create_tag(repo_id, tag=tag, revision=target, repo_type="dataset")
    log.info("%s: %d file(s) changed, tag %s", repo_id, len(operations), tag)
    return str(url)


def is_published(path: str) -> bool:
    """True for the repository paths a push manages (UPLOAD_PATTERNS)."""
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in UPLOAD_PATTERNS)


def same_content(out: Path, path: str, file: Path, remote: RepoFile) -> bool:
    """Whether the remote file holds the local file's bytes: by sha256 for LFS files (a shard's from its stats),
    by git blob id otherwise."""
    if remote.size != file.stat().st_size:
        return False
    if remote.lfs is not None:
        stats = read_stats(out, file.stem) if path.endswith(".tar") else None
        return remote.lfs.sha256 == (stats.sha256 if stats is not None else file_sha256(file))
    data = file.read_bytes()
    return remote.blob_id == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def version_tag(out: Path) -> str | None:
    """`v3` for a dataset whose manifest lists three versions; None for one that lists none."""
    versions = Manifest.read(out).versions
    return f"v{versions[-1].version}" if versions else None


def check_build(out: Path) -> list[str]:
    """The build's shard names; raises HdiffError with one line when `out` is not a finished build, a run holds it,
    or verify finds a problem (the first one is named)."""
    if not layout.manifest_path(out).is_file():
        raise HdiffError(f"{out} is not an hdiff build: no {layout.MANIFEST_NAME}")
    if (holder := lock_holder(layout.lock_path(out))) is not None:
        raise HdiffError(f"{out} is being changed by a run ({holder}); push it when the run has finished")
    try:
        manifest = Manifest.read(out)
    except (OSError, ValueError) as exc:  # a pydantic ValidationError is a ValueError
        raise HdiffError(f"{out}: {layout.MANIFEST_NAME} is not an hdiff manifest ({type(exc).__name__}); see "
                         f"`hdiff verify {out}`") from None
    if not manifest.shards:
        raise HdiffError(f"{out} is not an hdiff build: its manifest lists no shards")
    if problems := verify_build(out):
        more = f" (and {len(problems) - 1} more: see `hdiff verify {out}`)" if len(problems) > 1 else ""
        raise HdiffError(f"{out} fails verification, nothing pushed: {problems[0]}{more}")
    return [row.shard for row in manifest.shards]


def describe(err: BaseException) -> str:
    """The error and the causes that add to its message, outermost first (huggingface_hub wraps upload errors)."""
    parts: list[str] = []
    cause: BaseException | None = err
    while cause is not None and len(parts) < 4:
        text = _NOISE.sub("", str(cause)).strip()
        if text and not any(text in part for part in parts):
            parts.append(text)
        cause = cause.__cause__ or cause.__context__
    return " <- ".join(parts) or type(err).__name__


def scrub(message: str, secret: str) -> str:
    """`message` on one line, redacted."""
    return " ".join(redact(message, secret).split())


def redact(text: str, secret: str) -> str:
    """`text` without `secret` or anything shaped like a token or a Bearer header's value."""
    text = text.replace(secret, "***")
    for pattern, replacement in _SECRET_SHAPES:
        text = pattern.sub(replacement, text)
    return text


class _Redact(logging.Filter):
    """Redacts a log record's message and traceback."""

    def __init__(self, secret: str):
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if (redacted := redact(message, self.secret)) != message:
            record.msg, record.args = redacted, ()
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secret)
            record.exc_info = None
        return True


@contextmanager
def _redacted_transport_logs(secret: str) -> Iterator[None]:
    """Redact the HTTP stack's log records while pushing: at DEBUG, httpcore logs the request headers."""
    redact_filter = _Redact(secret)
    loggers = [
        logger
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and name.split(".")[0] in HTTP_LOGGERS
    ]
    for logger in loggers:
        logger.addFilter(redact_filter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(redact_filter)
