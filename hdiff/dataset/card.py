"""The dataset card's metadata, built with huggingface_hub's DatasetCard / DatasetCardData, and the build's settings
and provenance as the card and the manifest show them: without local absolute paths.

The `configs` block points `datasets.load_dataset(folder_or_repo)` and the Hub's viewer at the tars. The per-shard
metadata tables beside them (hdiff.dataset.sidecars) are not a second subset: `datasets` reads every subset of a
folder with one builder, so they are read as parquet files (`load_dataset("parquet", data_files=...)`, pandas).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hdiff.dataset import layout

SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"))


def size_category(samples: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if samples < limit), "10M<n<100M")


def portable(value: Any) -> Any:
    """`value` with every absolute local path replaced by its last part (a folder or file name), recursively."""
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item) for item in value]
    if isinstance(value, str) and Path(value).expanduser().is_absolute():
        return Path(value).expanduser().name
    return value


def card_data(manifest: dict) -> Any:
    """The card's YAML header as a huggingface_hub DatasetCardData."""
    from huggingface_hub import DatasetCardData

    source = (manifest.get("provenance") or {}).get("source") or {}
    hub_source = source.get("dataset") if source.get("hub") else None
    return DatasetCardData(
        license="other",  # the images follow the terms of the model and of the prompts' source, named in the card
        pretty_name=manifest["config"].get("name"),
        task_categories=["text-to-image"],
        tags=["synthetic", "hdiff"],
        size_categories=[size_category(manifest["totals"]["samples"])],
        source_datasets=[hub_source] if hub_source else None,
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": layout.DATA_FILES_GLOB}]}],
    )


def card_text(manifest: dict, body: str) -> str:
    """README.md: the DatasetCard of `card_data(manifest)` with `body` (markdown) under its header."""
    from huggingface_hub import DatasetCard

    return str(DatasetCard(f"---\n{card_data(manifest).to_yaml()}\n---\n\n{body}"))


def provenance_section(manifest: dict) -> str | None:
    """Markdown: the corpus and the models the images came from, with their revisions."""
    provenance = manifest.get("provenance")
    if not provenance:
        return None
    lines = ["| | id | revision |", "|---|---|---|"]
    for role, entry in provenance.items():
        where = entry.get("dataset") or entry.get("id")
        detail = ", ".join(f"{k} {entry[k]}" for k in ("name", "split", "pipeline_class") if entry.get(k))
        lines.append(f"| {role}{f' ({detail})' if detail else ''} | `{where}` | `{entry.get('revision')}` |")
    return "## Provenance\n\n" + "\n".join(lines)
