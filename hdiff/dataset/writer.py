"""Writing one shard: samples → a byte-reproducible WebDataset tar, renamed into place, its metadata table, then its
stats (done-marker).

The shard is the unit of work and of resumption: `write_shard` either leaves a complete tar plus its stats file, or
nothing under a final name; `shard_is_complete` tells a re-run which shards to skip.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import webdataset
from PIL import Image
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from hdiff.dataset import layout, sidecars
from hdiff.dataset.encoding import DEFAULT_PNG_LEVEL, IMAGE_FORMATS, Encoding, ImageFormat
from hdiff.dataset.tars import tar_keys
from hdiff.errors import HdiffError
from hdiff.files import atomic_path, write_atomically
from hdiff.records import DatasetRecord

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")  # the same rule as DatasetRecord.key: WebDataset splits names at dots
MAX_KEY_LENGTH = 90  # member names ("<key>.webp") must fit a USTAR header without a prefix
TAR_MTIME = 0  # fixed member metadata, so the same samples give the same bytes
TAR_USER = "hdiff"
TAR_MODE = 0o444


@dataclass(frozen=True)
class Sample:
    """One image to store: its key (no dots), the image (uint8 (H, W, 3) array, PIL image, or bytes already
    encoded in the shard's image format), prompt and record."""

    key: str
    image: np.ndarray | Image.Image | bytes
    prompt: str
    record: dict[str, Any]


class ShardRow(BaseModel):
    """A finished shard's counts, digest and compute: its row in the manifest's per-shard table. A shard whose every
    image a filter dropped has no tar (sha256 None, no samples): its stats alone hold it."""

    model_config = ConfigDict(extra="forbid")

    shard: str
    samples: int = Field(ge=0)
    sha256: str | None = Field(description="hex digest of the tar's bytes; None: no tar (every image filtered out)")
    tar_bytes: int = Field(ge=0)
    image_format: str
    unet_rows: float = Field(ge=0, description="UNet rows the shard cost (the sum of its records' unet_rows)")
    standard_rows: int = Field(ge=0, description="UNet rows standard sampling would spend on the same images")
    wall_seconds: float = Field(ge=0)
    device_seconds: float = Field(ge=0)
    device: str | None = Field(None, description="the device the shard was generated on (None: written from stored "
                               "samples)")
    worker: str | None = Field(None, description="host:pid of the process that generated it")
    taus: list[float] = Field(default_factory=list, description="the τ values its records were sampled at")
    filtered: dict[str, int] | None = Field(None, exclude_if=lambda v: v is None, description="images a filter "
                                            "dropped, by the rule (config key) that dropped them")
    scoring_seconds: float | None = Field(None, exclude_if=lambda v: v is None, description="time spent scoring, "
                                          "apart from generation")
    filtered_unet_rows: float | None = Field(None, ge=0, exclude_if=lambda v: v is None, description="UNet rows "
                                             "spent on the images a filter dropped (not in unet_rows)")
    filtered_standard_rows: int | None = Field(None, ge=0, exclude_if=lambda v: v is None, description="UNet rows "
                                               "standard sampling would spend on the images a filter dropped")

    @model_validator(mode="after")
    def _tar_holds_the_samples(self) -> ShardRow:
        if (self.sha256 is None) != (self.samples == 0):
            raise ValueError("a shard has a tar (sha256) exactly when it holds samples")
        if self.samples == 0 and not sum((self.filtered or {}).values()):
            raise ValueError("a shard without samples must be one whose every image a filter dropped")
        return self

    @property
    def filtered_rows_known(self) -> bool:
        """False for a shard with images filtered out whose stats an hdiff before the filtered rows' count wrote."""
        return not self.filtered or self.filtered_unet_rows is not None

    @property
    def has_tar(self) -> bool:
        """False for a shard whose every image a filter dropped (its stats alone hold it)."""
        return self.sha256 is not None


class Dropped(BaseModel):
    """An image a filter rule dropped: not written, listed in its shard's stats."""

    model_config = ConfigDict(extra="forbid")

    key: str
    reason: str = Field(description="the filter rule's config key, e.g. clip_min")
    score: float
    unet_rows: float | None = Field(None, ge=0, exclude_if=lambda v: v is None, description="the UNet rows its "
                                    "generation cost (its record's unet_rows; absent in stats hdiff wrote before it "
                                    "counted them)")
    standard_rows: int | None = Field(None, ge=0, exclude_if=lambda v: v is None, description="its record's "
                                      "standard_unet_rows (absent likewise)")


class ShardStats(ShardRow):
    """What a finished shard holds and cost; its file under stats/ is the shard's done-marker."""

    keys: list[str] = Field(description="its samples' keys, in tar order")
    dropped: list[Dropped] | None = Field(None, exclude_if=lambda v: v is None, description="images a filter "
                                          "dropped (not in the tar)")
    start_time: AwareDatetime | None = Field(None, exclude_if=lambda v: v is None, description="UTC, when the "
                                             "shard's work began (its sampling; for a shard written again without "
                                             "pruned prompts, that rewrite; None: stats written before hdiff "
                                             "recorded it)")
    end_time: AwareDatetime | None = Field(None, exclude_if=lambda v: v is None, description="UTC, when its tar "
                                           "was finished")

    def row(self) -> ShardRow:
        """Its row in the manifest (all but the keys, the dropped images and the times)."""
        own = set(ShardStats.model_fields) - set(ShardRow.model_fields)
        return ShardRow.model_validate(self.model_dump(exclude=own))


IMAGE_ENCODERS: dict[str, Encoding] = {name: Encoding(name) for name in IMAGE_FORMATS}  # format -> its defaults


def encode_image(image: np.ndarray | Image.Image, image_format: str, quality: int = 95,
                 png_level: int = DEFAULT_PNG_LEVEL) -> bytes:
    """Deterministic encoded bytes of `image` (fixed encoder settings; `quality` for jpg and webp)."""
    return Encoding(image_format, quality, png_level).encode(image)


def check_key(key: str) -> None:
    """Raise HdiffError unless `key` is usable as a WebDataset key."""
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise HdiffError(f"sample key {key!r} must be letters, digits, '_' or '-' (no dots: WebDataset splits "
                         "file names at the first dot)")
    if len(key) > MAX_KEY_LENGTH:
        raise HdiffError(f"sample key {key!r} is longer than {MAX_KEY_LENGTH} characters")


def dataset_record(sample: Sample, shard: str, image_format: str) -> dict[str, Any]:
    """The sample's record with the dataset fields filled in, validated against DatasetRecord, as JSON-ready data."""
    dataset_fields = {"key": sample.key, "shard": shard, "image_format": image_format}
    for field, value in dataset_fields.items():
        if field in sample.record and sample.record[field] != value:
            raise HdiffError(f"sample {sample.key!r}: record has {field}={sample.record[field]!r}, expected {value!r}")
    if sample.record.get("prompt") != sample.prompt:
        raise HdiffError(f"sample {sample.key!r}: the prompt differs from the record's prompt")
    try:
        record = DatasetRecord.model_validate({**sample.record, **dataset_fields})
    except ValidationError as exc:
        raise HdiffError(f"sample {sample.key!r}: invalid record: {validation_summary(exc)}") from exc
    return record.model_dump(mode="json")


def validation_summary(exc: ValidationError) -> str:
    """A pydantic error as one line: 'field: message; field: message'."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())


def sample_entry(sample: Sample, record: dict[str, Any], encoding: Encoding) -> dict[str, Any]:
    """The WebDataset entry of one sample: __key__, the encoded image, txt and json, all bytes."""
    return {
        "__key__": sample.key,
        encoding.image_format: sample.image if isinstance(sample.image, bytes) else encoding.encode(sample.image),
        "txt": sample.prompt.encode("utf-8"),
        "json": json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _EveryImageFiltered(Exception):
    """Leaves `write_shard`'s tar block without a tar: a filter dropped every image of the shard."""


def write_shard(out_dir: str | Path, shard_name: str, samples: Iterable[Sample], *, image_format: ImageFormat = "png",
                jpeg_quality: int = 95, png_compress_level: int = DEFAULT_PNG_LEVEL, unet_rows: float | None = None,
                wall_seconds: float | None = None, wall_before: float = 0.0, device_seconds: float = 0.0,
                device: str | None = None, worker: str | None = None,
                scored: Callable[[], dict] | None = None) -> ShardStats:
    """Write `samples` as OUT/data/<shard_name>.tar, then OUT/stats/<shard_name>.json; returns the stats.

    The tar is written under a `.partial` name, fsynced and renamed, then its metadata table
    (hdiff.dataset.sidecars, from the bytes just written); the stats file goes last. `unet_rows` defaults
    to the sum of the records' unet_rows and `wall_seconds` to `wall_before` (the sampler's share, spent before the
    call) plus this call's duration, less the scoring stage's seconds (accounted apart). `jpeg_quality` is also
    webp's quality. A sample's image may be bytes already encoded with these settings (hdiff.dataset.shard_writer
    encodes beside the sampler). `scored`, called once the samples are written, gives the stats fields of a scoring
    stage (hdiff.dataset.scoring_stage). When a filter dropped every image, the shard is its stats alone: no tar is
    left under its name; with no sample and no drop, HdiffError. The stats' start time is `wall_before` seconds
    before the call.
    """
    started = time.perf_counter()
    start_time = datetime.now(timezone.utc) - timedelta(seconds=wall_before)
    if not KEY_PATTERN.match(shard_name):
        raise HdiffError(f"shard name {shard_name!r} must be letters, digits, '_' or '-'")
    encoding = Encoding(image_format, jpeg_quality, png_compress_level)
    final_tar = layout.tar_path(out_dir, shard_name)
    final_stats = layout.stats_path(out_dir, shard_name)
    final_tar.parent.mkdir(parents=True, exist_ok=True)
    final_stats.parent.mkdir(parents=True, exist_ok=True)
    final_stats.unlink(missing_ok=True)  # the old done-marker goes before the tar changes

    keys: list[str] = []
    rows: list[dict[str, Any]] = []  # each sample's metadata row (hdiff.dataset.sidecars)
    seen: set[str] = set()
    record_rows, standard_rows = 0.0, 0
    taus: set[float] = set()
    scoring: dict = {}
    sha256, tar_bytes = None, 0
    try:
        with atomic_path(final_tar) as tmp_tar:
            with open(tmp_tar, "wb") as stream:
                with webdataset.TarWriter(stream, user=TAR_USER, group=TAR_USER, mode=TAR_MODE, encoder=False,
                                          mtime=TAR_MTIME) as writer:
                    for sample in samples:
                        check_key(sample.key)
                        if sample.key in seen:
                            raise HdiffError(f"shard {shard_name}: key {sample.key!r} appears twice")
                        record = dataset_record(sample, shard_name, image_format)
                        entry = sample_entry(sample, record, encoding)
                        writer.write(entry)
                        rows.append(sidecars.sample_row(entry))  # from the bytes in the tar, as the commit reads it
                        keys.append(sample.key)
                        seen.add(sample.key)
                        record_rows += record["unet_rows"]
                        standard_rows += record["standard_unet_rows"]
                        if record.get("tau") is not None:
                            taus.add(float(record["tau"]))
            scoring = scored() if scored is not None else {}
            if not keys:
                if not scoring.get("dropped"):
                    raise HdiffError(f"shard {shard_name} has no samples")
                raise _EveryImageFiltered
            sha256 = file_sha256(tmp_tar)
            tar_bytes = tmp_tar.stat().st_size
        sidecars.write_metadata_rows(out_dir, shard_name, rows, sha256)
    except _EveryImageFiltered:  # the partial tar is gone; so are a tar and table an earlier run left under the name
        final_tar.unlink(missing_ok=True)
        sidecars.metadata_path(out_dir, shard_name).unlink(missing_ok=True)

    stats = ShardStats(
        shard=shard_name, samples=len(keys), keys=keys, sha256=sha256, tar_bytes=tar_bytes, image_format=image_format,
        unet_rows=record_rows if unet_rows is None else unet_rows, standard_rows=standard_rows,
        wall_seconds=(max(0.0, wall_before + time.perf_counter() - started - scoring.get("scoring_seconds", 0.0))
                      if wall_seconds is None else wall_seconds),
        device_seconds=device_seconds, device=device, worker=worker, taus=sorted(taus), **scoring,
        start_time=start_time, end_time=datetime.now(timezone.utc),
    )
    write_atomically(final_stats, stats_json(stats))
    return stats


def stats_json(stats: ShardStats) -> bytes:
    return json.dumps(stats.model_dump(mode="json"), sort_keys=True, indent=2).encode("utf-8") + b"\n"


def read_stats(out_dir: str | Path, shard_name: str) -> ShardStats | None:
    """The shard's stats, or None when the file is missing or does not parse."""
    path = layout.stats_path(out_dir, shard_name)
    try:
        return ShardStats.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def read_all_stats(out_dir: str | Path) -> list[ShardStats]:
    """Stats of every shard with a readable stats file, in shard order (finished shards of this and earlier runs)."""
    found = (read_stats(out_dir, name) for name in layout.stats_shards(out_dir))
    return [stats for stats in found if stats is not None]


def shard_is_complete(out_dir: str | Path, shard_name: str) -> bool:
    """True when the shard's tar and stats both exist and the tar's sha256, size and keys match the stats, or (a
    shard whose every image a filter dropped) when its stats say it has no tar and none is there."""
    stats = read_stats(out_dir, shard_name)
    path = layout.tar_path(out_dir, shard_name)
    if stats is not None and not stats.has_tar:
        return not path.exists() and not stats.keys
    if stats is None or not path.is_file() or path.stat().st_size != stats.tar_bytes:
        return False
    if file_sha256(path) != stats.sha256:
        return False
    try:
        return tar_keys(path) == stats.keys and stats.samples == len(stats.keys)
    except (tarfile.TarError, OSError):
        return False


def clean_partials(out_dir: str | Path) -> list[Path]:
    """Remove temporary files left by killed runs; returns what was removed. Call before any shard is written."""
    removed = layout.partial_files(out_dir)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
