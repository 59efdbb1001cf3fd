"""Files beside the tars that other tools expect: a metadata parquet per shard (one row per sample, as img2dataset
writes them: read with pandas or `datasets` without opening a tar) and data/sizes.json (sample count per tar, as
OpenCLIP-style webdataset loaders read it).

A shard's parquet is written with its tar, by the writer that has the samples in hand (hdiff.dataset.writer, beside
the sampling of the next pack), before its stats file; the commit makes whatever table is missing or stale from the
finished tar. A parquet records its tar's sha256 and the version of its columns, so a re-run rewrites exactly the
tables whose tar (or whose columns) changed. data/sizes.json is written at the commit.

A column is named by its field's path in the json record, joined by dots (`source.columns.category`,
`scores.clip`), as `datasets.Dataset.flatten` and `pandas.json_normalize` name nested fields; `sha256` (of the image
bytes, as img2dataset's tables have it) and `cluster_path_length` are computed from the sample.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hdiff.dataset import layout
from hdiff.dataset.tars import tar_samples
from hdiff.files import atomic_path, write_atomically

METADATA_GLOB = f"{layout.DATA_DIR}/*.parquet"
SIZES_NAME = "sizes.json"
TAR_SHA256_KEY = b"hdiff.tar_sha256"
COLUMNS_VERSION_KEY = b"hdiff.metadata_columns"
COLUMNS_VERSION = b"2"  # 2: json-path names, width, height, copy_index and the image's sha256 (1: source_<name>)
SIDECAR_SUFFIXES = (".parquet",)
SIDECAR_NAMES = (SIZES_NAME,)


def metadata_path(out_dir: str | Path, shard: str) -> Path:
    return Path(out_dir) / layout.DATA_DIR / f"{shard}.parquet"


def sizes_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / layout.DATA_DIR / SIZES_NAME


def is_sidecar(path: Path) -> bool:
    """True for a file under data/ that this module writes (not a tar)."""
    return path.suffix in SIDECAR_SUFFIXES or path.name in SIDECAR_NAMES


def metadata_row(record: dict[str, Any], image: bytes | None) -> dict[str, Any]:
    """One sample's row: key, prompt, seed, copy index, size, the image's sha256 (None without an image), τ, UNet
    rows, cluster path length, model, and the source row, source columns and scores under their json paths."""
    source = record.get("source") or {}
    return {"key": record["key"], "prompt": record["prompt"], "seed": record["seed"],
            "copy_index": record["copy_index"], "width": record["width"], "height": record["height"],
            "sha256": hashlib.sha256(image).hexdigest() if image is not None else None, "tau": record["tau"],
            "unet_rows": record["unet_rows"], "standard_unet_rows": record["standard_unet_rows"],
            "cluster_path_length": len(record["cluster_path"]), "model": record["model"],
            "model_revision": record.get("model_revision"), "source.row": source.get("row"),
            **{f"source.columns.{name}": value for name, value in (source.get("columns") or {}).items()},
            **{f"scores.{name}": value for name, value in (record.get("scores") or {}).items()}}


def sample_row(files: dict[str, bytes]) -> dict[str, Any]:
    """The row of one sample of a tar, from its files by extension (hdiff.dataset.tars.tar_samples)."""
    record = json.loads(files["json"])
    return metadata_row(record, files.get(record.get("image_format")))


def tar_rows(path: Path) -> list[dict[str, Any]]:
    """The metadata row of every sample in a tar, in order."""
    return [sample_row(files) for _, files in tar_samples(path)]


def metadata_table(rows: list[dict[str, Any]], tar_sha256: str):
    """A shard's metadata table (pyarrow) from its samples' rows, the tar's sha256 and the columns' version in the
    schema's metadata."""
    import pyarrow as pa

    columns = list(dict.fromkeys(name for row in rows for name in row))
    table = pa.Table.from_pylist(rows, schema=None).select(columns)
    return table.replace_schema_metadata({TAR_SHA256_KEY: tar_sha256.encode(), COLUMNS_VERSION_KEY: COLUMNS_VERSION})


def write_metadata(out_dir: str | Path, shard: str, tar_sha256: str) -> Path:
    """data/<shard>.parquet from the shard's tar, unless it is already there for this tar's bytes and columns."""
    import pyarrow.parquet as pq

    path = metadata_path(out_dir, shard)
    made_for = (pq.read_schema(path).metadata or {}) if path.is_file() else {}
    if made_for.get(TAR_SHA256_KEY) == tar_sha256.encode() and made_for.get(COLUMNS_VERSION_KEY) == COLUMNS_VERSION:
        return path
    return write_metadata_rows(out_dir, shard, tar_rows(layout.tar_path(out_dir, shard)), tar_sha256)


def write_metadata_rows(out_dir: str | Path, shard: str, rows: list[dict[str, Any]], tar_sha256: str) -> Path:
    """data/<shard>.parquet of `rows` (`sample_row` of each sample of the tar, in order), under a temporary name and
    renamed."""
    import pyarrow.parquet as pq

    path = metadata_path(out_dir, shard)
    with atomic_path(path) as tmp:
        pq.write_table(metadata_table(rows, tar_sha256), tmp)
    return path


def sizes_json(shard_stats: list) -> bytes:
    """data/sizes.json's bytes: samples per tar (`ShardStats` or manifest rows), by tar name (a shard without a
    tar, its every image filtered out, is not there)."""
    sizes = {f"{stats.shard}.tar": stats.samples for stats in sorted(shard_stats, key=lambda s: s.shard)
             if stats.has_tar}
    return (json.dumps(sizes, indent=1, sort_keys=True) + "\n").encode()


def write_sidecars(out_dir: str | Path, shard_stats: list) -> None:
    """A metadata parquet for every finished shard (`ShardStats`) that has a tar, and data/sizes.json."""
    for stats in shard_stats:
        if stats.has_tar:
            write_metadata(out_dir, stats.shard, stats.sha256)
    write_atomically(sizes_path(out_dir), sizes_json(shard_stats))
