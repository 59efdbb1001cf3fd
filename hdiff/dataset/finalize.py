"""Committing a run: check the dataset it leaves, then write the grid, the README.md dataset card and, last,
manifest.json (counts, per-shard table, compute totals, versions, hardware) — the commit — and remove the shards the
dataset no longer has. Also the markdown summary and shard table the flow publishes as Prefect artifacts."""

from __future__ import annotations

import datetime
import io
import json
import os
import platform
from pathlib import Path
from typing import Any, get_origin

import numpy as np
import yaml
from PIL import Image
from pydantic import BaseModel

import hdiff
from hdiff.dataset import card, layout, sidecars
from hdiff.dataset.update import Committed, RunPlan, coverage_problems, version_entry
from hdiff.dataset.writer import (IMAGE_ENCODERS, ShardStats, clean_partials, read_stats, shard_is_complete,
                                  tar_samples)
from hdiff.errors import HdiffError
from hdiff.figures import save_grid
from hdiff.files import atomic_path, write_atomically
from hdiff.machine import cpu_model
from hdiff.records import ClusterStep, DatasetRecord
from hdiff.shapes.built import built_accuracy

MANIFEST_FORMAT = 2


def hardware_info() -> dict[str, Any]:
    """The machine the build ran on: CPU, core count, platform, Python, torch version, GPU name and count if any."""
    info: dict[str, Any] = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version(), "torch": None, "cuda": None, "gpu": None,
                            "gpu_count": 0}
    try:
        import torch
    except ImportError:
        return info
    info["torch"] = torch.__version__
    if torch.cuda.is_available():
        info.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count())
    return info


def percent_saved(unet_rows: float, standard_rows: float) -> float:
    """UNet rows saved against standard sampling, in percent (0 when nothing was generated)."""
    return 100.0 * (1.0 - unet_rows / standard_rows) if standard_rows else 0.0


def manifest_for(*, config: dict, ingest_report: dict, shards: list[ShardStats], versions: list[dict],
                 hardware: dict, created_utc: str | None = None, provenance: dict | None = None) -> dict:
    """The manifest of a dataset of `shards` (in listing order) whose history is `versions`.

    `ingest_report` is the last run's ingest counts, stored as given; its `dropped` mapping (reason → count), when
    present, is shown in the card and the summary. `provenance`: the corpus and models with their revisions
    (hdiff.dataset.card.provenance_section shows it).
    """
    unet_rows = sum(s.unet_rows for s in shards)
    standard_rows = sum(s.standard_rows for s in shards)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {
        "format": MANIFEST_FORMAT,
        "hdiff_version": hdiff.__version__,
        "created_utc": created_utc or now,
        "updated_utc": now,
        "config": config,
        "counts": {"shards": len(shards), "samples": sum(s.samples for s in shards),
                   "image_formats": sorted({s.image_format for s in shards}),
                   "taus": sorted({tau for s in shards for tau in s.taus})},  # the τ actually used, per record
        "ingest": ingest_report,
        "shards": [s.model_dump(mode="json", exclude={"keys"}) for s in shards],
        "totals": {
            "samples": sum(s.samples for s in shards),
            "unet_rows": unet_rows,
            "standard_rows": standard_rows,
            "percent_saved": percent_saved(unet_rows, standard_rows),
            "wall_seconds": sum(v["wall_seconds"] for v in versions),
            "shard_wall_seconds": sum(s.wall_seconds for s in shards),
            "device_seconds": sum(s.device_seconds for s in shards),
            "tar_bytes": sum(s.tar_bytes for s in shards),
        },
        "versions": versions,
        "hardware": hardware,
        "provenance": provenance,
    }


def write_manifest(out_dir: str | Path, manifest: dict) -> dict:
    """Write OUT/manifest.json atomically and return it as read back (JSON types)."""
    data = json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n"
    write_atomically(layout.manifest_path(out_dir), data.encode("utf-8"))
    return json.loads(data)


