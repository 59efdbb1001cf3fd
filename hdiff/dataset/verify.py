"""Checking a build folder against its manifest, which lists the dataset (`dataset_files`, what `hdiff push`
publishes):

- every listed shard: its tar readable (a plain file, not a link) and equal to its stats; every sample whole, its
  record valid and consistent (prompt id = hash of the prompt, key, shard, seed = the seed rule), keys unique; the
  images a filter dropped (listed in the stats) counted by rule and their UNet rows summed as the stats say; a shard
  whose every image was dropped has no tar and no metadata table;
- every record against the dataset's identity (hdiff.dataset.settings: steps, guidance, size, τ, schedule, model
  revision, ...), and the records against each other: one dataset, one set of image settings;
- each shard's metadata parquet present and equal to the table its tar gives, data/sizes.json equal to the counts;
- every figure of the manifest: per-shard table, counts, totals (the oracle's accuracy recomputed from the images),
  ingest counts, each version's figures, the configuration against the identity;
- the card and hdiff.yaml (hdiff.dataset.recipe) equal to the ones the manifest gives (every figure the card shows
  comes from the manifest), the grid and dendrogram decoding, build_settings.json equal to the identity;
- nothing else: no file outside the layout (hdiff.dataset.layout) but the local corpus hdiff.yaml names, no
  unlisted shard, no leftover partial file, no symbolic link anywhere.

While a run holds the folder's lock, the folder is in the middle of a change: only the last commit is checked (the
listed shards, their sidecars and the manifest's figures), not the files a run rewrites or leaves until it commits.

Each problem is one line naming the file (relative to the build folder), the field, and where there is one the key.
"""

from __future__ import annotations

import difflib
import io
import json
import math
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, ValidationError

from hdiff.dataset import layout, sidecars
from hdiff.dataset.card import dataset_card
from hdiff.dataset.manifest import Manifest, OracleAccuracy, counts_of, totals_of
from hdiff.dataset.recipe import dataset_config_text, local_corpus_name
from hdiff.dataset.settings import IMAGE_SETTINGS, REVISION_SUFFIX, changes
from hdiff.dataset.tars import tar_samples
from hdiff.dataset.writer import IMAGE_ENCODERS, ShardStats, file_sha256, validation_summary
from hdiff.files import lock_holder
from hdiff.prompts import image_seed, prompt_id, sample_key
from hdiff.records import DatasetRecord

IMAGE_EXTENSIONS = frozenset(IMAGE_ENCODERS)
SAMPLE_EXTENSIONS = IMAGE_EXTENSIONS | {"txt", "json"}
REL_TOL = 1e-6
TOP_LEVEL = frozenset({layout.DATA_DIR, layout.STATS_DIR, layout.MANIFEST_NAME, layout.SETTINGS_NAME,
                       layout.CONFIG_NAME, layout.CARD_NAME, layout.GRID_NAME, layout.DENDROGRAM_NAME, layout.LOCK_NAME,
                       layout.MARKER_NAME})
# record fields every image of a dataset shares, and the identity key each must equal when it is set
SHARED_FIELDS = {"model": None, "model_revision": "model.revision", "pipeline_class": None, "prior": None,
                 "prior_revision": "prior.revision", "scheduler": None, "steps": "generation.steps",
                 "evaluations": None, "guidance_scale": "generation.guidance_scale", "schedule": "generation.schedule",
                 "height": "generation.height", "width": "generation.width",
                 "noise_device": "generation.noise_device", "node_condition": "generation.node_condition",
                 "image_format": "output_format.image_format"}


