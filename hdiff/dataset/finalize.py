"""Committing a run: check the dataset it leaves, then write the grid, the README.md dataset card
(hdiff.dataset.card), hdiff.yaml (hdiff.dataset.recipe) and, last, manifest.json (hdiff.dataset.manifest) — the commit — and remove the shards the
dataset no longer has."""

from __future__ import annotations

import concurrent.futures
import io
import itertools
from pathlib import Path

import numpy as np
from PIL import Image

from hdiff.dataset import card, layout, recipe, sidecars
from hdiff.dataset.ingest import IngestReport
from hdiff.dataset.manifest import Hardware, Manifest, OracleAccuracy, manifest_for
from hdiff.dataset.tars import tar_records, tar_samples
from hdiff.dataset.update import Committed, RunPlan, coverage_problems, version_entry
from hdiff.dataset.writer import IMAGE_ENCODERS, clean_partials, read_stats, shard_is_complete
from hdiff.errors import HdiffError
from hdiff.figures import save_grid
from hdiff.files import atomic_path, write_atomically
from hdiff.machine import usable_cores
from hdiff.shapes.built import built_accuracy


def commit_run(out_dir: str | Path, *, config: dict, committed: Committed, plan: RunPlan, ingest: IngestReport,
               wall_seconds: float, keep_extra: bool, provenance: dict | None = None,
               model_id: str | None = None, identity: dict | None = None, scorers: dict | None = None) -> Manifest:
    """Commit what the run wrote: check the dataset it leaves (every corpus sample in exactly one shard, every new
    shard's tar equal to its stats), write the sidecars, grid, card and manifest, then remove the shards the dataset
    no longer has. A run that changes nothing adds no version and writes nothing but the metadata tables, card
    and hdiff.yaml an older hdiff wrote otherwise (`refresh_derived_files`). `config` and `provenance` are
    stored as given (pass them through hdiff.dataset.card.portable); `ingest` is the run's ingest counts. For a
    shapes-world `model_id` the oracle's accuracy on every image of the dataset goes into the totals
    (hdiff.shapes.built). `identity` (hdiff.dataset.settings) goes into the manifest. Returns the manifest;
    HdiffError (nothing committed) when a check fails."""
    out = Path(out_dir)
    clean_partials(out)  # left by writers killed during the run (a lost Ray node's); none is writing now
    final_names = plan.final_shards(committed)
    leftovers = (set(layout.stats_shards(out)) | set(layout.tar_shards(out))) - final_names
    if committed.manifest is not None and final_names == set(committed.shards):
        remove_shards(out, leftovers)  # finished shards of a killed run that this run did not plan
        refresh_derived_files(out, committed.manifest)
        return committed.manifest
    order = [name for name in committed.shards if name in final_names]
    order += [name for name in [r.new for r in plan.rewrites if r.new] + [s.name for s in plan.shards]
              if name not in order]  # a shard pruned whole (new None) is gone
    final = {name: read_stats(out, name) for name in order}
    problems = [f"{name}: no readable stats" for name, stats in final.items() if stats is None]
    written = sorted(name for name in set(order) - set(committed.shards) if final[name] is not None)
    checked = in_threads(lambda name: (name, shard_is_complete(out, name)), written)
    problems += [f"{name}: its tar differs from its stats" for name, complete in checked if not complete]
    if not problems:
        problems = coverage_problems(final, plan.expected_keys, keep_extra)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise HdiffError(f"{out}: nothing committed, the run left an inconsistent dataset: "
                         f"{'; '.join(problems[:3])}{more}")
    versions = committed.versions + [scored_version(out, version_entry(committed, plan, final, wall_seconds),
                                                    [final[s.name] for s in plan.shards])]
    with_tar = [name for name in order if final[name].has_tar]  # not the shards whose every image was filtered out
    oracle = built_accuracy(model_id, (sample for name in with_tar
                                       for sample in tar_samples(layout.tar_path(out, name))))
    manifest = manifest_for(config=config, ingest=ingest, shards=list(final.values()), versions=versions,
                            hardware=Hardware.this_machine(), provenance=provenance,
                            oracle_accuracy=OracleAccuracy.model_validate(oracle) if oracle is not None else None,
                            created_utc=committed.manifest.created_utc if committed.manifest else None,
                            identity=identity, scorers=scorers)
    sidecars.write_sidecars(out, list(final.values()))
    write_dataset_files(out, manifest, with_tar)
    remove_shards(out, leftovers)
    return manifest


def refresh_derived_files(out: Path, manifest: Manifest) -> None:
    """The metadata tables, card and hdiff.yaml of a committed dataset made again where an older hdiff wrote them
    otherwise (other columns, other text); files already as this hdiff writes them are not touched."""
    for row in manifest.shards:
        if row.has_tar:  # a shard whose every image a filter dropped has no table
            sidecars.write_metadata(out, row.shard, row.sha256)
    for path, text in ((layout.card_path(out), card.dataset_card(out, manifest)),
                       (layout.config_path(out), recipe.dataset_config_text(manifest))):
        try:
            current = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            current = None
        if current != text:
            write_atomically(path, text.encode("utf-8"))


def scored_version(out: Path, version, generated: list) -> object:
    """The version with its images' score summary and scoring time, when the run scored them."""
    if not any(s.scoring_seconds is not None for s in generated):
        return version
    from hdiff.dataset.scoring_stage import score_summary

    records = (record for s in generated if s.has_tar for record in tar_records(layout.tar_path(out, s.shard)))
    return version.model_copy(update={"scores": score_summary(records),
                                      "scoring_seconds": sum(s.scoring_seconds or 0.0 for s in generated)})


def write_dataset_files(out: Path, manifest: Manifest, shards: list[str]) -> None:
    """The grid (of the first images of `shards`, shards with a tar), the card, hdiff.yaml and last the manifest,
    each under a temporary name and renamed."""
    with atomic_path(layout.grid_path(out)) as tmp:
        save_grid(sample_grid_images(out, shards), tmp)
    card.write_dataset_card(out, manifest)
    recipe.write_dataset_config(out, manifest)
    manifest.write(out)


def remove_shards(out: Path, names: set[str]) -> None:
    """Delete shards' stats (their done-markers), then their tars and metadata tables."""
    for name in sorted(names):
        layout.stats_path(out, name).unlink(missing_ok=True)
        layout.tar_path(out, name).unlink(missing_ok=True)
        sidecars.metadata_path(out, name).unlink(missing_ok=True)


def sample_grid_images(out_dir: str | Path, shards: list[str], limit: int = 64) -> list[np.ndarray]:
    """The first `limit` images of `shards`, read back from their tars."""
    samples = (files for shard in shards for _, files in tar_samples(layout.tar_path(out_dir, shard)))
    encoded = [next(files[ext] for ext in files if ext in IMAGE_ENCODERS)
               for files in itertools.islice(samples, limit)]
    return in_threads(lambda data: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), encoded)


def in_threads(function, items: list) -> list:
    """[function(item) for item in items], on a thread per usable core: for work that releases the GIL (hashing
    files, decoding images), which otherwise keeps the commit, and the build's end, on one core."""
    if len(items) < 2:
        return [function(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(min(usable_cores(), len(items))) as threads:
        return list(threads.map(function, items))
