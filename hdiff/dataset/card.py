"""The dataset card, README.md, rendered from the manifest: YAML front matter (huggingface_hub's DatasetCard /
DatasetCardData), then what the data is, its compute, provenance, files, fields, loading, versions, ingest drops and
configuration. Also the build's summary and per-shard table as the flow publishes them (Prefect artifacts), and
the build's settings and provenance as the card and the manifest show them: without local absolute paths.

The `configs` block points `datasets.load_dataset(folder_or_repo)` and the Hub's viewer at the tars (with no tar, a
filter having dropped every image, the header turns the viewer off instead). The per-shard
metadata tables beside them (hdiff.dataset.sidecars) are not a second subset: `datasets` reads every subset of a
folder with one builder, so they are read as parquet files (`load_dataset("parquet", data_files=...)`, pandas).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import BaseModel

from hdiff.dataset import layout, sidecars
from hdiff.dataset.config import GENERATED_LICENSE_NAME, default_card
from hdiff.dataset.manifest import Hardware, Manifest, SourceProvenance, percent_saved
from hdiff.files import write_atomically
from hdiff.records import ClusterStep, DatasetRecord

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


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table of `str(cell)`s, escaped so that every row keeps its cells and shows its
    text: `|` escaped (inside code spans too, as GFM reads them), a line break made a space, and outside code spans
    `<` escaped (it would open an HTML tag: `sha256:<hex>`)."""
    def line(cells: Sequence[Any]) -> str:
        if len(cells) != len(header):
            raise ValueError(f"a table row has {len(cells)} cells, its header {len(header)}: {cells!r}")
        return "| " + " | ".join(_table_cell(cell) for cell in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(row) for row in rows)])


def _table_cell(value: Any) -> str:
    """One cell's markdown (see markdown_table)."""
    parts = " ".join(str(value).splitlines()).split("`")  # odd parts are inside code spans
    text = "`".join(part if i % 2 else part.replace("<", "\\<") for i, part in enumerate(parts))
    return text.replace("|", "\\|")


def card_license(config: dict[str, Any]) -> dict[str, str]:
    """The card section's license, license_name and license_link that are set (a config without a card section, as
    older builds wrote: the default, `other` named for the model's and the corpus's terms)."""
    card = config.get("card") if isinstance(config.get("card"), dict) else default_card().model_dump()
    return {key: card[key] for key in ("license", "license_name", "license_link") if card.get(key)}


def card_data(manifest: Manifest) -> Any:
    """The card's YAML header as a huggingface_hub DatasetCardData."""
    from huggingface_hub import DatasetCardData

    source = (manifest.provenance or {}).get("source")
    hub_source = source.dataset if isinstance(source, SourceProvenance) and source.hub else None
    return DatasetCardData(
        **card_license(manifest.config),
        pretty_name=manifest.config.get("name"),
        task_categories=["text-to-image"],
        tags=["synthetic", "hdiff"],
        size_categories=[size_category(manifest.totals.samples)],
        source_datasets=[hub_source] if hub_source else None,
        **viewer_fields(manifest),
    )


def viewer_fields(manifest: Manifest) -> dict:
    """The header's `configs` block over the tars, or (a filter dropped every image: no tar) the viewer off."""
    if manifest.totals.samples == 0:
        return {"viewer": False}
    return {"configs": [{"config_name": "default",
                         "data_files": [{"split": "train", "path": layout.DATA_FILES_GLOB}]}]}


def card_text(manifest: Manifest, body: str) -> str:
    """README.md: the DatasetCard of `card_data(manifest)` with `body` (markdown) under its header."""
    from huggingface_hub import DatasetCard

    return str(DatasetCard(f"---\n{card_data(manifest).to_yaml()}\n---\n\n{body}"))


