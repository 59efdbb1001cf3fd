"""Checking a build folder: every shard readable and equal to its stats, every sample whole and its record valid and
consistent (prompt id = hash of the prompt, seed = the seed rule, key, shard), keys unique, nothing half-written
left behind, the card, grid, dendrogram and build_settings.json present and readable, and every figure of the
manifest (per-shard table, counts, totals, versions) equal to what the shards' stats give.

Each problem is one line naming the file (relative to the build folder), the field, and where there is one the key.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, ValidationError

from hdiff.dataset import layout
from hdiff.dataset.manifest import Manifest, counts_of, totals_of
from hdiff.dataset.sidecars import is_sidecar
from hdiff.dataset.writer import (IMAGE_ENCODERS, ShardStats, file_sha256, read_all_stats, tar_samples,
                                  validation_summary)
from hdiff.prompts import image_seed, prompt_id, sample_key
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


def sample_problems(at: str, shard: str, key: str, files: dict[str, bytes],
                    base_seed: int | None = None) -> tuple[list[str], DatasetRecord | None]:
    """Problems with one sample (`at` prefixes each message), and its record when that validates. `base_seed` (the
    build's generation.seed) checks the record's seed against the seed rule."""
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
        problems += [f"{at}: {message}" for message in identity_problems(record, base_seed)]
    return problems, record


def identity_problems(record: DatasetRecord, base_seed: int | None) -> list[str]:
    """A record's names against its content: prompt_id is the prompt's hash, the key is made of id and copy, the seed
    follows the seed rule of the build's base seed."""
    problems = []
    if record.prompt_id != prompt_id(record.prompt):
        problems.append(f"record prompt_id {record.prompt_id!r} is not the hash of its prompt ({prompt_id(record.prompt)!r})")
    if record.key != sample_key(record.prompt_id, record.copy_index):
        problems.append(f"record key {record.key!r} is not made of its prompt_id and copy_index")
    if base_seed is not None and record.seed != image_seed(record.prompt_id, record.copy_index, base_seed):
        problems.append(f"record seed {record.seed} does not follow the seed rule (generation.seed {base_seed})")
    return problems


def read_shard(out: Path, shard: str, seen: dict[str, str], problems: list[str],
               base_seed: int | None = None) -> ShardReading:
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
            sample_issues, record = sample_problems(at, shard, key, files, base_seed)
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
    """The manifest's per-shard table, counts, totals and versions against the stats files (`counts_of`,
    `totals_of`: what the commit wrote), and (when every record validated) against the records."""
    name = layout.MANIFEST_NAME
    try:
        manifest = Manifest.read(out)
    except FileNotFoundError:
        return [f"{name}: missing"]
    except ValidationError as exc:
        return [f"{name}: not a manifest: {validation_summary(exc)}"]
    except (OSError, ValueError) as exc:
        return [f"{name}: unreadable: {type(exc).__name__}: {exc}"]

    problems = []
    table = {row.shard: row for row in manifest.shards}
    if sorted(table) != sorted(stats):
        problems.append(f"{name}: lists shards {sorted(set(table) ^ set(stats))} that differ from stats/")
    for shard in sorted(set(table) & set(stats)):
        problems += [f"{name}: shards[{shard}].{key}={claimed!r}, {layout.STATS_DIR}/{shard}.json says {value!r}"
                     for key, claimed, value in differing_fields(table[shard], stats[shard].row())]
    shards = list(stats.values())
    problems += [f"{name}: counts.{key}={claimed!r}, the shard stats give {value!r}"
                 for key, claimed, value in differing_fields(manifest.counts, counts_of(shards))]
    recomputed = totals_of(shards, manifest.versions, oracle_accuracy=manifest.totals.oracle_accuracy)
    problems += [f"{name}: totals.{key}={claimed!r}, "
                 f"{'the versions' if key == 'wall_seconds' else 'the shard stats'} give {value!r}"
                 for key, claimed, value in differing_fields(manifest.totals, recomputed)]
    totals = manifest.totals
    if totals.samples != samples_read:
        problems.append(f"{name}: totals.samples={totals.samples!r}, the tars hold {samples_read}")
    if record_sums is not None:
        checks = [(not _close(totals.unet_rows, record_sums[0]),
                   f"totals.unet_rows={totals.unet_rows!r}, records' unet_rows sum to {record_sums[0]:g}"),
                  (totals.standard_rows != record_sums[1], f"totals.standard_rows="
                   f"{totals.standard_rows!r}, records' standard_unet_rows sum to {record_sums[1]}")]
        problems += [f"{name}: {message}" for wrong, message in checks if wrong]
    return problems + [f"{name}: {message}" for message in version_problems(manifest)]


def differing_fields(claimed: BaseModel, expected: BaseModel) -> list[tuple[str, Any, Any]]:
    """(field, claimed value, expected value) for every field of two entries of one type that differ."""
    return [(key, getattr(claimed, key), getattr(expected, key)) for key in type(expected).model_fields
            if not _same(getattr(claimed, key), getattr(expected, key))]


def version_problems(manifest: Manifest) -> list[str]:
    """The version history against the dataset: numbered 1, 2, ...; its shards added and removed give the listed
    shards; the last version's sample count is the totals'. (The versions' wall time is checked with the totals.)"""
    versions = manifest.versions
    if not versions:
        return ["versions: empty"]
    problems, present = [], set()
    for number, version in enumerate(versions, 1):
        if version.version != number:
            problems.append(f"versions[{number - 1}].version={version.version!r}, expected {number}")
        present = (present - set(version.shards_removed)) | set(version.shards_added)
    listed = {row.shard for row in manifest.shards}
    if present != listed:
        problems.append(f"versions: their shards added and removed give {len(present)} shards, "
                        f"{sorted(present ^ listed)[:3]} differ from the shard table")
    if versions[-1].samples != manifest.totals.samples:
        problems.append(f"versions[-1].samples={versions[-1].samples!r}, totals.samples={manifest.totals.samples!r}")
    return problems


def _same(claimed, expected) -> bool:
    """Equal, numbers to REL_TOL (sums in another order differ in the last bits)."""
    numbers = (int, float)
    if isinstance(expected, numbers) and not isinstance(expected, bool):
        return isinstance(claimed, numbers) and not isinstance(claimed, bool) and _close(float(claimed), expected)
    if isinstance(expected, list) and isinstance(claimed, list) and len(claimed) == len(expected):
        return all(_same(c, e) for c, e in zip(claimed, expected))
    return claimed == expected


def folder_file_problems(out: Path) -> tuple[list[str], int | None]:
    """The card, grid, dendrogram (when present) and build_settings.json: present, readable, decoding; and the
    build's base seed from the settings (None when they are unreadable)."""
    problems = []
    card = layout.card_path(out)
    try:
        if not card.read_text(encoding="utf-8").startswith("---\n"):
            problems.append(f"{layout.CARD_NAME}: no YAML front matter")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{layout.CARD_NAME}: missing or unreadable ({type(exc).__name__})")
    for figure, required in ((layout.grid_path(out), True), (layout.dendrogram_path(out), False)):
        if not figure.exists() and not required:
            continue
        try:
            with Image.open(figure) as image:
                image.load()
        except Exception as exc:  # PIL reports damage through many exception types
            problems.append(f"{figure.name}: missing or does not decode ({type(exc).__name__})")
    base_seed = None
    try:
        base_seed = int(json.loads(layout.settings_path(out).read_text(encoding="utf-8"))["generation.seed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problems.append(f"{layout.SETTINGS_NAME}: missing or unreadable ({type(exc).__name__})")
    return problems, base_seed


def verify_build(out_dir: str | Path) -> list[str]:
    """Every problem found in the build folder, one line each; an empty list means the build is sound."""
    out = Path(out_dir)
    if not out.is_dir():
        return [f"{out}: no such build folder"]
    problems = layout_problems(out)
    file_issues, base_seed = folder_file_problems(out)
    problems += file_issues
    stats = read_stats_files(out, problems)
    tars = layout.tar_shards(out)
    problems += [f"{layout.DATA_DIR}/{shard}.tar: has no stats file {layout.STATS_DIR}/{shard}.json"
                 for shard in tars if shard not in stats]
    problems += [f"{layout.STATS_DIR}/{shard}.json: its tar {layout.DATA_DIR}/{shard}.tar is missing"
                 for shard in sorted(set(stats) - set(tars))]

    seen: dict[str, str] = {}
    all_complete, samples, unet_rows, standard_evals = True, 0, 0.0, 0
    for shard in tars:
        reading = read_shard(out, shard, seen, problems, base_seed)
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
