"""Choosing and loading an adapter: by model_index.json's pipeline class, a folder's marker file, or by name."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hdiff.errors import HdiffError
from hdiff.models import flux, kandinsky, pixart, sd3, sdxl, shapes, stable_diffusion, unclip  # noqa: F401 (registers)
from hdiff.devices import resolve_device
from hdiff.models.base import ADAPTERS, Adapter
from hdiff.models.schedulers import make_scheduler

ALIASES = {shapes.SHAPES_MODEL_ID: "shapes", "shapes": "shapes"}


def _pipeline_class(source: str) -> str | None:
    """The `_class_name` in the model's model_index.json, from a local folder or the local Hub cache."""
    if Path(source).is_dir():
        index = Path(source) / "model_index.json"
        return _class_name(index) if index.exists() else None
    if source.startswith(("/", "./", "../", "~")) or len(Path(source).parts) > 2:  # a Hub id is `owner/name`
        raise HdiffError(f"model folder {source} does not exist")
    from huggingface_hub import hf_hub_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        path = hf_hub_download(source, "model_index.json", local_files_only=offline)
    except Exception:  # noqa: BLE001 - any failure here means "not available locally"
        raise HdiffError(f"model {source!r} is not in the local Hugging Face cache"
                         f"{' and the Hub is offline' if offline else ' and could not be fetched'}; fetch it on a "
                         f"connected machine with `hf download {source}` or pass a local folder") from None
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
    if Path(source).is_dir() and (Path(source) / "hdiff_shapes.json").exists():
        return "shapes"
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


def load_adapter(source: str = shapes.SHAPES_MODEL_ID, *, adapter: str | None = None, device: str = "auto",
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
    loaded = cls.from_pretrained(source, device=str(resolve_device(device)), dtype=dtype, allow_pickle=allow_pickle,
                                 **options)
    if scheduler is not None:
        loaded.scheduler = make_scheduler(scheduler, loaded.scheduler.config)
    return loaded