def provenance_section(manifest: Manifest) -> str | None:
    """Markdown: the corpus and the models the images came from, with their revisions."""
    if not manifest.provenance:
        return None
    rows = []
    first = {"source": 0, "model": 1}  # then companions by name: the same card from a manifest read back (sorted)
    for role, entry in sorted(manifest.provenance.items(), key=lambda item: (first.get(item[0], 2), item[0])):
        if isinstance(entry, SourceProvenance):
            where, details = entry.dataset, {"name": entry.name, "split": entry.split}
        else:
            where, details = entry.id, {"pipeline_class": entry.pipeline_class}
        detail = ", ".join(f"{key} {value}" for key, value in details.items() if value)
        rows.append((f"{role}{f' ({detail})' if detail else ''}", f"`{where}`", f"`{entry.revision}`"))
    return "## Provenance\n\n" + markdown_table(("", "id", "revision"), rows)


def license_section(manifest: Manifest) -> str:
    """Markdown: the license the header declares, with its name and link."""
    terms = card_license(manifest.config)
    named = f" (`{terms['license_name']}`)" if "license_name" in terms else ""
    link = f", {terms['license_link']}" if "license_link" in terms else ""
    note = (": the images follow the terms of the model and of the prompts' source"
            if terms.get("license_name") == GENERATED_LICENSE_NAME else "")
    return f"## License\n\n`{terms['license']}`{named}{link}{note}."


def scores_section(manifest: Manifest) -> str | None:
    """Markdown: each score's scorer and model (id, revision), its summary per version, and what the filter
    dropped, by rule (None when the build computed no score)."""
    if not manifest.scorers:
        return None
    lines = ["## Scores", "Each record's `scores` holds, and each metadata table's `scores.<name>` columns repeat:", "",
             markdown_table(("score", "scorer", "model", "revision"),
                            [(name, entry.get("scorer"), f"`{entry.get('id')}`", f"`{entry.get('revision')}`")
                             for name, entry in manifest.scorers.items()])]
    summaries = [(v.version, name, s) for v in manifest.versions for name, s in (v.scores or {}).items()]
    if summaries:
        figures = ("mean", "p5", "p50", "p95")
        lines += ["", markdown_table(("version", "score", "images", *figures),
                                     [(f"v{version}", name, f"{s['n']:,.0f}", *(f"{s[key]:.3f}" for key in figures))
                                      for version, name, s in summaries])]
    rules = manifest.config.get("filter") or {}
    if rules:
        dropped = manifest.totals.filtered or {}
        tarless = sum(not row.has_tar for row in manifest.shards)
        lines += ["", "Filtered: images outside " + ", ".join(f"`{k}: {v}`" for k, v in rules.items())
                  + " were not written"
                  + (f" ({', '.join(f'{k}: {n:,}' for k, n in dropped.items())}; each listed with its key, score and "
                     f"UNet rows in `{layout.STATS_DIR}/<shard>.json`)." if dropped else " (none was dropped).")
                  + (f" {tarless:,} shard(s) lost every image to the filter: they have stats only, no tar."
                     if tarless else "")]
    return "\n".join(lines)


def shard_table_rows(manifest: Manifest) -> list[dict]:
    """One row per shard, for a Prefect table artifact."""
    return [{"shard": s.shard, "samples": s.samples, "unet_rows": round(s.unet_rows, 3),
             "standard_rows": s.standard_rows, "percent_saved": round(percent_saved(s.unet_rows, s.standard_rows), 2),
             "wall_seconds": round(s.wall_seconds, 2), "device_seconds": round(s.device_seconds, 2),
             "MiB": round(s.tar_bytes / 2**20, 2)} for s in manifest.shards]


