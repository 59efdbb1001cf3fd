"""A dataset's identity: everything that decides its pixels, recorded by its first run and checked on every re-run.

A re-run keeps every finished shard, so a re-run with another model, step count, τ, seed, batching or sharding
would mix two datasets in one folder. The identity is:

- every setting of IMAGE_SETTINGS: the generation section whole (batching included: `max_batch`, `batch_multiple`
  and `pack_shards` decide which clusters share a denoiser call, and a float sum in another order can move a
  pixel by one level), the model (id, prior, scheduler, dtype, channels_last, compile), the embedding model and
  the shard sizes (they decide which prompts are sampled together), and the image format;
- the model's resolved revision: the commit sha a Hub id resolved to, or a content hash of a local folder
  (hdiff.models.loading.model_provenance), and the prior's.

Which prompts the dataset holds is the corpus's business (source and ingest settings may change: that is an update,
see hdiff.dataset.update), and the device, the runner and the embedding batch size may change too. Local paths are
kept by their last part (hdiff.dataset.card.portable): a moved model folder with the same files is the same model.

The first run writes the identity to build_settings.json before generating, and each commit writes it into the
manifest (`Manifest.identity`), so deleting build_settings.json hides nothing. A later run into a folder that holds
finished shards must have the same identity, or it stops before generating anything, with one line naming each
change. `hdiff verify` checks every record against it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hdiff.dataset import layout
from hdiff.dataset.card import portable
from hdiff.dataset.config import MOVED_TO_GENERATION, BuildConfig, GenerationConfig
from hdiff.dataset.manifest import Manifest
from hdiff.errors import HdiffError
from hdiff.files import write_atomically

IMAGE_SETTINGS: dict[str, tuple[str, ...]] = {  # section -> fields that decide which images are built, and how
    "embedding": ("model",),
    "sharding": ("min_size", "max_size"),
    "model": ("id", "prior", "scheduler", "dtype", "channels_last", "compile"),
    "generation": tuple(GenerationConfig.model_fields),
    "output_format": ("image_format", "jpeg_quality"),
}
REVISION_SUFFIX = ".revision"  # `model.revision`, `prior.revision`: a resolved revision, or None when unknown
RENAMED = {f"model.{key}": f"generation.{key}" for key in MOVED_TO_GENERATION}  # keys of records before the move


def image_settings(config: BuildConfig) -> dict[str, Any]:
    """`{"generation.steps": 40, ...}`: the config's image-deciding settings as dotted keys, JSON values, local
    paths by their last part."""
    values = config.to_flow_parameters()
    found = {f"{section}.{field}": portable(values[section][field])
             for section, fields in IMAGE_SETTINGS.items() for field in fields}
    if config.scores or config.filter:  # what each record holds, and which images a shard leaves out
        found.update({"scores": values["scores"], "filter": values["filter"]})
    return found


def model_revisions(config: BuildConfig) -> dict[str, str | None]:
    """`{"model.revision": ..., "prior.revision": ...}`: the revision each model of the config resolves to now
    (None for a Hub model not fetched yet: the commit fills it in)."""
    from hdiff.models.loading import model_provenance

    entries = model_provenance(config.model.id, **config.model.adapter_options())
    return {f"{role}{REVISION_SUFFIX}": entry["revision"] for role, entry in entries.items()}


def identity_of(config: BuildConfig) -> dict[str, Any]:
    """The identity of the dataset `config` builds: its image settings and its models' revisions."""
    return {**image_settings(config), **model_revisions(config)}


def changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`generation.steps 20 → 30` for each key whose value differs; a key one side lacks, or a revision one side
    does not know, is no change."""
    recorded = {RENAMED.get(key, key): portable(value) for key, value in recorded.items()}
    found = []
    for key, value in current.items():
        if key not in recorded or recorded[key] == value:
            continue
        if key.endswith(REVISION_SUFFIX) and (recorded[key] is None or value is None):
            continue
        found.append(f"{key} {recorded[key]!r} → {value!r}")
    return found


def recorded_identities(out: Path, manifest: Manifest | None) -> list[tuple[str, dict[str, Any]]]:
    """(file, identity) for each record of the identity a folder with finished shards holds: the manifest's, and
    build_settings.json (written by the first run before generating)."""
    found = []
    if manifest is not None and manifest.identity is not None:
        found.append((layout.MANIFEST_NAME, manifest.identity))
    path = layout.settings_path(out)
    if path.exists() and (manifest is not None or layout.stats_shards(out)):
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise HdiffError(f"{path} is unreadable ({type(exc).__name__}); restore it, or delete the folder to "
                             "rebuild") from None
        if not isinstance(recorded, dict):
            raise HdiffError(f"{path} is not a settings record; restore it, or delete the folder to rebuild")
        found.append((layout.SETTINGS_NAME, recorded))
    return found


def claim_output(config: BuildConfig, manifest: Manifest | None = None) -> dict[str, Any]:
    """Check a re-run's identity against the one its dataset (`manifest`, the committed one) and its finished
    shards were made with, record it in build_settings.json, and return it (the commit writes it into the manifest).

    A folder with no finished shard takes the current identity (a first run, or one whose bad input stopped it
    before any shard was written); a dataset that predates the record is recorded as it is resumed.
    """
    out = Path(config.output)
    current = identity_of(config)
    for where, recorded in recorded_identities(out, manifest):
        if changed := changes(recorded, current):
            raise HdiffError(f"{config.output} holds shards built with other settings ({'; '.join(changed)}; "
                             f"recorded in {where}): build into a new output folder, or delete this one to rebuild it")
        for key, value in recorded.items():  # a revision known then and not now (a Hub model not fetched yet)
            if key.endswith(REVISION_SUFFIX) and current.get(key, value) is None:
                current[key] = value
    data = (json.dumps(current, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    path = layout.settings_path(out)
    if not path.is_file() or path.read_bytes() != data:
        write_atomically(path, data)
    return current


def committed_identity(claimed: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
    """The identity a run commits: the claimed one with the revisions the loaded models resolved to
    (hdiff.dataset.sources.build_provenance). HdiffError when a model changed while the run generated."""
    resolved = {f"{role}{REVISION_SUFFIX}": entry.get("revision") for role, entry in provenance.items()
                if role != "source" and isinstance(entry, dict)}
    if changed := changes(claimed, resolved):
        raise HdiffError(f"a model changed while the run generated ({'; '.join(changed)}): nothing committed; "
                         "build again with the model left as it is")
    return {**claimed, **{key: value for key, value in resolved.items() if value is not None}}