def dataset_files(out: str | Path, manifest: Manifest) -> dict[str, Path]:
    """Path in the dataset (posix) -> file, for every file of the dataset the manifest lists: its shards' tars,
    metadata tables and stats, data/sizes.json, the card, the manifest, build_settings.json, hdiff.yaml, the grid
    and (when drawn) the dendrogram. What verify checks, `hdiff push` publishes and `hdiff pull` fetches: all that
    verify and a re-run need; the lock, the marker and a local corpus kept beside hdiff.yaml stay local."""
    out = Path(out)
    names = [f"{layout.DATA_DIR}/{row.shard}{suffix}" for row in manifest.shards if row.has_tar
             for suffix in (".tar", ".parquet")]
    names += [f"{layout.STATS_DIR}/{row.shard}.json" for row in manifest.shards]
    names += [f"{layout.DATA_DIR}/{sidecars.SIZES_NAME}", layout.CARD_NAME, layout.MANIFEST_NAME, layout.GRID_NAME,
              layout.SETTINGS_NAME, layout.CONFIG_NAME]
    if layout.dendrogram_path(out).exists() or layout.dendrogram_path(out).is_symlink():
        names.append(layout.DENDROGRAM_NAME)
    return {name: out / name for name in names}


@dataclass
class ShardReading:
    """What reading one tar found: its keys in order, the records that validated, and whether every sample did."""

    keys: list[str] = field(default_factory=list)
    unet_rows: float = 0.0
    standard_evals: int = 0
    rows: list[dict] = field(default_factory=list)  # each sample's metadata row, in order (for the sidecar)
    complete: bool = True  # the tar read to the end and every sample had a valid record


@dataclass
class SharedValues:
    """The value of each SHARED_FIELDS field the first record showed, and where: one dataset, one set of settings."""

    first: dict[str, tuple[Any, str]] = field(default_factory=dict)

    def problems(self, record: DatasetRecord, at: str) -> list[str]:
        found = []
        for name in SHARED_FIELDS:
            value = getattr(record, name)
            seen, where = self.first.setdefault(name, (value, at))
            if value != seen:
                found.append(f"record {name} {value!r} differs from {seen!r} in {where}: the dataset mixes settings")
        return found


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


def settings_problems(record: DatasetRecord, identity: dict[str, Any] | None) -> list[str]:
    """A record against the dataset's identity: every setting the identity fixes (a None setting is the model's
    own, and the records must then agree with each other: SharedValues)."""
    if not identity:
        return []
    problems = []
    for name, key in SHARED_FIELDS.items():
        if key is not None and identity.get(key) is not None and getattr(record, name) != identity[key]:
            problems.append(f"record {name} {getattr(record, name)!r}, the dataset's {key} is {identity[key]!r}")
    tau = identity.get("generation.tau")
    if tau is not None and identity.get("generation.budget") is None and not _close(record.tau, tau):
        problems.append(f"record tau {record.tau!r}, the dataset's generation.tau is {tau!r}")
    copies = identity.get("generation.images_per_prompt")
    if isinstance(copies, int) and record.copy_index >= copies:
        problems.append(f"record copy_index {record.copy_index}, the dataset makes {copies} image(s) per prompt")
    return problems


def read_shard(out: Path, shard: str, seen: dict[str, str], problems: list[str], base_seed: int | None = None,
               identity: dict[str, Any] | None = None, shared: SharedValues | None = None) -> ShardReading:
    """Read and check every sample of one tar, recording keys in `seen` (key → file) to catch duplicates; each
    record is checked against `identity` and, through `shared`, against the other records."""
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
                continue
            problems += [f"{at}: {message}" for message in settings_problems(record, identity)]
            if shared is not None:
                problems += [f"{at}: {message}" for message in shared.problems(record, at)]
            reading.unet_rows += record.unet_rows
            reading.standard_evals += record.standard_unet_rows
            reading.rows.append(sidecars.sample_row(files))
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
    return [f"{where}: {message}" for wrong, message in checks if wrong] + time_problems(shard, stats)


def time_problems(shard: str, stats: ShardStats) -> list[str]:
    """A shard's start and end times: both or neither (stats written before hdiff recorded them), the end not
    before the start."""
    where = f"{layout.STATS_DIR}/{shard}.json"
    if (stats.start_time is None) != (stats.end_time is None):
        return [f"{where}: has {'end_time' if stats.start_time is None else 'start_time'} only"]
    if stats.start_time is not None and stats.end_time < stats.start_time:
        return [f"{where}: end_time {stats.end_time.isoformat()} is before start_time {stats.start_time.isoformat()}"]
    return []


