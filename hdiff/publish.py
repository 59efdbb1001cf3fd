"""Publishing a finished build to the Hugging Face Hub as a dataset repo.

The token (argument, else HF_TOKEN, else the `hf auth login` token) is handed to huggingface_hub and nowhere
else: it is never logged, and any failure is re-raised as an HdiffError whose message has it scrubbed out and
no chained cause (a traceback printed by Prefect or a logger shows only the scrubbed message).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi, get_token

from hdiff.dataset import layout
from hdiff.errors import HdiffError

log = logging.getLogger(__name__)

UPLOAD_PATTERNS = [layout.DATA_FILES_GLOB, layout.CARD_NAME, layout.MANIFEST_NAME, layout.GRID_NAME,
                   layout.DENDROGRAM_NAME]  # not stats/, nor partial files of interrupted writes
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
    """Create the dataset repo if needed and upload the shards, card, manifest and figures; returns the repo URL."""
    out = Path(out_dir)
    shards = check_build(out)
    secret = token or get_token()
    if not secret:
        raise HdiffError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    with _redacted_transport_logs(secret):
        try:
            url = _create_and_upload(HfApi(token=secret), out, repo_id, private, revision,
                                     commit_message or f"hdiff build: {len(shards)} shards")
        except Exception as err:  # huggingface_hub/httpx errors may quote the request or the server's echo of it
            raise HdiffError(f"pushing {out} to {repo_id} failed: {scrub(describe(err), secret)}") from None
    log.info("pushed %d shards to %s", len(shards), url)
    return url


def _create_and_upload(api: HfApi, out: Path, repo_id: str, private: bool, revision: str | None,
                       commit_message: str) -> str:
    url = api.create_repo(repo_id, repo_type="dataset", private=private or None, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=out,
        allow_patterns=UPLOAD_PATTERNS,
        revision=revision,
        commit_message=commit_message,
    )
    return str(url)


def check_build(out: Path) -> list[str]:
    """The build's shard names; raises HdiffError when `out` is not a finished build."""
    if not layout.manifest_path(out).is_file():
        raise HdiffError(f"{out} is not an hdiff build: no {layout.MANIFEST_NAME}")
    shards = layout.tar_shards(out)
    if not shards:
        raise HdiffError(f"{out} is not an hdiff build: no {layout.DATA_FILES_GLOB} shards")
    unfinished = sorted(set(shards) - set(layout.stats_shards(out)))
    if unfinished:
        raise HdiffError(f"{out} is an unfinished build: no stats for {', '.join(unfinished[:3])}")
    return shards


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
