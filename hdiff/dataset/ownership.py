"""Which folders a build may write into: only its own.

A build writes into a folder that is absent, empty, or a dataset hdiff made: one holding the marker file a build
leaves when it first claims the folder, or (for datasets built before the marker) an hdiff manifest, or a killed
build's lock with finished shards. Anything else is refused before any work, so that no file of the user's is ever
overwritten or deleted. Places no dataset belongs are refused too: the file-system root, the home folder, and the
source corpus's own folder, with the folders above it and inside it (a folder source would read the output back).
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from hdiff.dataset import layout
from hdiff.errors import HdiffError
from hdiff.files import write_atomically


def check_output_folder(out: str | os.PathLike, source: str | None = None) -> None:
    """HdiffError with one line when a build may not write into `out` (see the module's docstring); `source` is
    the corpus's path or Hub id."""
    out = Path(out).expanduser().absolute()
    resolved = out.resolve()
    if resolved == Path(resolved.anchor):
        raise HdiffError(f"output {out} is the file-system root; build into a folder of its own")
    if resolved == Path.home().resolve():
        raise HdiffError(f"output {out} is the home folder; build into a folder of its own")
    if (root := source_root(source)) is not None:
        if resolved == root or root.is_relative_to(resolved):
            raise HdiffError(f"output {out} holds the source corpus {source}; build into a folder outside it")
        if root.is_dir() and resolved.is_relative_to(root):
            raise HdiffError(f"output {out} is inside the source folder {source}, whose files a re-run would read; "
                             "build into a folder outside it")
    if out.exists() and not out.is_dir():
        raise HdiffError(f"output {out} is a file, not a folder")
    if out.is_dir() and not is_hdiff_folder(out):
        found = sorted(p.name for p in out.iterdir())
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise HdiffError(f"output {out} holds files hdiff did not write ({shown}); build into an empty or new folder")


def is_hdiff_folder(out: Path) -> bool:
    """True for an empty folder or one a build made (its marker, an hdiff manifest, or a killed build's lock with
    finished shards)."""
    if not any(path.name != layout.LOCK_NAME for path in out.iterdir()):  # empty but for this run's lock
        return True
    if layout.marker_path(out).is_file():
        return True
    if _reads_as_manifest(layout.manifest_path(out)):
        return True
    return layout.lock_path(out).is_file() and bool(layout.stats_shards(out))


def claim(out: str | os.PathLike) -> None:
    """Mark `out` as a dataset folder hdiff made (call with its lock held, after `check_output_folder`)."""
    path = layout.marker_path(out)
    if not path.is_file():
        write_atomically(path, b"hdiff dataset folder: hdiff build writes here, and only here\n")


def source_root(source: str | None) -> Path | None:
    """The local file or folder a corpus is read from (a glob's fixed leading folders), or None for a Hub id."""
    if not source or source.startswith("hf://"):
        return None
    path = Path(source).expanduser()
    if glob.has_magic(source):
        fixed = []
        for part in path.parts:
            if glob.has_magic(part):
                break
            fixed.append(part)
        path = Path(*fixed) if fixed else Path(".")
    return path.resolve() if path.exists() else None


def _reads_as_manifest(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"totals", "versions", "shards"} <= data.keys()