def dropped_problems(shard: str, stats: ShardStats) -> list[str]:
    """The images a filter dropped, as the stats list them, against the stats' counts by rule and UNet rows."""
    where = f"{layout.STATS_DIR}/{shard}.json"
    dropped = stats.dropped or []
    by_rule: dict[str, int] = {}
    for entry in dropped:
        by_rule[entry.reason] = by_rule.get(entry.reason, 0) + 1
    problems = []
    if by_rule != {rule: n for rule, n in (stats.filtered or {}).items() if n}:
        problems.append(f"filtered={stats.filtered!r}, its dropped images give {dict(sorted(by_rule.items()))!r}")
    if any(d.unet_rows is None or d.standard_rows is None for d in dropped):  # written before rows were counted
        if stats.filtered_unet_rows is not None or stats.filtered_standard_rows is not None:
            problems.append("filtered_unet_rows given, but its dropped images' unet_rows are not")
        return [f"{where}: {message}" for message in problems]
    if dropped and not _close(stats.filtered_unet_rows or 0.0, sum(d.unet_rows for d in dropped)):
        problems.append(f"filtered_unet_rows={stats.filtered_unet_rows!r}, its dropped images' unet_rows sum to "
                        f"{sum(d.unet_rows for d in dropped):g}")
    if dropped and (stats.filtered_standard_rows or 0) != sum(d.standard_rows for d in dropped):
        problems.append(f"filtered_standard_rows={stats.filtered_standard_rows!r}, its dropped images' "
                        f"standard_rows sum to {sum(d.standard_rows for d in dropped)}")
    return [f"{where}: {message}" for message in problems]


def other_shard_keys(shard: str, stats: ShardStats, seen: dict[str, str]) -> list[str]:
    """The shard's dropped images whose keys another shard already holds, recording them in `seen` (key → file)."""
    where, problems = f"{layout.STATS_DIR}/{shard}.json", []
    for entry in stats.dropped or ():
        if seen.setdefault(entry.key, where) != where:
            problems.append(f"{where}: dropped {entry.key} is also in {seen[entry.key]}")
    return problems


def tarless_problems(out: Path, shard: str, stats: ShardStats) -> list[str]:
    """A shard whose every image a filter dropped: no tar and no metadata table under its name, and stats of its
    own name that hold no key, row, byte or τ (all of them are its dropped images')."""
    where = f"{layout.STATS_DIR}/{shard}.json"
    problems = [f"{path.relative_to(out).as_posix()}: present, but {where} says a filter dropped every image of the "
                "shard (it has no tar)"
                for path in (layout.tar_path(out, shard), sidecars.metadata_path(out, shard))
                if path.exists() or path.is_symlink()]
    held = {"shard": stats.shard != shard, "keys": bool(stats.keys), "unet_rows": stats.unet_rows != 0,
            "standard_rows": stats.standard_rows != 0, "tar_bytes": stats.tar_bytes != 0, "taus": bool(stats.taus)}
    problems += [f"{where}: {name}={getattr(stats, name)!r}, but the shard has no tar (every image filtered out)"
                 for name, wrong in held.items() if wrong]
    return problems


def sidecar_problems(out: Path, shard: str, stats: ShardStats, reading: ShardReading) -> list[str]:
    """The shard's metadata parquet: present, made for this tar's bytes, and holding the table its records give."""
    import pyarrow.parquet as pq

    path = sidecars.metadata_path(out, shard)
    where = path.relative_to(out).as_posix()
    if path.is_symlink() or not path.is_file():
        return [f"{where}: missing (the metadata table of {layout.DATA_DIR}/{shard}.tar)"]
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow reports damage through many exception types
        return [f"{where}: unreadable ({type(exc).__name__})"]
    made_for = (table.schema.metadata or {}).get(sidecars.TAR_SHA256_KEY, b"").decode("utf-8", "replace")
    if made_for != stats.sha256:
        return [f"{where}: made for other tar bytes (sha256 {made_for[:12] or 'none'}), not its tar's"]
    columns = (table.schema.metadata or {}).get(sidecars.COLUMNS_VERSION_KEY, b"1").decode("utf-8", "replace")
    if columns != sidecars.COLUMNS_VERSION.decode():
        return [f"{where}: has the columns of version {columns}, this hdiff writes version "
                f"{sidecars.COLUMNS_VERSION.decode()} (the next build into the folder rewrites it)"]
    if reading.complete and not table.equals(sidecars.metadata_table(reading.rows, stats.sha256)):
        return [f"{where}: its rows differ from the records of {layout.DATA_DIR}/{shard}.tar"]
    return []


