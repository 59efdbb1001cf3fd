"""Finishing a build: manifest.json (counts, per-shard table, compute totals, hardware), the README.md dataset card,
and the markdown summary and shard table the flow publishes as Prefect artifacts."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import BaseModel

import hdiff
from hdiff.machine import cpu_model
from hdiff.dataset import layout
from hdiff.files import write_atomically
from hdiff.dataset.verify import tar_samples
from hdiff.dataset.writer import ShardStats
from hdiff.records import ClusterStep, DatasetRecord
from hdiff.shapes.built import built_accuracy

MANIFEST_FORMAT = 1


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


def write_manifest(out_dir: str | Path, *, config: dict, ingest_report: dict, shard_stats: list[ShardStats | dict],
                   wall_seconds: float, hardware: dict) -> dict:
    """Write OUT/manifest.json from the finished shards' stats and return it.

    `ingest_report` is the ingest task's counts, stored as given; its `dropped` mapping (reason → count), when
    present, is shown in the card and the summary. `wall_seconds` is the whole build's wall time.
    """
    shards = sorted((ShardStats.model_validate(s) for s in shard_stats), key=lambda s: s.shard)
    unet_rows = sum(s.unet_rows for s in shards)
    standard_rows = sum(s.standard_rows for s in shards)
    manifest = {
        "format": MANIFEST_FORMAT,
        "hdiff_version": hdiff.__version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
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
            "wall_seconds": wall_seconds,
            "shard_wall_seconds": sum(s.wall_seconds for s in shards),
            "device_seconds": sum(s.device_seconds for s in shards),
            "tar_bytes": sum(s.tar_bytes for s in shards),
        },
        "hardware": hardware,
    }
    oracle = built_accuracy(config.get("model", {}).get("id"), (sample for s in shards
                                                    for sample in tar_samples(layout.tar_path(out_dir, s.shard))))
    if oracle is not None:  # the shapes world's oracle on the built images; other models have none
        manifest["totals"]["oracle_accuracy"] = oracle
    data = json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n"
    write_atomically(layout.manifest_path(out_dir), data.encode("utf-8"))
    return json.loads(data)


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


def prefect_summary_markdown(manifest: dict) -> str:
    """The build's summary for a Prefect markdown artifact: compute, hardware and ingest drops."""
    parts = ["# hdiff build", _compute_table(manifest), f"Hardware: {_hardware_line(manifest['hardware'])}"]
    if drops := _drops_table(manifest):
        parts += ["## Ingest drops", drops]
    return "\n\n".join(parts) + "\n"


def _size_category(samples: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if samples < limit:
            return name
    return "1M<n<10M"


def card_front_matter(manifest: dict) -> dict:
    """The card's YAML header: the `configs` block points the Hub viewer at the tars."""
    return {
        "tags": ["synthetic"],
        "task_categories": ["text-to-image"],
        "size_categories": [_size_category(manifest["totals"]["samples"])],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": layout.DATA_FILES_GLOB}]}],
    }


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
        f"---\n{yaml.safe_dump(card_front_matter(manifest), sort_keys=False)}---",
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
    if layout.dendrogram_path(out).is_file():
        sections.append(f"One shard's prompt tree, cut where images stop sharing latents:\n\n"
                        f"![dendrogram]({layout.DENDROGRAM_NAME})")
    sections += [
        "## Files",
        f"- `{layout.DATA_FILES_GLOB}`: WebDataset shards; each sample is `<key>.{image_format}` (the image), "
        "`<key>.txt` (the prompt) and `<key>.json` (the record below). Keys have no dots.\n"
        f"- `{layout.STATS_DIR}/<shard>.json`: per-shard counts, sha256 and compute.\n"
        f"- `{layout.MANIFEST_NAME}`: the build's configuration, counts, per-shard table, totals and hardware.",
        "## Fields of the json record",
        _fields_table(DatasetRecord),
        "Each entry of `cluster_path`:",
        _fields_table(ClusterStep),
        _loading_section(image_format).strip(),
    ]
    if drops := _drops_table(manifest):
        sections += ["## Prompts dropped at ingest", drops]
    sections += ["## Build configuration",
                 f"```yaml\n{yaml.safe_dump(manifest['config'], sort_keys=True, allow_unicode=True)}```"]
    return "\n\n".join(sections) + "\n"


def write_dataset_card(out_dir: str | Path, manifest: dict) -> Path:
    """Write OUT/README.md (see `dataset_card`); returns its path."""
    path = layout.card_path(out_dir)
    write_atomically(path, dataset_card(out_dir, manifest).encode("utf-8"))
    return path
