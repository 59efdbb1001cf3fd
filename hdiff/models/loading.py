"""Choosing and loading an adapter: by model_index.json's pipeline class, a folder's marker file, or by name."""

from __future__ import annotations

import json
from pathlib import Path

from hdiff import hub
from hdiff.errors import HdiffError
from hdiff.models import flux, kandinsky, pixart, sd3, sdxl, shapes, stable_diffusion, unclip  # noqa: F401 (registers)
from hdiff.devices import resolve_device
from hdiff.models.base import ADAPTERS, Adapter
from hdiff.models.schedulers import make_scheduler
from hdiff.shapes.model import METADATA_FILE, SHAPES_MODEL_ID, WEIGHTS_DIR, model_folder

ALIASES = {SHAPES_MODEL_ID: "shapes", "shapes": "shapes"}


def _pipeline_class(source: str) -> str | None:
    """The `_class_name` in the model's model_index.json, from a local folder, the local Hub cache or the Hub."""
    if Path(source).is_dir():
        index = Path(source) / "model_index.json"
        return _class_name(index) if index.exists() else None
    if not hub.looks_like_hub_id(source):
        raise HdiffError(f"model folder {source} does not exist")
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(source, "model_index.json", local_files_only=hub.offline())
    except Exception:  # noqa: BLE001 - any failure here means "not available"
        raise hub.missing_model_error(source) from None
    return _class_name(Path(path))


def _class_name(index: Path) -> str | None:
    try:
        return json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except (ValueError, AttributeError, OSError) as exc:
        raise HdiffError(f"{index} is not a readable model_index.json ({exc})") from None


def _adapter_by_class() -> dict[str, str]:
    return {cls_name: name for name, adapter in ADAPTERS.items() for cls_name in adapter.pipeline_classes}


def _supported() -> str:
    return ", ".join(f"{cls_name} ({name})" for cls_name, name in sorted(_adapter_by_class().items()))


def adapter_name_for(source: str) -> str:
    """The registered adapter for a model: by alias, the shapes model's marker file, or model_index.json's class."""
    if source in ALIASES:
        return ALIASES[source]
    if Path(source).is_dir() and (Path(source) / METADATA_FILE).exists():
        return "shapes"
    known = [name for name, adapter in ADAPTERS.items() if source in adapter.hub_ids]
    if known:
        return known[0]
    class_name = _pipeline_class(source)
    if class_name not in _adapter_by_class():
        raise HdiffError(f"no adapter for {source!r} (pipeline class {class_name}); hdiff runs {_supported()}")
    return _adapter_by_class()[class_name]


def check_forced_adapter(name: str, source: str) -> None:
    """A forced adapter must fit the model: when model_index.json names a pipeline class, the adapter loads it."""
    if source in ALIASES or not ADAPTERS[name].pipeline_classes:
        return
    try:
        class_name = _pipeline_class(source)
    except HdiffError:
        return  # no readable index here: the adapter's own loader reports what is missing
    if class_name is not None and class_name not in ADAPTERS[name].pipeline_classes:
        fits = _adapter_by_class().get(class_name)
        raise HdiffError(f"the {name} adapter runs {', '.join(ADAPTERS[name].pipeline_classes)}, not {source!r} "
                         f"({class_name}); " + (f"its adapter is {fits}" if fits else f"hdiff runs {_supported()}"))