def layout_problems(out: Path, listed: set[str] | None, corpus: str | None = None) -> list[str]:
    """Leftover partial files, symbolic links, and files that are not the dataset's: outside the layout, or a
    shard the manifest does not list (`listed`; None: no readable manifest, every shard-named file counts). A plain
    file named `corpus` (the local corpus hdiff.yaml names beside itself) is the user's, not a problem."""
    problems = [f"{path.relative_to(out).as_posix()}: leftover partial file of an interrupted write"
                for path in layout.partial_files(out)]
    for folder, names, files in os.walk(out):
        for name in sorted(names + files):
            path = Path(folder) / name
            if path.is_symlink():
                problems.append(f"{path.relative_to(out).as_posix()}: a symbolic link (a dataset holds files only)")
    for path in sorted(out.iterdir()):
        if path.name == corpus and path.is_file() and not path.is_symlink():
            continue
        if path.name not in TOP_LEVEL and not path.name.endswith(layout.PARTIAL_SUFFIX):
            problems.append(f"{path.name}: unexpected entry (not a file of the dataset's layout)")
        elif path.name in (layout.DATA_DIR, layout.STATS_DIR) and not path.is_dir():
            problems.append(f"{path.name}: not a folder")
    for folder, suffixes in ((layout.DATA_DIR, (".tar", ".parquet")), (layout.STATS_DIR, (".json",))):
        for path in sorted((out / folder).iterdir()) if (out / folder).is_dir() else []:
            where = f"{folder}/{path.name}"
            if path.name.endswith(layout.PARTIAL_SUFFIX) or path.is_symlink():
                continue
            if folder == layout.DATA_DIR and path.name == sidecars.SIZES_NAME and path.is_file():
                continue
            if not (path.is_file() and path.suffix in suffixes and layout.SHARD_NAME.match(path.stem)):
                problems.append(f"{where}: unexpected entry (only shard files belong here)")
            elif listed is not None and path.stem not in listed:
                problems.append(f"{where}: a shard {layout.MANIFEST_NAME} does not list (left by a run that did "
                                "not commit; the next build removes it)")
    if not (out / layout.DATA_DIR).is_dir():
        problems.append(f"{layout.DATA_DIR}/: missing")
    return problems


def read_stats_file(out: Path, shard: str, problems: list[str]) -> ShardStats | None:
    """A shard's stats; a missing or unparsable file becomes a problem."""
    path = layout.stats_path(out, shard)
    where = f"{layout.STATS_DIR}/{shard}.json"
    if path.is_symlink() or not path.is_file():
        problems.append(f"{layout.DATA_DIR}/{shard}.tar: has no stats file {where}")
        return None
    try:
        return ShardStats.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        problems.append(f"{where}: does not parse: {validation_summary(exc)}")
    except OSError as exc:
        problems.append(f"{where}: unreadable ({type(exc).__name__})")
    return None


def read_manifest(out: Path) -> tuple[Manifest | None, list[str]]:
    """The manifest, or None and the one problem that says why not."""
    name = layout.MANIFEST_NAME
    try:
        return Manifest.read(out), []
    except FileNotFoundError:
        return None, [f"{name}: missing"]
    except ValidationError as exc:
        return None, [f"{name}: not a manifest: {validation_summary(exc)}"]
    except (OSError, ValueError) as exc:
        return None, [f"{name}: unreadable: {type(exc).__name__}: {exc}"]


