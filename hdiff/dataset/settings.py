"""The settings that decide how a prompt becomes an image, recorded in the build folder and checked on every re-run.

A re-run keeps every finished shard, so a re-run with another model, step count, τ, seed or sharding would mix two
datasets in one folder. The first run records these settings; a later run into a folder that holds finished shards
must match them, or it stops before generating anything. Which prompts the dataset holds is the corpus's business
(source and ingest settings may change: that is an update, see hdiff.dataset.update), and settings that only change
speed (device, batching, packing, runner) may change too.
"""

from __future__ import annotations

import json
from typing import Any

from hdiff.dataset import layout
from hdiff.files import write_atomically
from hdiff.dataset.config import MOVED_TO_GENERATION, BuildConfig
from hdiff.errors import HdiffError
from hdiff.settings import GenerationSettings

IMAGE_SETTINGS: dict[str, tuple[str, ...]] = {  # section -> fields that decide which images are built, and how
    "embedding": ("model",),
    "sharding": ("min_size", "max_size"),
    "model": ("id", "prior", "scheduler", "dtype"),
    "generation": tuple(name for name in GenerationSettings.model_fields if name not in GenerationSettings.speed_only),
    "output_format": ("image_format", "jpeg_quality"),
}
RENAMED = {f"model.{key}": f"generation.{key}" for key in MOVED_TO_GENERATION}  # keys of records before the move


def image_settings(config: BuildConfig) -> dict[str, Any]:
    """`{"generation.steps": 40, ...}`: the config's image-deciding settings as dotted keys, JSON values."""
    values = config.to_flow_parameters()
    found = {f"{section}.{field}": values[section][field]
             for section, fields in IMAGE_SETTINGS.items() for field in fields}
    if config.scores or config.filter:  # what each record holds, and which images a shard leaves out
        found.update({"scores": values["scores"], "filter": values["filter"]})
    return found


def claim_output(config: BuildConfig) -> None:
    """Check a resumed build's image settings against those its finished shards were made with, and record them.

    A folder with no finished shard takes the current settings (a first run, or one whose bad input stopped it
    before any shard was written); a folder whose shards predate the record is recorded as it is resumed.
    """
    path = layout.settings_path(config.output)
    current = image_settings(config)
    if path.exists() and layout.stats_shards(config.output):
        try:
            recorded = {RENAMED.get(key, key): value for key, value in json.loads(path.read_text()).items()}
        except (OSError, ValueError) as exc:
            raise HdiffError(f"{path} is unreadable ({exc}); restore it, or delete the folder to rebuild") from None
        changed = [f"{key} {recorded[key]!r} → {value!r}" for key, value in current.items()
                   if key in recorded and recorded[key] != value]
        if changed:
            raise HdiffError(f"{config.output} holds shards built with other settings ({'; '.join(changed)}): "
                             "build into a new output folder, or delete this one to rebuild it")
        if recorded == current:
            return
    write_atomically(path, (json.dumps(current, indent=1) + "\n").encode())