def load_adapter(source: str = SHAPES_MODEL_ID, *, adapter: str | None = None, device: str = "auto",
                 scheduler: str | None = None, dtype=None, allow_pickle: bool = False, **options) -> Adapter:
    """The adapter for a model id or folder, on `device`, optionally with another scheduler.

    Weights load from safetensors files only unless `allow_pickle` (pickle files can run code when loaded).
    `options` are the adapter's own (`Adapter.options`); any other is refused before anything loads.
    """
    name = adapter or adapter_name_for(source)
    if name not in ADAPTERS:
        raise HdiffError(f"unknown adapter {name!r}; choose one of {', '.join(sorted(ADAPTERS))}")
    if adapter is not None:
        check_forced_adapter(name, source)
    cls = ADAPTERS[name]
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        raise HdiffError(f"the {name} adapter has no option {', '.join(map(repr, unknown))}; "
                         f"its options: {', '.join(cls.options) or 'none'}")
    require_fetchable(source, adapter=name, allow_pickle=allow_pickle, **options)
    sources = {"model": source, **cls.companion_sources(options)}
    loaded = cls.from_pretrained(source, device=str(resolve_device(device)), dtype=dtype, allow_pickle=allow_pickle,
                                 **options)
    if scheduler is not None:
        loaded.scheduler = make_scheduler(scheduler, loaded.scheduler.config)
    loaded.provenance = provenance(sources, cls)
    return loaded


def missing_model_commands(source: str, *, adapter: str | None = None, allow_pickle: bool = False,
                           **options) -> list[str]:
    """Offline: the `hf download` commands for the model and its companions (a prior) not in the local cache; empty
    online or when all are there. A missing local folder is an HdiffError."""
    if not hub.offline():
        return []
    try:
        cls = ADAPTERS.get(adapter or adapter_name_for(source))
    except hub.NotCached as exc:  # its model_index.json is not cached: its family is unknown
        return [exc.command]
    sources = [source, *(cls.companion_sources(options).values() if cls else ())]
    return [hub.model_download_command(s, allow_pickle) for s in sources
            if s not in ALIASES and hub.looks_like_hub_id(s) and hub.cached_commit(s) is None]


def require_fetchable(source: str, **settings) -> None:
    """Offline, the model and its companions must be in the local cache, or one line names the command that fetches
    the missing ones (before anything loads)."""
    if commands := missing_model_commands(source, **settings):
        raise hub.offline_error(f"model {source!r} (or a model it needs) is", commands)


def provenance(sources: dict[str, str], adapter: type[Adapter]) -> dict[str, str | None]:
    """What a record names about the loaded models: each one's revision (a commit sha from the cache, or a local
    folder's fingerprint) and the pipeline class. Companions (a prior) are named with their ids."""
    model = sources["model"]
    folder = str(WEIGHTS_DIR) if model in ALIASES else model
    cached_class = None if model in ALIASES else _pipeline_class(model)
    named = {"model_revision": hub.model_revision(folder),
             "pipeline_class": cached_class or adapter.pipeline_classes[0]}
    for role, source in sources.items():
        if role != "model":
            named.update({role: hub.portable_name(source), f"{role}_revision": hub.model_revision(source)})
    return named


def model_provenance(source: str, *, adapter: str | None = None, **options) -> dict[str, dict]:
    """The manifest's entries for a model and its companions: {"model": {"id", "revision", "pipeline_class"},
    "prior": {"id", "revision"}}."""
    cls = ADAPTERS[adapter or adapter_name_for(source)]
    named = provenance({"model": source, **cls.companion_sources(options)}, cls)
    entries = {"model": {"id": hub.portable_name(source), "revision": named["model_revision"], "pipeline_class": named["pipeline_class"]}}
    for role, companion in cls.companion_sources(options).items():
        entries[role] = {"id": hub.portable_name(companion), "revision": named[f"{role}_revision"]}
    return entries


def training_timesteps(source: str) -> int | None:
    """`num_train_timesteps` of the model's scheduler (scheduler/scheduler_config.json of a local folder, the
    shipped model, or the local Hub cache); None when it cannot be read without a download."""
    if source in ALIASES or Path(source).is_dir():
        path = model_folder(source) / "scheduler" / "scheduler_config.json"
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(source, "scheduler/scheduler_config.json", local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached: the load checks it later
            return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("num_train_timesteps")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_steps(source: str, steps: int | None, key: str = "steps") -> None:
    """HdiffError with one line when `steps` exceeds the model's scheduler's training timesteps."""
    available = training_timesteps(source) if steps is not None else None
    if available is not None and steps > available:
        raise HdiffError(f"{key}: {steps} steps are more than the {available} training timesteps of {source}'s "
                         f"scheduler; choose at most {available}")