def manifest_problems(out: Path, stats: dict[str, ShardStats], record_sums: tuple[float, int] | None,
                      samples_read: int) -> list[str]:
    """The manifest's figures against the shards' stats (`figure_problems`), reading the manifest first."""
    manifest, problems = read_manifest(out)
    return problems if manifest is None else figure_problems(manifest, stats, record_sums, samples_read)


def figure_problems(manifest: Manifest, stats: dict[str, ShardStats], record_sums: tuple[float, int] | None,
                    samples_read: int) -> list[str]:
    """The manifest's per-shard table, counts, totals, ingest counts, versions and configuration against the stats
    files (`counts_of`, `totals_of`: what the commit wrote), and (when every record validated) against the records.
    The oracle's accuracy is checked against the images (`oracle_problems`)."""
    name = layout.MANIFEST_NAME
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
    problems += [f"{name}: {message}" for message in ingest_problems(manifest)]
    problems += [f"{name}: {message}" for message in config_problems(manifest)]
    return problems + [f"{name}: {message}" for message in version_problems(manifest, stats)]


def differing_fields(claimed: BaseModel, expected: BaseModel) -> list[tuple[str, Any, Any]]:
    """(field, claimed value, expected value) for every field of two entries of one type that differ."""
    return [(key, getattr(claimed, key), getattr(expected, key)) for key in type(expected).model_fields
            if not _same(getattr(claimed, key), getattr(expected, key))]


def ingest_problems(manifest: Manifest) -> list[str]:
    """The last run's ingest counts: every prompt read was kept or dropped for a reason, no more were truncated than
    kept, and the corpus of the last version is what was kept."""
    ingest, problems = manifest.ingest, []
    counts = {"ingest.read": ingest.read, "ingest.kept": ingest.kept, "ingest.truncated": ingest.truncated,
              **{f"ingest.dropped.{reason}": count for reason, count in ingest.dropped.items()}}
    problems += [f"{key}={value!r} is not a count" for key, value in counts.items()
                 if not isinstance(value, int) or isinstance(value, bool) or value < 0]
    if problems:
        return problems
    if ingest.read != ingest.kept + sum(ingest.dropped.values()):
        problems.append(f"ingest.read={ingest.read}, but kept ({ingest.kept}) and dropped "
                        f"({sum(ingest.dropped.values())}) add up to {ingest.kept + sum(ingest.dropped.values())}")
    if ingest.truncated > ingest.kept:
        problems.append(f"ingest.truncated={ingest.truncated} is more than ingest.kept={ingest.kept}")
    if manifest.versions and manifest.versions[-1].corpus.prompts != ingest.kept:
        problems.append(f"ingest.kept={ingest.kept}, the last version's corpus.prompts is "
                        f"{manifest.versions[-1].corpus.prompts}")
    return problems


def config_problems(manifest: Manifest) -> list[str]:
    """The configuration's image settings against the identity (hdiff.dataset.settings)."""
    if not manifest.identity:
        return []
    config = {f"{section}.{key}": values[key] for section, keys in IMAGE_SETTINGS.items()
              if isinstance(values := manifest.config.get(section), dict) for key in keys if key in values}
    return [f"config.{change.replace(' → ', ', the identity says ', 1)}" for change in
            changes(config, {k: v for k, v in manifest.identity.items() if not k.endswith(REVISION_SUFFIX)})]


def images_per_prompt(manifest: Manifest) -> int:
    """The dataset's images per prompt: the identity's, else the configuration's, else 1."""
    value = (manifest.identity or {}).get("generation.images_per_prompt",
                                          (manifest.config.get("generation") or {}).get("images_per_prompt", 1))
    return value if isinstance(value, int) and value >= 1 else 1


