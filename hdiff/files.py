"""Writing files and folders so that no reader ever sees a half-written one under its final name.

Everything is written to a temporary sibling whose name ends in `.partial` (no final-name glob matches it), flushed,
and renamed into place; `clean_partials` style sweeps can remove leftovers of killed writers by that suffix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from hdiff.errors import HdiffError

PARTIAL_SUFFIX = ".partial"


def partial_path(final: Path) -> Path:
    """A fresh temporary sibling of `final`, unique per call, that no final-name glob matches."""
    final = Path(final)
    return final.with_name(f"{final.name}.{uuid.uuid4().hex[:12]}{PARTIAL_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write `final`'s content to; renamed over `final` when the block ends without error,
    removed otherwise. Disk-full and permission errors become an HdiffError naming `final`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(final)
    try:
        with disk_errors_as_hdiff(final):
            yield tmp
            if tmp.is_file():
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            os.replace(tmp, final)
            fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a partial sibling, fsync, and rename it over `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_folder(final: str | os.PathLike, *, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling folder to fill; it replaces `final` when the block ends without error, and is removed
    otherwise. Refuses an existing `final` unless `overwrite`."""
    final = Path(final)
    check_writable_output(final, overwrite=overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=PARTIAL_SUFFIX, dir=final.parent))
    try:
        with disk_errors_as_hdiff(final):
            yield staging
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_writable_output(out: str | os.PathLike, *, overwrite: bool = True) -> None:
    """Refuse an output folder that is a file, exists without `overwrite`, or cannot be created or written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HdiffError(f"output {out} is a file, not a folder")
    if out.exists() and not overwrite:
        raise HdiffError(f"{out} already exists; pass --overwrite to replace it")
    existing = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not existing.is_dir():
        raise HdiffError(f"output {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise HdiffError(f"output {out}: {existing} is not writable")


DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}


@contextlib.contextmanager
def disk_errors_as_hdiff(target: str | os.PathLike) -> Iterator[None]:
    """Turn a full, read-only or forbidden file system (not transient: retrying cannot help) into an HdiffError
    naming `target`."""
    try:
        yield
    except OSError as exc:
        if exc.errno in DISK_ERRORS:
            raise HdiffError(f"cannot write {target}: {DISK_ERRORS[exc.errno]}") from None
        raise


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` for the block: a second holder (another process, or another call
    in this one) stops at once with an HdiffError naming the holder; the kernel releases the lock when the process
    dies, however it dies (kill -9 included). `what` names the locked thing in the message.

    The file stays behind (deleting it would let two runs lock two different files); it holds the holder's pid,
    host and start time. Advisory: processes that do not take the lock are not stopped, and network file systems
    may not honour it.
    """
    import datetime
    import fcntl
    import socket

    path = Path(path)
    with disk_errors_as_hdiff(path), open(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+b", buffering=0) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = f.read().decode("utf-8", "replace").strip() or "another process"
            raise HdiffError(in_use_message(what, holder)) from None
        try:
            started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            f.truncate(0)
            f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode())
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def in_use_message(what: str, holder: str) -> str:
    """The one line for a lock held by another run."""
    return f"{what} is in use by another run ({holder}); wait for it to finish, or use another folder"


def lock_holder(path: str | os.PathLike) -> str | None:
    """Who holds the lock `exclusive_lock` takes on `path` (its pid, host and start), or None when no one does.
    Takes nothing: a shared lock tried and given back at once."""
    import fcntl

    try:
        f = open(path, "rb", buffering=0)
    except OSError:  # no lock file: no run ever held it
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().decode("utf-8", "replace").strip() or "another process"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None
