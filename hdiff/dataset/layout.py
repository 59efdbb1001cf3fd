"""The build folder's layout: every path the writer, verifier and finalizer use is named here and nowhere else.

    OUT/data/shard-<digest>.tar    WebDataset shards (the only files under data/); the name is their content
    OUT/stats/shard-<digest>.json  per-shard stats, written last: the shard's done-marker
    OUT/manifest.json              the dataset: config, counts, per-shard table, totals, versions; written last,
                                   it is the commit point of a run (shards it does not list are not in the dataset)
    OUT/build_settings.json        the settings that decide the images, recorded by the first run, checked on resume
    OUT/hdiff.yaml                 the dataset's own build config, portable: `hdiff build OUT/hdiff.yaml` extends
                                   it (hdiff.dataset.recipe)
    OUT/README.md                  dataset card
    OUT/grid.png, OUT/dendrogram.png
    OUT/.lock                      held by the run writing the folder (one writer at a time)
    OUT/.hdiff-dataset             the marker: this folder is a dataset hdiff made (hdiff.dataset.ownership)

Files are written through hdiff.files (a temporary sibling ending in `.partial`, renamed into place), so a reader
(or the `data/*.tar` glob) never sees a half-written file under a final name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from hdiff.files import PARTIAL_SUFFIX

DATA_DIR = "data"
STATS_DIR = "stats"
MANIFEST_NAME = "manifest.json"
SETTINGS_NAME = "build_settings.json"
CONFIG_NAME = "hdiff.yaml"
CARD_NAME = "README.md"
GRID_NAME = "grid.png"
DENDROGRAM_NAME = "dendrogram.png"
LOCK_NAME = ".lock"
MARKER_NAME = ".hdiff-dataset"
DATA_FILES_GLOB = f"{DATA_DIR}/*.tar"
SHARD_NAME = re.compile(r"^shard-[0-9a-f]+$")  # `shard_name`'s: a file under another name is not hdiff's


def shard_name(members: Iterable[tuple[str, int]]) -> str:
    """The name of the shard holding exactly `members` (sample key, seed): `shard-` and 16 hex digits of a hash of
    them, in any order. Two shards share a name only when they hold the same images, so a finished shard under the
    name a run plans is the shard that run would write."""
    digest = hashlib.sha256("".join(f"{key}:{seed}\n" for key, seed in sorted(members)).encode())
    return f"shard-{digest.hexdigest()[:16]}"


def tar_path(out_dir: str | Path, shard: str) -> Path:
    return Path(out_dir) / DATA_DIR / f"{shard}.tar"


def stats_path(out_dir: str | Path, shard: str) -> Path:
    return Path(out_dir) / STATS_DIR / f"{shard}.json"


def manifest_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / MANIFEST_NAME


def settings_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / SETTINGS_NAME


def config_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / CONFIG_NAME


def lock_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / LOCK_NAME


def marker_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / MARKER_NAME


def card_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / CARD_NAME


def grid_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / GRID_NAME


def dendrogram_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / DENDROGRAM_NAME


def tar_shards(out_dir: str | Path) -> list[str]:
    """Names of the shards that have a tar under data/, sorted (files under other names are not hdiff's)."""
    return sorted(p.stem for p in (Path(out_dir) / DATA_DIR).glob("shard-*.tar")
                  if p.is_file() and SHARD_NAME.match(p.stem))


def stats_shards(out_dir: str | Path) -> list[str]:
    """Names of the shards that have a stats file (the done-marker), sorted (other files are not hdiff's)."""
    return sorted(p.stem for p in (Path(out_dir) / STATS_DIR).glob("shard-*.json")
                  if p.is_file() and SHARD_NAME.match(p.stem))


def partial_files(out_dir: str | Path) -> list[Path]:
    """Leftover temporary files of interrupted writes, anywhere in the build folder's known places."""
    out = Path(out_dir)
    found = [p for folder in (out, out / DATA_DIR, out / STATS_DIR) for p in folder.glob(f"*{PARTIAL_SUFFIX}")]
    return sorted(p for p in found if p.is_file())