def version_problems(manifest: Manifest, stats: dict[str, ShardStats] | None = None) -> list[str]:
    """The version history against the dataset: numbered 1, 2, ...; its shards added and removed give the listed
    shards; each version's images (written, and filtered out) follow from the prompts it added and removed, the last
    one's are the totals'; a version whose shards are all still here cost what its generated shards (those with a
    device; a rewritten shard has none) cost. (The versions' wall time is checked with the totals.)"""
    versions = manifest.versions
    if not versions:
        return ["versions: empty"]
    problems, present, images = [], set(), 0
    last_filtered: int | None = 0
    copies = images_per_prompt(manifest)
    for number, version in enumerate(versions, 1):
        at = f"versions[{number - 1}]"
        if version.version != number:
            problems.append(f"{at}.version={version.version!r}, expected {number}")
        present = (present - set(version.shards_removed)) | set(version.shards_added)
        filtered = version_filtered(version, manifest, present, stats)
        expected = None if images is None else images + copies * (version.prompts_added - version.prompts_removed)
        if expected is not None and filtered is not None and version.samples + filtered != expected:
            problems.append(f"{at}.samples={version.samples!r}{f' and filtered={filtered}' if filtered else ''}, but "
                            f"{images} image(s) before it, {version.prompts_added} prompt(s) added and "
                            f"{version.prompts_removed} removed give {expected}")
        images = None if filtered is None else version.samples + filtered  # None: unknown, not checked
        last_filtered = filtered
        if stats is not None and set(version.shards_added) <= set(stats):
            problems += [f"{at}.{message}" for message in version_compute_problems(version, stats, copies)]
    listed = {row.shard for row in manifest.shards}
    if present != listed:
        problems.append(f"versions: their shards added and removed give {len(present)} shards, "
                        f"{sorted(present ^ listed)[:3]} differ from the shard table")
    if versions[-1].samples != manifest.totals.samples:
        problems.append(f"versions[-1].samples={versions[-1].samples!r}, totals.samples={manifest.totals.samples!r}")
    if last_filtered is not None and last_filtered != sum((manifest.totals.filtered or {}).values()):
        problems.append(f"versions[-1].filtered={versions[-1].filtered!r}, "
                        f"totals.filtered={manifest.totals.filtered!r}")
    return problems


def version_filtered(version, manifest: Manifest, present: set[str], stats: dict[str, ShardStats] | None) -> int | None:
    """The images filtered out of the dataset as `version` left it (its shards `present`): as the version says;
    for a version an hdiff before the per-version count wrote (None in a dataset with drops), from its shards' stats,
    None when they are gone."""
    if version.filtered is not None or not manifest.totals.filtered:
        return version.filtered or 0
    if stats is None or not present <= set(stats):
        return None
    return sum(sum((stats[name].filtered or {}).values()) for name in present)


