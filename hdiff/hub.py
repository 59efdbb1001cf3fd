"""The Hugging Face Hub as hdiff meets it: offline mode, what the local cache holds, which revision a model or corpus
was, and the one command that fetches what an offline machine is missing.

Nothing here changes the process: offline mode is read from huggingface_hub (HF_HUB_OFFLINE, read once by it),
and every load is told `local_files_only=` explicitly.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path

from hdiff.errors import HdiffError

FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
# what from_pretrained reads without variants or pickle: configs, tokenizer files, safetensors weights
MODEL_FILES = ("*.json", "*.txt", "*.model", "*.safetensors")
MODEL_SKIP = ("*.fp16.safetensors",)  # variants hdiff does not load


def offline() -> bool:
    """True when huggingface_hub runs offline (HF_HUB_OFFLINE=1 when it was imported)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def looks_like_hub_id(source: str) -> bool:
    """`owner/name` or `name` that is not an existing local path and does not read as one."""
    path = Path(source).expanduser()
    return not (path.exists() or source.startswith(("/", "./", "../", "~")) or len(path.parts) > 2)


def portable_name(source: str) -> str:
    """How records, the manifest and the card name a model or corpus: as given, or a local absolute path by its last
    part (no user name or machine path goes into a dataset)."""
    return Path(source).name if Path(source).expanduser().is_absolute() else source


def download_command(repo_id: str, *, repo_type: str = "model", revision: str | None = None,
                     files: list[str] | tuple[str, ...] = (), include: tuple[str, ...] = (),
                     exclude: tuple[str, ...] = ()) -> str:
    """The `hf download` command line that fetches `files` (exact paths) or the `include` patterns of one repo."""
    words = ["hf", "download", repo_id, *files]
    if repo_type != "model":
        words += ["--repo-type", repo_type]
    if revision not in (None, "main"):
        words += ["--revision", revision]
    for flag, patterns in (("--include", include), ("--exclude", exclude)):
        for pattern in patterns:
            words += [flag, pattern]
    return shlex.join(words)


def model_download_command(repo_id: str, allow_pickle: bool = False) -> str:
    """`hf download` of what `from_pretrained` reads from a model repo: configs, tokenizers and weights."""
    include = MODEL_FILES + (("*.bin",) if allow_pickle else ())
    return download_command(repo_id, include=include, exclude=MODEL_SKIP)


def repo_cache_folder(repo_id: str, repo_type: str = "model") -> Path:
    """Where huggingface_hub caches `repo_id` (it may not exist)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)


def cached_commit(repo_id: str, revision: str | None = None, repo_type: str = "model") -> str | None:
    """The commit sha `revision` (default main) resolved to when it was last fetched, or None if never."""
    folder = repo_cache_folder(repo_id, repo_type)
    revision = revision or "main"
    if FULL_SHA.match(revision):
        return revision if (folder / "snapshots" / revision).is_dir() else None
    ref = folder / "refs" / revision
    return ref.read_text().strip() if ref.is_file() else None


def files_fingerprint(files: list[str | Path], root: str | Path | None = None) -> str:
    """`sha256:<hex>` over each file's path (relative to `root`, else its name) and bytes: a local source's revision."""
    digest = hashlib.sha256()
    for path in sorted(Path(f) for f in files):
        name = path.relative_to(root).as_posix() if root is not None else path.name
        digest.update(name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return f"sha256:{digest.hexdigest()}"


def folder_fingerprint(folder: str | Path) -> str:
    """files_fingerprint of every file under `folder`, hidden entries skipped: a local model's revision."""
    root = Path(folder)
    files = [p for p in root.rglob("*") if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return files_fingerprint(files, root)


def model_revision(source: str) -> str | None:
    """A loaded model's revision: the commit sha its Hub id resolved to in the cache, or a local folder's fingerprint."""
    if Path(source).expanduser().is_dir():
        return folder_fingerprint(Path(source).expanduser())
    return cached_commit(source)


class NotCached(HdiffError):
    """Offline, and the local cache lacks something: the message names `command`, which fetches just that."""

    def __init__(self, message: str, command: str):
        super().__init__(message)
        self.command = command


def offline_error(what: str, commands: list[str]) -> NotCached:
    """One line: `what` is not cached and the Hub is offline; the commands that fetch it, joined with &&."""
    command = " && ".join(commands)
    return NotCached(f"{what} not in the local Hugging Face cache and the Hub is offline (HF_HUB_OFFLINE=1); "
                     f"fetch just what is needed on a connected machine with `{command}`", command)


def missing_model_error(source: str, allow_pickle: bool = False) -> HdiffError:
    """One line: `source` is neither a folder nor cached, and how to fetch it (or why it could not be)."""
    command = model_download_command(source, allow_pickle)
    if offline():
        return offline_error(f"model {source!r} is", [command])
    return HdiffError(f"model {source!r} could not be fetched from the Hub and is not in the local cache; check the "
                      f"id and your connection, or fetch it with `{command}`")