def commit_run(out_dir: str | Path, *, config: dict, committed: Committed, plan: RunPlan, ingest_report: dict,
               wall_seconds: float, keep_extra: bool, provenance: dict | None = None,
               model_id: str | None = None) -> dict:
    """Commit what the run wrote: check the dataset it leaves (every corpus sample in exactly one shard, every new
    shard's tar equal to its stats), write the sidecars, grid, card and manifest, then remove the shards the dataset
    no longer has. A run that changes nothing writes nothing and adds no version. `config` and `provenance` are
    stored as given (pass them through hdiff.dataset.card.portable). For a shapes-world `model_id` the oracle's
    accuracy on every image of the dataset goes into the totals (hdiff.shapes.built). Returns the manifest;
    HdiffError (nothing committed) when a check fails."""
    out = Path(out_dir)
    clean_partials(out)  # left by writers killed during the run (a lost Ray node's); none is writing now
    final_names = plan.final_shards(committed)
    leftovers = (set(layout.stats_shards(out)) | set(layout.tar_shards(out))) - final_names
    if committed.manifest is not None and final_names == set(committed.shards):
        remove_shards(out, leftovers)  # finished shards of a killed run that this run did not plan
        return committed.manifest
    order = [name for name in committed.shards if name in final_names]
    order += [name for name in [r.new for r in plan.rewrites] + [s.name for s in plan.shards] if name not in order]
    final = {name: read_stats(out, name) for name in order}
    problems = [f"{name}: no readable stats" for name, stats in final.items() if stats is None]
    problems += [f"{name}: its tar differs from its stats" for name in set(order) - set(committed.shards)
                 if final[name] is not None and not shard_is_complete(out, name)]
    if not problems:
        problems = coverage_problems(final, plan.expected_keys, keep_extra)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise HdiffError(f"{out}: nothing committed, the run left an inconsistent dataset: "
                         f"{'; '.join(problems[:3])}{more}")
    versions = committed.versions + [version_entry(committed, plan, final, wall_seconds)]
    manifest = manifest_for(config=config, ingest_report=ingest_report, shards=list(final.values()),
                            versions=versions, hardware=hardware_info(), provenance=provenance,
                            created_utc=(committed.manifest or {}).get("created_utc"))
    oracle = built_accuracy(model_id, (sample for name in order for sample in tar_samples(layout.tar_path(out, name))))
    if oracle is not None:  # the shapes world's oracle on the built images; other models have none
        manifest["totals"]["oracle_accuracy"] = oracle
    sidecars.write_sidecars(out, list(final.values()))
    manifest = write_dataset_files(out, manifest, order)
    remove_shards(out, leftovers)
    return manifest


def write_dataset_files(out: Path, manifest: dict, shards: list[str]) -> dict:
    """The grid (of the first images of `shards`), the card and last the manifest, each under a temporary name and
    renamed; returns the manifest as written."""
    with atomic_path(layout.grid_path(out)) as tmp:
        save_grid(sample_grid_images(out, shards), tmp)
    write_dataset_card(out, manifest)
    return write_manifest(out, manifest)


def remove_shards(out: Path, names: set[str]) -> None:
    """Delete shards' stats (their done-markers), then their tars and metadata tables."""
    for name in sorted(names):
        layout.stats_path(out, name).unlink(missing_ok=True)
        layout.tar_path(out, name).unlink(missing_ok=True)
        sidecars.metadata_path(out, name).unlink(missing_ok=True)


def sample_grid_images(out_dir: str | Path, shards: list[str], limit: int = 64) -> list[np.ndarray]:
    """The first `limit` images of `shards`, read back from their tars."""
    images = []
    for shard in shards:
        for _, files in tar_samples(layout.tar_path(out_dir, shard)):
            data = next(files[ext] for ext in files if ext in IMAGE_ENCODERS)
            images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
            if len(images) >= limit:
                return images
    return images


def shard_table_rows(manifest: dict) -> list[dict]:
    """One row per shard, for a Prefect table artifact."""
    return [{"shard": s["shard"], "samples": s["samples"], "unet_rows": round(s["unet_rows"], 3),
             "standard_rows": s["standard_rows"],
             "percent_saved": round(percent_saved(s["unet_rows"], s["standard_rows"]), 2),
             "wall_seconds": round(s["wall_seconds"], 2), "device_seconds": round(s["device_seconds"], 2),
             "MiB": round(s["tar_bytes"] / 2**20, 2)} for s in manifest["shards"]]


