"""OUT/hdiff.yaml: the dataset's own build config, runnable wherever the dataset lands (a pull, a copy).

Each commit writes it from the manifest (`dataset_config_text`), so it is a pure function of manifest.json and
`hdiff verify` checks it like the card. Nothing in it names the machine that built the dataset:

- `output: .`: the dataset folder itself. In a config file named hdiff.yaml that sits beside a manifest.json, a
  relative `output` and a `./` corpus path are relative to that folder (hdiff.dataset.config.load_config), so
  `hdiff build OUT/hdiff.yaml` extends OUT from any working directory;
- the corpus: a Hub dataset by id at the commit it resolved to (`source.revision`; to build from a newer commit,
  `--set source.revision=main`); a local corpus by file name, `./NAME`, beside the config, with the fingerprint
  of the files v1..vN were built from in a comment. Place the corpus (or a grown copy of it) under that name in the
  dataset folder (verify and push accept it there and never upload it), or pass `--set source.path_or_id=PATH`;
- the model: its id at its revision. A Hub model's revision is named in a comment and pinned by build_settings.json:
  a build whose model resolves to another revision stops before generating. A local model folder is named by its
  last part; pass `--set model.id=PATH` where the folder is elsewhere;
- machine settings (a Ray cluster's address) and where the builder published (`push`: a copy built elsewhere must
  not publish to the original's repo) are left out; the rest is the config as built.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from hdiff.dataset import layout
from hdiff.dataset.manifest import Manifest

LOCAL_PREFIX = "./"


def _provenance(manifest: Manifest, role: str) -> dict[str, Any] | None:
    entry = (manifest.provenance or {}).get(role)
    return entry.model_dump() if entry is not None else None


def local_corpus_name(manifest: Manifest) -> str | None:
    """The file name of the dataset's local corpus as hdiff.yaml names it beside itself; None for a Hub corpus."""
    source = _provenance(manifest, "source")
    if source is not None and source["hub"]:
        return None
    path_or_id = (manifest.config.get("source") or {}).get("path_or_id")
    return Path(path_or_id).name if isinstance(path_or_id, str) and path_or_id else None


def dataset_config(manifest: Manifest) -> dict[str, Any]:
    """The manifest's config with stable references: output `.`, the corpus as a Hub id at its revision or as
    `./NAME`, no Ray address, no push section."""
    config = copy.deepcopy(manifest.config)
    config["output"] = "."
    source = dict(config.get("source") or {})
    provenance = _provenance(manifest, "source")
    if provenance is not None and provenance["hub"]:
        source["path_or_id"] = provenance["dataset"]
        source["revision"] = provenance["revision"] or source.get("revision")
    elif (name := local_corpus_name(manifest)) is not None:
        source["path_or_id"] = LOCAL_PREFIX + name
    config["source"] = source
    if isinstance(config.get("runner"), dict):
        config["runner"] = {**config["runner"], "ray_address": None}
    config.pop("push", None)
    return config


def dataset_config_text(manifest: Manifest) -> str:
    """hdiff.yaml's text: a header saying what it pins and how to run it, then the config."""
    config = dataset_config(manifest)
    version = manifest.versions[-1].version if manifest.versions else 0
    source = _provenance(manifest, "source") or {}
    model = _provenance(manifest, "model") or {}
    lines = [f"# {config.get('name')} v{version}: the config this dataset was built with (written by hdiff at each "
             "commit).",
             "# `hdiff build hdiff.yaml` extends the dataset in this folder: here `output: .` and a ./ corpus are "
             "relative to this file.",
             "# build_settings.json pins what decides the images; a build that would change them stops first."]
    if source.get("hub"):
        lines.append(f"# corpus: {source['dataset']} at {source.get('revision')}; --set source.revision=main "
                     "builds from its newest commit.")
    elif (name := local_corpus_name(manifest)) is not None:
        lines.append(f"# corpus: the local file {name}, {source.get('revision')} in v{version}; put it (or a grown "
                     "copy) in this folder under that name, or pass --set source.path_or_id=PATH.")
    if model:
        lines.append(f"# model: {model.get('id')} at revision {model.get('revision')}; a local folder: pass "
                     "--set model.id=PATH.")
    body = yaml.safe_dump(in_field_order(config), sort_keys=False, allow_unicode=True, default_flow_style=False)
    return "\n".join(lines) + "\n" + body


def in_field_order(config: dict[str, Any]) -> dict[str, Any]:
    """The config's sections in BuildConfig's order (name, output, source, ...), keys within them sorted: the same
    text whichever order the manifest's JSON gave."""
    from hdiff.dataset.config import BuildConfig

    order = {name: index for index, name in enumerate(BuildConfig.model_fields)}

    def sorted_keys(value: Any) -> Any:  # in lists too (the scores' specs)
        if isinstance(value, dict):
            return {key: sorted_keys(value[key]) for key in sorted(value)}
        return [sorted_keys(item) for item in value] if isinstance(value, list) else value

    return {key: sorted_keys(config[key]) for key in sorted(config, key=lambda key: (order.get(key, len(order)), key))}


def write_dataset_config(out_dir: str | Path, manifest: Manifest) -> Path:
    """Write OUT/hdiff.yaml (under a temporary name, renamed)."""
    from hdiff.files import write_atomically

    path = layout.config_path(out_dir)
    write_atomically(path, dataset_config_text(manifest).encode("utf-8"))
    return path