def version_compute_problems(version, stats: dict[str, ShardStats], copies: int) -> list[str]:
    """One version's compute (images filtered out included) and prompts added against the stats of the shards it
    generated."""
    generated = [stats[name] for name in version.shards_added if stats[name].device is not None]
    dropped_now = any(s.filtered for s in generated) and all(s.filtered_rows_known for s in generated)
    expected = {"unet_rows": sum(s.unet_rows for s in generated),
                "standard_rows": sum(s.standard_rows for s in generated),
                "device_seconds": sum(s.device_seconds for s in generated),
                "filtered_unet_rows": (sum(s.filtered_unet_rows or 0.0 for s in generated)
                                       if dropped_now else None),
                "filtered_standard_rows": (sum(s.filtered_standard_rows or 0 for s in generated)
                                           if dropped_now else None),
                "prompts_added": sum(s.samples + sum((s.filtered or {}).values()) for s in generated) // copies}
    return [f"{key}={getattr(version, key)!r}, the shards it generated give {value!r}"
            for key, value in expected.items() if not _same(getattr(version, key), value)]


def oracle_problems(out: Path, manifest: Manifest) -> list[str]:
    """totals.oracle_accuracy against the oracle run again on every image of the dataset (shapes-world models)."""
    from hdiff.shapes.built import built_accuracy, has_oracle

    claimed = manifest.totals.oracle_accuracy
    model = (manifest.config.get("model") or {}).get("id")
    if claimed is None and not has_oracle(model):
        return []
    samples = (sample for row in manifest.shards if row.has_tar
               for sample in tar_samples(layout.tar_path(out, row.shard)))
    where = f"{layout.MANIFEST_NAME}: totals.oracle_accuracy"
    try:
        scored = built_accuracy(model if has_oracle(model) else "hdiff/shapes", samples)
    except ValueError as exc:  # the oracle reads shapes-world images only
        return [f"{where} is given, but the oracle cannot read the images ({exc})"]
    expected = OracleAccuracy.model_validate(scored) if scored is not None else None
    if claimed is None or expected is None:
        return [] if claimed == expected else [f"{where}={claimed!r}, the images give {expected!r}"]
    return [f"{where}.{key}={value!r}, the images give {right!r}"
            for key, value, right in differing_fields(claimed, expected)]


def _same(claimed, expected) -> bool:
    """Equal, numbers to REL_TOL (sums in another order differ in the last bits)."""
    numbers = (int, float)
    if isinstance(expected, numbers) and not isinstance(expected, bool):
        return isinstance(claimed, numbers) and not isinstance(claimed, bool) and _close(float(claimed), expected)
    if isinstance(expected, list) and isinstance(claimed, list) and len(claimed) == len(expected):
        return all(_same(c, e) for c, e in zip(claimed, expected))
    return claimed == expected


def card_problems(out: Path, manifest: Manifest | None) -> list[str]:
    """README.md: present, and (with a manifest) the card the manifest gives, figure for figure."""
    try:
        text = layout.card_path(out).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{layout.CARD_NAME}: missing or unreadable ({type(exc).__name__})"]
    if not text.startswith("---\n"):
        return [f"{layout.CARD_NAME}: no YAML front matter"]
    if manifest is None:
        return []
    expected = dataset_card(out, manifest)
    if text == expected:
        return []
    ours, theirs = text.splitlines(), expected.splitlines()
    _, i, _, j, _ = next(op for op in difflib.SequenceMatcher(None, ours, theirs, autojunk=False).get_opcodes()
                         if op[0] != "equal")
    here, there = (ours[i] if i < len(ours) else ""), (theirs[j] if j < len(theirs) else "")
    start = max(0, len(os.path.commonprefix([here, there])) - 40)
    return [f"{layout.CARD_NAME}: differs from the card {layout.MANIFEST_NAME} gives, at line {i + 1}: "
            f"{here[start:start + 100]!r}; the manifest gives {there[start:start + 100]!r}"]


def config_file_problems(out: Path, manifest: Manifest) -> list[str]:
    """hdiff.yaml: the dataset's own config the manifest gives (hdiff.dataset.recipe)."""
    try:
        text = layout.config_path(out).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{layout.CONFIG_NAME}: missing or unreadable ({type(exc).__name__})"]
    return [] if text == dataset_config_text(manifest) else \
        [f"{layout.CONFIG_NAME}: differs from the config {layout.MANIFEST_NAME} gives"]


def sizes_problems(out: Path, manifest: Manifest) -> list[str]:
    """data/sizes.json: the sample count of every listed tar, as the commit writes it."""
    path = sidecars.sizes_path(out)
    where = path.relative_to(out).as_posix()
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [f"{where}: missing or unreadable ({type(exc).__name__})"]
    return [] if data == sidecars.sizes_json(manifest.shards) else \
        [f"{where}: differs from the shards' sample counts in {layout.MANIFEST_NAME}"]


def folder_file_problems(out: Path, manifest: Manifest | None = None) -> tuple[list[str], dict | None]:
    """The card (the one the manifest gives), grid, dendrogram (when present) and build_settings.json (the
    manifest's identity): present, readable, decoding; and the identity (the manifest's, else build_settings.json's;
    None when neither is readable)."""
    problems = card_problems(out, manifest)
    for figure, required in ((layout.grid_path(out), True), (layout.dendrogram_path(out), False)):
        if not figure.exists() and not required:
            continue
        try:
            with Image.open(figure) as image:
                image.load()
        except Exception as exc:  # PIL reports damage through many exception types
            problems.append(f"{figure.name}: missing or does not decode ({type(exc).__name__})")
    identity = manifest.identity if manifest is not None else None
    try:
        recorded = json.loads(layout.settings_path(out).read_text(encoding="utf-8"))
        int(recorded["generation.seed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problems.append(f"{layout.SETTINGS_NAME}: missing or unreadable ({type(exc).__name__})")
        return problems, identity
    if identity is not None:
        problems += [f"{layout.SETTINGS_NAME}: {change.replace(' → ', ', the manifest says ', 1)}"
                     for change in changes(recorded, identity)]
    return problems, identity if identity is not None else recorded


def recorded_settings(out: Path) -> dict | None:
    """build_settings.json's record, None when it is missing or unreadable."""
    try:
        recorded = json.loads(layout.settings_path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def verify_build(out_dir: str | Path) -> list[str]:
    """Every problem found in the build folder, one line each; an empty list means the build is sound. While a
    run holds the folder's lock, only the last commit is checked."""
    out = Path(out_dir)
    if not out.is_dir():
        return [f"{out}: no such build folder"]
    return check_folder(out, committed_only=lock_holder(layout.lock_path(out)) is not None)


def check_folder(out: Path, committed_only: bool) -> list[str]:
    """The problems of a build folder (see the module's docstring); `committed_only`: the last commit's files."""
    manifest, problems = read_manifest(out)
    if manifest is not None:
        listed = [row.shard for row in manifest.shards]
    else:
        listed = sorted(set(layout.tar_shards(out)) | set(layout.stats_shards(out)))
    identity = manifest.identity if manifest is not None else None
    if not committed_only:
        corpus = local_corpus_name(manifest) if manifest is not None else None
        problems += layout_problems(out, set(listed) if manifest is not None else None, corpus)
        file_issues, identity = folder_file_problems(out, manifest)
        problems += file_issues
        if manifest is not None:
            problems += sizes_problems(out, manifest) + config_file_problems(out, manifest)
    if identity is None and committed_only:
        identity = recorded_settings(out)
    base_seed = (identity or {}).get("generation.seed")
    base_seed = base_seed if isinstance(base_seed, int) else None

    seen: dict[str, str] = {}
    shared = SharedValues()
    stats: dict[str, ShardStats] = {}
    all_complete, samples, unet_rows, standard_evals = True, 0, 0.0, 0
    for shard in listed:
        tar = layout.tar_path(out, shard)
        shard_stats = read_stats_file(out, shard, problems)
        if shard_stats is not None:
            stats[shard] = shard_stats
            problems += dropped_problems(shard, shard_stats) + other_shard_keys(shard, shard_stats, seen)
            if not shard_stats.has_tar:
                problems += tarless_problems(out, shard, shard_stats) + time_problems(shard, shard_stats)
                continue
        if tar.is_symlink() or not tar.is_file():
            if shard_stats is not None:
                problems.append(f"{layout.STATS_DIR}/{shard}.json: its tar {layout.DATA_DIR}/{shard}.tar is "
                                f"{'a symbolic link' if tar.is_symlink() else 'missing'}")
            all_complete = False
            continue
        reading = read_shard(out, shard, seen, problems, base_seed, identity, shared)
        if shard_stats is not None:
            problems += stats_problems(out, shard, shard_stats, reading)
            if manifest is not None:
                problems += sidecar_problems(out, shard, shard_stats, reading)
        all_complete &= reading.complete
        samples += len(reading.keys)
        unet_rows += reading.unet_rows
        standard_evals += reading.standard_evals
    if manifest is None:
        return problems
    record_sums = (unet_rows, standard_evals) if all_complete else None
    problems += figure_problems(manifest, stats, record_sums, samples_read=samples)
    if all_complete:
        problems += oracle_problems(out, manifest)
    return problems


def run_verify(out_dir: str | Path) -> int:
    """Print every problem of the build folder; 0 when there are none, else 1 (for `hdiff verify OUT`)."""
    holder = lock_holder(layout.lock_path(out_dir)) if Path(out_dir).is_dir() else None
    if holder is not None:
        print(f"{out_dir}: a run holds the folder ({holder}); checking its last commit only")
    problems = verify_build(out_dir)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{out_dir}: {len(problems)} problem(s)")
        return 1
    manifest = Manifest.read(out_dir)
    print(f"{out_dir}: ok ({manifest.totals.samples} samples in {len(manifest.shards)} shards)")
    return 0