def _compute_table(manifest: dict) -> str:
    t = manifest["totals"]
    rows = [("images", f"{t['samples']:,}"), ("shards", f"{manifest['counts']['shards']:,}"),
            ("UNet rows (hdiff)", f"{t['unet_rows']:,.0f}"),
            ("UNet rows (standard sampling)", f"{t['standard_rows']:,}"),
            ("compute saved", f"{t['percent_saved']:.1f}%"),
            *([("oracle accuracy", f"{100 * t['oracle_accuracy']['all']:.1f}% of {t['oracle_accuracy']['n']:,} images")]
              if "oracle_accuracy" in t else []),
            *([("prompts not understood", f"{t['oracle_accuracy']['not_understood']:,}")]
              if "not_understood" in t.get("oracle_accuracy", {}) else []),
            ("τ", ", ".join(f"{tau:g}" for tau in manifest["counts"].get("taus", [])) or "—"),
            ("wall time", f"{t['wall_seconds']:,.1f} s"),
            ("device time", f"{t['device_seconds']:,.1f} s"), ("size", f"{t['tar_bytes'] / 2**20:,.1f} MiB")]
    return "\n".join(["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])


def _hardware_line(hardware: dict) -> str:
    gpu = f"{hardware['gpu']} ×{hardware.get('gpu_count', 1)}" if hardware.get("gpu") else "no GPU"
    torch = f"torch {hardware['torch']}" if hardware.get("torch") else "no torch"
    return f"{hardware.get('cpu', '?')} ({hardware.get('cpu_count', '?')} cores), {gpu}, {torch}"


def _drops_table(manifest: dict) -> str | None:
    dropped = (manifest.get("ingest") or {}).get("dropped")
    if not isinstance(dropped, dict) or not dropped:
        return None
    return "\n".join(["| reason | prompts dropped |", "|---|---|",
                      *(f"| {reason} | {count:,} |" for reason, count in sorted(dropped.items()))])


def _versions_table(manifest: dict) -> str | None:
    versions = manifest.get("versions") or []
    if not versions:
        return None
    rows = [f"| v{v['version']} | {v['created_utc']} | `{v['corpus']['fingerprint'][:12]}` | {v['prompts_added']:,} | "
            f"{v['prompts_removed']:,} | {v['prompts_not_in_corpus']:,} | {len(v['shards_added'])} / "
            f"{len(v['shards_removed'])} | {v['samples']:,} | {v['unet_rows']:,.0f} | {v['device_seconds']:,.1f} |"
            for v in versions]
    return "\n".join(["| version | UTC | corpus | prompts added | removed | kept, not in corpus | shards +/− | "
                      "images | UNet rows | device s |", "|---|---|---|---|---|---|---|---|---|---|", *rows])


def prefect_summary_markdown(manifest: dict) -> str:
    """The build's summary for a Prefect markdown artifact: compute, hardware and ingest drops."""
    parts = ["# hdiff build", _compute_table(manifest), f"Hardware: {_hardware_line(manifest['hardware'])}"]
    if history := _versions_table(manifest):
        parts += ["## Versions", history]
    if drops := _drops_table(manifest):
        parts += ["## Ingest drops", drops]
    return "\n\n".join(parts) + "\n"


def _type_name(annotation: Any) -> str:
    name = str(annotation) if get_origin(annotation) else getattr(annotation, "__name__", str(annotation))
    return name.replace("hdiff.records.", "")


def _fields_table(model: type[BaseModel]) -> str:
    """A markdown table of a record model's fields, types and descriptions (the schema is the one source)."""
    rows = [(name, _type_name(field.annotation), field.description or "") for name, field in model.model_fields.items()]
    return "\n".join(["| field | type | meaning |", "|---|---|---|",
                      *(f"| `{name}` | {kind} | {text} |" for name, kind, text in rows)])


def _loading_section(image_format: str) -> str:
    return f"""## Loading

With 🤗 datasets, from this folder (on the Hub, `load_dataset(repo_id, split="train")` reads the `configs` block):

```python
from datasets import load_dataset

ds = load_dataset("webdataset", data_files={{"train": "{layout.DATA_FILES_GLOB}"}}, split="train")
image, prompt, record = ds[0]["{image_format}"], ds[0]["txt"], ds[0]["json"]
```

With webdataset, streaming the tars:

```python
import glob

import webdataset as wds

samples = wds.WebDataset(sorted(glob.glob("{layout.DATA_FILES_GLOB}")), shardshuffle=False).decode("pil")
image, prompt, record = next(iter(samples.to_tuple("{image_format}", "txt", "json")))
```

With hdiff's training loader (shard shuffling, node and worker splitting, resampled epochs):

```python
from hdiff.data import make_loader

loader = make_loader(".", batch_size=4)  # this folder; batches of (images (B, 3, H, W) in [0, 1], prompts, records)
images, prompts, records = next(iter(loader))
```
"""


def dataset_card(out_dir: str | Path, manifest: dict) -> str:
    """The text of README.md: YAML front matter, then what the data is, its compute, fields, loading and config."""
    out = Path(out_dir)
    totals, image_format = manifest["totals"], (manifest["counts"]["image_formats"] or ["png"])[0]
    title = manifest["config"].get("name") or out.resolve().name
    sections = [
        f"# {title}",
        f"{totals['samples']:,} synthetic images, each with its prompt and a full generation record, built by "
        f"hdiff {manifest['hdiff_version']}, which shares the early denoising steps of similar prompts "
        "(Decatur et al., ICCV 2025, arXiv 2508.21032).",
    ]
    if layout.grid_path(out).is_file():
        sections.append(f"![sample grid]({layout.GRID_NAME})")
    sections += [
        "## Compute",
        f"Standard sampling would spend {totals['standard_rows']:,} UNet rows on these images; hdiff spent "
        f"{totals['unet_rows']:,.0f}, saving {totals['percent_saved']:.1f}%.",
        _compute_table(manifest),
        f"Hardware: {_hardware_line(manifest['hardware'])}.",
    ]
    if provenance := card.provenance_section(manifest):
        sections.append(provenance)
    if layout.dendrogram_path(out).is_file():
        sections.append(f"One shard's prompt tree, cut where images stop sharing latents:\n\n"
                        f"![dendrogram]({layout.DENDROGRAM_NAME})")
    sections += [
        "## Files",
        f"- `{layout.DATA_FILES_GLOB}`: WebDataset shards; each sample is `<key>.{image_format}` (the image), "
        "`<key>.txt` (the prompt) and `<key>.json` (the record below). Keys have no dots.\n"
        f"- `{sidecars.METADATA_GLOB}`: one table per shard, a row per sample (key, prompt, seed, τ, UNet rows, "
        "cluster path length, source row and columns): `pandas.read_parquet`, or `load_dataset(\"parquet\", "
        f"data_files=\"{sidecars.METADATA_GLOB}\")`.\n"
        f"- `{layout.DATA_DIR}/{sidecars.SIZES_NAME}`: samples per tar, for webdataset loaders.\n"
        f"- `{layout.STATS_DIR}/<shard>.json`: per-shard counts, sha256 and compute.\n"
        f"- `{layout.MANIFEST_NAME}`: the build's configuration, counts, per-shard table, totals, versions and "
        "hardware.",
        "## Fields of the json record",
        _fields_table(DatasetRecord),
        "Each entry of `cluster_path`:",
        _fields_table(ClusterStep),
        _loading_section(image_format).strip(),
    ]
    if history := _versions_table(manifest):
        sections += ["## Versions", "Each run that changed the dataset (the corpus column is its fingerprint; "
                     "compute is what that run generated):", history]
    if drops := _drops_table(manifest):
        sections += ["## Prompts dropped at ingest", drops]
    sections += ["## Build configuration",
                 f"```yaml\n{yaml.safe_dump(manifest['config'], sort_keys=True, allow_unicode=True)}```"]
    return card.card_text(manifest, "\n\n".join(sections) + "\n")


def write_dataset_card(out_dir: str | Path, manifest: dict) -> Path:
    """Write OUT/README.md (see `dataset_card`); returns its path."""
    path = layout.card_path(out_dir)
    write_atomically(path, dataset_card(out_dir, manifest).encode("utf-8"))
    return path