def _compute_table(manifest: Manifest) -> str:
    t, oracle = manifest.totals, manifest.totals.oracle_accuracy
    filtered = sum((t.filtered or {}).values())
    rows = [("images", f"{t.samples:,}"), ("shards", f"{manifest.counts.shards:,}"),
            ("UNet rows (hdiff)", f"{t.unet_rows:,.0f}"),
            ("UNet rows (standard sampling)", f"{t.standard_rows:,}"),
            *([(f"UNet rows on the {filtered:,} images filtered out (hdiff / standard)",
                f"{t.filtered_unet_rows:,.0f} / {t.filtered_standard_rows:,}")] if t.filtered_unet_rows is not None
              else []),
            ("compute saved", f"{t.percent_saved:.1f}%"),
            *([("oracle accuracy", f"{100 * oracle.all:.1f}% of {oracle.n:,} images")] if oracle else []),
            *([("prompts not understood", f"{oracle.not_understood:,}")]
              if oracle and oracle.not_understood is not None else []),
            ("τ", ", ".join(f"{tau:g}" for tau in manifest.counts.taus) or "—"),
            ("wall time", f"{t.wall_seconds:,.1f} s"),
            ("device time", f"{t.device_seconds:,.1f} s"),
            *([("scoring time (apart from generation)", f"{t.scoring_seconds:,.1f} s")]
              if t.scoring_seconds is not None else []),
            ("size", f"{t.tar_bytes / 2**20:,.1f} MiB")]
    return markdown_table(("", ""), rows)


def compute_sentence(totals) -> str:
    """The card's compute in words: the UNet rows spent against standard sampling's, those spent on images a filter
    dropped after generation included."""
    if totals.filtered_unet_rows is None:
        return (f"Standard sampling would spend {totals.standard_rows:,} UNet rows on these images; hdiff spent "
                f"{totals.unet_rows:,.0f}, saving {totals.percent_saved:.1f}%.")
    dropped = sum((totals.filtered or {}).values())
    return (f"Standard sampling would spend {totals.standard_rows:,} UNet rows on these images; hdiff spent "
            f"{totals.unet_rows:,.0f}. It also spent {totals.filtered_unet_rows:,.0f} UNet rows on {dropped:,} images "
            f"a filter dropped after generation (standard sampling: {totals.filtered_standard_rows:,}); over every "
            f"image generated, {totals.unet_rows + totals.filtered_unet_rows:,.0f} of "
            f"{totals.standard_rows + totals.filtered_standard_rows:,}, saving {totals.percent_saved:.1f}%.")


def _hardware_line(hardware: Hardware) -> str:
    gpu = f"{hardware.gpu} ×{hardware.gpu_count}" if hardware.gpu else "no GPU"
    torch = f"torch {hardware.torch}" if hardware.torch else "no torch"
    return f"{hardware.cpu} ({hardware.cpu_count} cores), {gpu}, {torch}"


def _drops_table(manifest: Manifest) -> str | None:
    dropped = manifest.ingest.dropped
    if not dropped:
        return None
    return markdown_table(("reason", "prompts dropped"),
                          [(reason, f"{count:,}") for reason, count in sorted(dropped.items())])


def _versions_table(manifest: Manifest) -> str | None:
    if not manifest.versions:
        return None
    rows = [(f"v{v.version}", v.created_utc, f"`{v.corpus.fingerprint[:12]}`", f"{v.prompts_added:,}",
             f"{v.prompts_removed:,}", f"{v.prompts_not_in_corpus:,}",
             f"{len(v.shards_added)} / {len(v.shards_removed)}", f"{v.samples:,}", f"{v.unet_rows:,.0f}",
             f"{v.device_seconds:,.1f}") for v in manifest.versions]
    return markdown_table(("version", "UTC", "corpus", "prompts added", "removed", "kept, not in corpus",
                           "shards +/−", "images", "UNet rows", "device s"), rows)


def prefect_summary_markdown(manifest: Manifest) -> str:
    """The build's summary for a Prefect markdown artifact: compute, hardware and ingest drops."""
    parts = ["# hdiff build", _compute_table(manifest), f"Hardware: {_hardware_line(manifest.hardware)}"]
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
    return markdown_table(("field", "type", "meaning"),
                          [(f"`{name}`", _type_name(field.annotation), field.description or "")
                           for name, field in model.model_fields.items()])


