"""Checking a build folder: every shard readable and equal to its stats, every sample whole and its record valid,
keys unique, nothing half-written left behind, and the manifest's totals equal to the sums over shards and records.

Each problem is one line naming the file (relative to the build folder) and, where there is one, the sample key.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from pydantic import ValidationError

from hdiff.dataset import layout
from hdiff.dataset.sidecars import is_sidecar
from hdiff.dataset.writer import IMAGE_ENCODERS, ShardStats, file_sha256, read_all_stats, validation_summary
from hdiff.records import DatasetRecord

IMAGE_EXTENSIONS = frozenset(IMAGE_ENCODERS)
SAMPLE_EXTENSIONS = IMAGE_EXTENSIONS | {"txt", "json"}
REL_TOL = 1e-6


@dataclass
class ShardReading:
    """What reading one tar found: its keys in order, the records that validated, and whether every sample did."""

    keys: list[str] = field(default_factory=list)
    unet_rows: float = 0.0
    standard_evals: int = 0
    complete: bool = True  # the tar read to the end and every sample had a valid record


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-9)


def tar_samples(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) for each run of consecutive members sharing a key; raises on a damaged tar."""
    key, files = None, {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            member_key, _, extension = base.partition(".")
            if member_key != key and key is not None:
                yield key, files
                files = {}
            key = member_key
            files[extension] = tar.extractfile(member).read()
    if key is not None:
        yield key, files


def sample_problems(at: str, shard: str, key: str, files: dict[str, bytes]) -> tuple[list[str], DatasetRecord | None]:
    """Problems with one sample (`at` prefixes each message), and its record when that validates."""
    problems = []
    images = sorted(ext for ext in files if ext in IMAGE_EXTENSIONS)
    missing = [name for name, present in (("image", images), ("txt", "txt" in files), ("json", "json" in files))
               if not present]
    if missing:
        problems.append(f"{at}: missing {', '.join(missing)}")
    if unexpected := sorted(set(files) - SAMPLE_EXTENSIONS):
        problems.append(f"{at}: unexpected entries {unexpected}")
    if len(images) > 1:
        problems.append(f"{at}: more than one image ({', '.join(images)})")

    size = None
    for ext in images:
        try:
            with Image.open(io.BytesIO(files[ext])) as image:
                image.load()
                size = image.size
        except Exception as exc:  # PIL reports damage through many exception types
            problems.append(f"{at}: {ext} does not decode: {exc}")

    text = None
    if "txt" in files:
        try:
            text = files["txt"].decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{at}: txt is not UTF-8")

    record = None
    if "json" in files:
        try:
            record = DatasetRecord.model_validate_json(files["json"])
        except ValidationError as exc:
            problems.append(f"{at}: json does not validate against DatasetRecord: {validation_summary(exc)}")
    if record is not None:
        if record.key != key:
            problems.append(f"{at}: record key {record.key!r} differs from the sample key")
        if record.shard != shard:
            problems.append(f"{at}: record shard {record.shard!r} differs from the tar's")
        if images and record.image_format != images[0]:
            problems.append(f"{at}: record image_format {record.image_format!r} but the image is {images[0]}")
        if text is not None and text != record.prompt:
            problems.append(f"{at}: txt differs from the record's prompt")
        if size is not None and size != (record.width, record.height):
            problems.append(f"{at}: image is {size[0]}x{size[1]} (WxH), the record says {record.width}x{record.height}")
    return problems, record


def read_shard(out: Path, shard: str, seen: dict[str, str], problems: list[str]) -> ShardReading:
    """Read and check every sample of one tar, recording keys in `seen` (key → file) to catch duplicates."""
    where = f"{layout.DATA_DIR}/{shard}.tar"
    reading = ShardReading()
    try:
        for key, files in tar_samples(layout.tar_path(out, shard)):
            at = f"{where}: {key}"
            if key in seen:
                problems.append(f"{at}: key also in {seen[key]}")
            seen.setdefault(key, where)
            reading.keys.append(key)
            sample_issues, record = sample_problems(at, shard, key, files)
            problems += sample_issues
            if record is None:
                reading.complete = False
            else:
                reading.unet_rows += record.unet_rows
                reading.standard_evals += record.standard_unet_rows
    except (tarfile.TarError, OSError, EOFError) as exc:
        last = f" after sample {reading.keys[-1]!r}" if reading.keys else ""
        problems.append(f"{where}: unreadable{last} (truncated or damaged): {exc}")
        reading.complete = False
        return reading
    if not ends_with_end_of_archive(layout.tar_path(out, shard)):  # tarfile reads a tar cut at a header as complete
        problems.append(f"{where}: unreadable (truncated): no end-of-archive blocks at the end of the file")
        reading.complete = False
    return reading


def ends_with_end_of_archive(path: Path) -> bool:
    """True when the file is whole 512-byte blocks and its last two are zeros, as every finished tar ends."""
    size = path.stat().st_size
    if size < 2 * tarfile.BLOCKSIZE or size % tarfile.BLOCKSIZE:
        return False
    with open(path, "rb") as f:
        f.seek(size - 2 * tarfile.BLOCKSIZE)
        return f.read() == bytes(2 * tarfile.BLOCKSIZE)


def stats_problems(out: Path, shard: str, stats: ShardStats, reading: ShardReading) -> list[str]:
    """Disagreements between a tar and its stats file."""
    where = f"{layout.DATA_DIR}/{shard}.tar"
    tar = layout.tar_path(out, shard)
    checks = [
        (stats.shard != shard, f"its stats name another shard, {stats.shard!r}"),
        (tar.stat().st_size != stats.tar_bytes, f"is {tar.stat().st_size} bytes, stats say {stats.tar_bytes}"),
        (file_sha256(tar) != stats.sha256, "sha256 differs from its stats (changed or truncated after writing)"),
        (len(reading.keys) != stats.samples, f"holds {len(reading.keys)} samples, stats say {stats.samples}"),
        (len(reading.keys) == stats.samples and reading.keys != stats.keys, "keys differ from those in its stats"),
        (reading.complete and not _close(reading.unet_rows, stats.unet_rows),
         f"records' unet_rows sum to {reading.unet_rows:g}, stats say unet_rows={stats.unet_rows:g}"),
        (reading.complete and reading.standard_evals != stats.standard_rows,
         f"records' standard_unet_rows sum to {reading.standard_evals}, stats say {stats.standard_rows}"),
    ]
    return [f"{where}: {message}" for wrong, message in checks if wrong]


def layout_problems(out: Path) -> list[str]:
    """Leftover partial files, and files that do not belong under data/ or stats/."""
    problems = [f"{path.relative_to(out).as_posix()}: leftover partial file of an interrupted write"
                for path in layout.partial_files(out)]
    for folder, suffix in ((layout.DATA_DIR, ".tar"), (layout.STATS_DIR, ".json")):
        for path in sorted((out / folder).iterdir()) if (out / folder).is_dir() else []:
            if folder == layout.DATA_DIR and path.is_file() and is_sidecar(path):  # hdiff.dataset.sidecars
                continue
            if not path.name.endswith(layout.PARTIAL_SUFFIX) and not (path.is_file() and path.suffix == suffix):
                problems.append(f"{folder}/{path.name}: unexpected entry (only *{suffix} files belong here)")
    if not (out / layout.DATA_DIR).is_dir():
        problems.append(f"{layout.DATA_DIR}/: missing")
    return problems


def read_stats_files(out: Path, problems: list[str]) -> dict[str, ShardStats]:
    """Every stats file that parses, by shard name; the others become problems."""
    found = {}
    for shard in layout.stats_shards(out):
        try:
            found[shard] = ShardStats.model_validate_json(layout.stats_path(out, shard).read_bytes())
        except ValidationError as exc:
            problems.append(f"{layout.STATS_DIR}/{shard}.json: does not parse: {validation_summary(exc)}")
    return found


def manifest_problems(out: Path, stats: dict[str, ShardStats], record_sums: tuple[float, int] | None,
                      samples_read: int) -> list[str]:
    """The manifest's shard table and totals against the stats files and (when all records validated) the records."""
    name = layout.MANIFEST_NAME
    try:
        manifest = json.loads(layout.manifest_path(out).read_text(encoding="utf-8"))
        totals = manifest["totals"]
        table = {row["shard"]: row for row in manifest["shards"]}
        claimed = (int(totals["samples"]), float(totals["unet_rows"]), int(totals["standard_rows"]))
    except FileNotFoundError:
        return [f"{name}: missing"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{name}: unreadable or incomplete: {type(exc).__name__}: {exc}"]

    problems = []
    if sorted(table) != sorted(stats):
        problems.append(f"{name}: lists shards {sorted(set(table) ^ set(stats))} that differ from stats/")
    for shard in sorted(set(table) & set(stats)):
        row, shard_stats = table[shard], stats[shard]
        if row.get("samples") != shard_stats.samples or row.get("sha256") != shard_stats.sha256:
            problems.append(f"{name}: shard {shard}: samples or sha256 differ from {layout.STATS_DIR}/{shard}.json")

    samples, unet_rows, standard_rows = claimed
    stats_sums = (sum(s.samples for s in stats.values()), sum(s.unet_rows for s in stats.values()),
                  sum(s.standard_rows for s in stats.values()))
    checks = [
        (samples != stats_sums[0], f"totals.samples={samples}, shard stats sum to {stats_sums[0]}"),
        (samples != samples_read, f"totals.samples={samples}, the tars hold {samples_read}"),
        (not _close(unet_rows, stats_sums[1]), f"totals.unet_rows={unet_rows:g}, shard stats sum to {stats_sums[1]:g}"),
        (standard_rows != stats_sums[2], f"totals.standard_rows={standard_rows}, shard stats sum to {stats_sums[2]}"),
    ]
    if record_sums is not None:
        checks += [
            (not _close(unet_rows, record_sums[0]),
             f"totals.unet_rows={unet_rows:g}, records' unet_rows sum to {record_sums[0]:g}"),
            (standard_rows != record_sums[1],
             f"totals.standard_rows={standard_rows}, records' standard_unet_rows sum to {record_sums[1]}"),
        ]
    return problems + [f"{name}: {message}" for wrong, message in checks if wrong]


def verify_build(out_dir: str | Path) -> list[str]:
    """Every problem found in the build folder, one line each; an empty list means the build is sound."""
    out = Path(out_dir)
    if not out.is_dir():
        return [f"{out}: no such build folder"]
    problems = layout_problems(out)
    stats = read_stats_files(out, problems)
    tars = layout.tar_shards(out)
    problems += [f"{layout.DATA_DIR}/{shard}.tar: has no stats file {layout.STATS_DIR}/{shard}.json"
                 for shard in tars if shard not in stats]
    problems += [f"{layout.STATS_DIR}/{shard}.json: its tar {layout.DATA_DIR}/{shard}.tar is missing"
                 for shard in sorted(set(stats) - set(tars))]

    seen: dict[str, str] = {}
    all_complete, samples, unet_rows, standard_evals = True, 0, 0.0, 0
    for shard in tars:
        reading = read_shard(out, shard, seen, problems)
        if shard in stats:
            problems += stats_problems(out, shard, stats[shard], reading)
        all_complete &= reading.complete
        samples += len(reading.keys)
        unet_rows += reading.unet_rows
        standard_evals += reading.standard_evals
    record_sums = (unet_rows, standard_evals) if all_complete else None
    return problems + manifest_problems(out, stats, record_sums, samples_read=samples)


def run_verify(out_dir: str | Path) -> int:
    """Print every problem of the build folder; 0 when there are none, else 1 (for `hdiff verify OUT`)."""
    problems = verify_build(out_dir)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{out_dir}: {len(problems)} problem(s)")
        return 1
    shards = read_all_stats(out_dir)
    print(f"{out_dir}: ok ({sum(s.samples for s in shards)} samples in {len(shards)} shards)")
    return 0
