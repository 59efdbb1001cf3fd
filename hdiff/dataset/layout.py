"""The build folder's layout: every path the writer, verifier and finalizer use is named here and nowhere else.

    OUT/data/shard-00000.tar       WebDataset shards (the only files under data/)
    OUT/stats/shard-00000.json     per-shard stats, written last: the shard's done-marker
    OUT/manifest.json              the whole build: config, counts, ingest drops, per-shard table, totals, hardware
    OUT/build_settings.json        the settings that decide the images, recorded by the first run, checked on resume
    OUT/README.md                  dataset card
    OUT/grid.png, OUT/dendrogram.png

Files are written through hdiff.files (a temporary sibling ending in `.partial`, renamed into place), so a reader
(or the `data/*.tar` glob) never sees a half-written file under a final name.
"""

from __future__ import annotations

from pathlib import Path

from hdiff.files import PARTIAL_SUFFIX

DATA_DIR = "data"
STATS_DIR = "stats"
MANIFEST_NAME = "manifest.json"
SETTINGS_NAME = "build_settings.json"
CARD_NAME = "README.md"
GRID_NAME = "grid.png"
DENDROGRAM_NAME = "dendrogram.png"
DATA_FILES_GLOB = f"{DATA_DIR}/*.tar"


def shard_name(index: int) -> str:
    """The canonical name of shard `index`: shard-00000, shard-00001, ..."""
    return f"shard-{index:05d}"


def tar_path(out_dir: str | Path, shard: str) -> Path:
    return Path(out_dir) / DATA_DIR / f"{shard}.tar"


def stats_path(out_dir: str | Path, shard: str) -> Path:
    return Path(out_dir) / STATS_DIR / f"{shard}.json"


def manifest_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / MANIFEST_NAME


def settings_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / SETTINGS_NAME


def card_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / CARD_NAME


def grid_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / GRID_NAME


def dendrogram_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / DENDROGRAM_NAME


def tar_shards(out_dir: str | Path) -> list[str]:
    """Names of the shards that have a tar under data/, sorted."""
    return sorted(p.name[: -len(".tar")] for p in (Path(out_dir) / DATA_DIR).glob("*.tar") if p.is_file())


def stats_shards(out_dir: str | Path) -> list[str]:
    """Names of the shards that have a stats file (the done-marker), sorted."""
    return sorted(p.stem for p in (Path(out_dir) / STATS_DIR).glob("*.json") if p.is_file())


def partial_files(out_dir: str | Path) -> list[Path]:
    """Leftover temporary files of interrupted writes, anywhere in the build folder's known places."""
    out = Path(out_dir)
    found = [p for folder in (out, out / DATA_DIR, out / STATS_DIR) for p in folder.glob(f"*{PARTIAL_SUFFIX}")]
    return sorted(p for p in found if p.is_file())