def _loading_section(image_format: str) -> str:
    """Markdown: loading with datasets, webdataset and hdiff's loader, each shuffled (a shard holds similar prompts:
    shards and the samples within them are shuffled, seeded)."""
    return f"""## Loading

A shard holds similar prompts (the ones that shared denoising steps), so shuffle for training: shards, and samples
across shards.

With 🤗 datasets, from this folder (`load_dataset(repo_id_or_folder, split="train")` reads the same tars through
the `configs` block):

```python
from datasets import load_dataset

ds = load_dataset("webdataset", data_files={{"train": "{layout.DATA_FILES_GLOB}"}}, split="train").shuffle(seed=0)
image, prompt, record = ds[0]["{image_format}"], ds[0]["txt"], ds[0]["json"]
```

With webdataset, streaming the tars (every shard in a shuffled order, then samples through a 1,000-sample buffer):

```python
import glob

import webdataset as wds

urls = sorted(glob.glob("{layout.DATA_FILES_GLOB}"))
samples = wds.WebDataset(urls, shardshuffle=len(urls), seed=0).shuffle(1000, seed=0).decode("pil")
image, prompt, record = next(iter(samples.to_tuple("{image_format}", "txt", "json")))
```

With hdiff's training loader (node and worker splitting, resampled epochs):

```python
from hdiff.data import make_loader

loader = make_loader(".", batch_size=4, shuffle_shards=True, shuffle_buffer=1000, seed=0)  # this folder
images, prompts, records = next(iter(loader))  # images (B, 3, H, W) in [0, 1], prompts, records
```
"""


def dataset_card(out_dir: str | Path, manifest: Manifest) -> str:
    """The text of README.md: YAML front matter, then what the data is, its compute, fields, loading and config."""
    out = Path(out_dir)
    totals, image_format = manifest.totals, (manifest.counts.image_formats or ["png"])[0]
    title = manifest.config.get("name") or out.resolve().name
    sections = [
        f"# {title}",
        f"{totals.samples:,} synthetic images, each with its prompt and a full generation record, built by "
        f"hdiff {manifest.hdiff_version}, which shares the early denoising steps of similar prompts "
        "(Decatur et al., ICCV 2025, arXiv 2508.21032).",
    ]
    if layout.grid_path(out).is_file():
        sections.append(f"![sample grid]({layout.GRID_NAME})")
    sections += [
        "## Compute",
        compute_sentence(totals),
        _compute_table(manifest),
        f"Hardware: {_hardware_line(manifest.hardware)}.",
    ]
    if provenance := provenance_section(manifest):
        sections.append(provenance)
    sections.append(license_section(manifest))
    if scores := scores_section(manifest):
        sections.append(scores)
    if layout.dendrogram_path(out).is_file():
        sections.append(f"One shard's prompt tree, cut where images stop sharing latents:\n\n"
                        f"![dendrogram]({layout.DENDROGRAM_NAME})")
    sections += [
        "## Files",
        f"- `{layout.DATA_FILES_GLOB}`: WebDataset shards; each sample is `<key>.{image_format}` (the image), "
        "`<key>.txt` (the prompt) and `<key>.json` (the record below). Keys have no dots.\n"
        f"- `{sidecars.METADATA_GLOB}`: one table per shard, a row per sample (key, prompt, seed, copy index, width, "
        "height, the image's sha256, τ, UNet rows, cluster path length, source row and columns, scores), each "
        "column named by its path in the json record (`source.columns.<name>`, `scores.<name>`): "
        f"`pandas.read_parquet`, or `load_dataset(\"parquet\", data_files=\"{sidecars.METADATA_GLOB}\")`.\n"
        f"- `{layout.DATA_DIR}/{sidecars.SIZES_NAME}`: samples per tar, for webdataset loaders.\n"
        f"- `{layout.STATS_DIR}/<shard>.json`: per-shard counts, sha256, compute, and start and end times.\n"
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
                 f"```yaml\n{yaml.safe_dump(manifest.config, sort_keys=True, allow_unicode=True)}```"]
    return card_text(manifest, "\n\n".join(sections) + "\n")


def write_dataset_card(out_dir: str | Path, manifest: Manifest) -> Path:
    """Write OUT/README.md (see `dataset_card`); returns its path."""
    path = layout.card_path(out_dir)
    write_atomically(path, dataset_card(out_dir, manifest).encode("utf-8"))
    return path
