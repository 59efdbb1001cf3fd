"""Which folders a build may write into: only its own.

A build writes into a folder that is absent, empty, or a dataset hdiff made: one holding the marker file a build
leaves when it first claims the folder, or (for datasets built before the marker) an hdiff manifest, or a killed
build's lock with finished shards. Anything else is refused before any work, so that no file of the user's is ever
overwritten or deleted. Places no dataset belongs are refused too: the file-system root, the home folder, and the
source corpus's own folder, with the folders above it and inside it (a folder source would read the output back);
one corpus file kept beside the dataset's own hdiff.yaml is allowed (`beside_own_config`).
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from hdiff.dataset import layout
from hdiff.errors import HdiffError
from hdiff.files import check_writable_output, in_use_message, lock_holder, write_atomically


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
        if (resolved == root or root.is_relative_to(resolved)) and not beside_own_config(resolved, root):
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
    """True for an empty folder (or one holding only a build's lock: this build's own, taken before the check) or
    one a build made (its marker, an hdiff manifest, or a killed build's lock with finished shards)."""
    if not any(path.name != layout.LOCK_NAME for path in out.iterdir()):  # empty, or a refused build's lock
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


def release_unused(out: str | os.PathLike, created: bool) -> None:
    """After a run that stopped before any shard was written (bad input, a refused resume): remove what it wrote
    (the marker, build_settings.json, empty data/ and stats/, the lock) and, when the run `created` it, the folder,
    so a refused build leaves nothing behind. A folder holding any shard or a manifest is left as it is. Call with
    the folder's lock held (its file goes last)."""
    out = Path(out)
    if layout.manifest_path(out).exists() or layout.tar_shards(out) or layout.stats_shards(out):
        return
    for folder in (out / layout.DATA_DIR, out / layout.STATS_DIR):
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()
    for path in (layout.marker_path(out), layout.settings_path(out), layout.lock_path(out)):
        path.unlink(missing_ok=True)
    if created and not any(out.iterdir()):
        out.rmdir()


def beside_own_config(out: Path, corpus: Path) -> bool:
    """A corpus file kept at the top of a dataset folder beside its hdiff.yaml (hdiff.dataset.recipe), under a name
    no file of the dataset has: the build writes no file of that name, so it is read, never touched."""
    return (corpus.is_file() and corpus.parent == out and layout.config_path(out).is_file()
            and corpus.name not in {layout.CONFIG_NAME, layout.MANIFEST_NAME, layout.SETTINGS_NAME, layout.CARD_NAME,
                                    layout.GRID_NAME, layout.DENDROGRAM_NAME, layout.LOCK_NAME, layout.MARKER_NAME})


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


def check_output(out: str | os.PathLike, source: str | None = None) -> None:
    """What a build checks of its output folder before anything starts (light: no model, no server): it can be
    written, no other run holds it (its files may be half-written, so they are not judged), and it is the build's
    to write (`check_output_folder`). HdiffError with one line."""
    check_writable_output(out)
    if (holder := lock_holder(layout.lock_path(out))) is not None:
        raise HdiffError(in_use_message(f"output folder {out}", holder))
    check_output_folder(out, source)
