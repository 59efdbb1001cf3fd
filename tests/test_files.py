"""Atomic files and folders, and faults of the file system: one line naming the file, nothing half-written."""

from __future__ import annotations

import errno
import os

import pytest

from hdiff.errors import HdiffError
from hdiff.files import (PARTIAL_SUFFIX, atomic_folder, atomic_path, check_writable_output, disk_errors_as_hdiff,
                         exclusive_lock, write_atomically)


def test_write_atomically_replaces_the_file_and_leaves_no_partial(tmp_path):
    target = tmp_path / "sub" / "manifest.json"
    write_atomically(target, b"one")
    write_atomically(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["manifest.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    target = tmp_path / "grid.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed while drawing")
    assert target.read_bytes() == b"old"
    assert not list(tmp_path.glob(f"*{PARTIAL_SUFFIX}"))


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "the file system is read-only"),
                                         (errno.EACCES, "permission denied")])
def test_disk_faults_become_one_line_naming_the_file(tmp_path, code, words):
    target = tmp_path / "data" / "shard-00000.tar"
    with pytest.raises(HdiffError) as info, atomic_path(target) as tmp:
        tmp.write_bytes(b"part of a shard")
        raise OSError(code, os.strerror(code))
    assert str(info.value) == f"cannot write {target}: {words}"
    assert not target.exists() and not list(target.parent.glob(f"*{PARTIAL_SUFFIX}"))


def test_other_os_errors_pass_through_as_they_are(tmp_path):
    with pytest.raises(ConnectionResetError), disk_errors_as_hdiff(tmp_path):
        raise ConnectionResetError(errno.ECONNRESET, "reset")


def test_a_full_disk_is_not_retried_as_a_transient_fault():
    from prefect.states import Failed

    from flows.build_dataset import retry_unless_bad_input

    with pytest.raises(HdiffError) as full, disk_errors_as_hdiff("out/data/shard-00000.tar"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert retry_unless_bad_input(None, None, Failed(data=full.value)) is False
    assert retry_unless_bad_input(None, None, Failed(data=RuntimeError("CUDA error: out of memory"))) is True


def test_atomic_folder_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), atomic_folder(out, overwrite=False) as staging:
        (staging / "images").mkdir()
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(out, overwrite=False) as staging:
        (staging / "report.json").write_text("{}")
    assert [p.name for p in out.iterdir()] == ["report.json"]
    with pytest.raises(HdiffError, match="already exists; pass --overwrite"):
        with atomic_folder(out, overwrite=False):
            pass


def test_outputs_that_cannot_be_written_are_refused(tmp_path, monkeypatch):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    with pytest.raises(HdiffError, match=r"^output .*taken is a file, not a folder$"):
        check_writable_output(a_file)
    with pytest.raises(HdiffError, match=r"^output .*taken/sub: .*taken is a file, not a folder$"):
        check_writable_output(a_file / "sub")
    # root may write anywhere, so the file system's answer is what is asked: a read-only mount answers no
    monkeypatch.setattr(os, "access", lambda path, mode: os.fspath(path) != os.fspath(tmp_path))
    with pytest.raises(HdiffError, match=r"^output .*new/out: .* is not writable$"):
        check_writable_output(tmp_path / "new" / "out")


def test_a_held_lock_stops_a_second_holder_with_one_line(tmp_path):
    lock = tmp_path / ".lock"
    with exclusive_lock(lock, "output folder out"):
        with pytest.raises(HdiffError) as caught, exclusive_lock(lock, "output folder out"):
            pass
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("output folder out is in use by another run (pid ")
    assert f"pid {os.getpid()} on " in message
    with exclusive_lock(lock, "output folder out"):  # released when the block ends
        pass


@pytest.mark.subprocess
def test_a_killed_holder_releases_the_lock(tmp_path):
    """kill -9 leaves the lock file behind but not the lock: the kernel drops it with the process."""
    import signal
    import subprocess
    import sys

    lock = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom hdiff.files import exclusive_lock\n"
                               f"with exclusive_lock({str(lock)!r}, 'x'):\n    print('held', flush=True)\n"
                               "    time.sleep(600)"], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(HdiffError, match=f"pid {holder.pid} on "):
            with exclusive_lock(lock, "x"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with exclusive_lock(lock, "x"):
        assert lock.exists()
