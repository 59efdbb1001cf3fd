"""One scorer interface: images and their prompts in, one number per image out, batched on the build's device.

A scorer is configured once (its model, its device) and then called on lists: `scorer(images, prompts)` with images
uint8 (H, W, 3) arrays and prompts strings, giving a float array (N,). A *flag* scorer (nsfw) gives 1.0 for a
flagged image and 0.0 otherwise; a scorer that cannot judge an image (the oracle, on a prompt it cannot read) gives
NaN. Scorers register by name in SCORERS, the one list of choices the config, the command line and the code read.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import ClassVar, Literal

import numpy as np

from hdiff import hub
from hdiff.errors import HdiffError

Kind = Literal["score", "flag"]


class Scorer(ABC):
    """A configured scorer. `model_id` names the model it loaded (None for the oracle), `revision` its revision."""

    name: ClassVar[str]
    kind: ClassVar[Kind] = "score"
    default_model: ClassVar[str | None] = None
    unit: ClassVar[str] = ""  # what a number means, in words (the card's and the pilot's tables)
    batch_size: int = 32

    def __init__(self, model_id: str | None, device: str = "cpu"):
        self.model_id = model_id
        self.device = device
        self.revision: str | None = None  # set by `load`, once the model is fetched

    @classmethod
    def load(cls, model: str | None, *, device: str = "cpu", **options) -> Scorer:
        """The scorer with `model` loaded on `device` (safetensors weights only; local files only when offline)."""
        scorer = cls(model, device=device, **options)
        scorer.revision = hub.model_revision(model) if model else None
        return scorer

    @classmethod
    def models(cls, model: str | None, **options) -> list[str]:
        """The Hub ids or folders this scorer loads with `model` (None: its default) and `options`, for the offline
        check."""
        chosen = model or cls.default_model
        return [chosen] if chosen else []

    def __call__(self, images: list[np.ndarray], prompts: list[str]) -> np.ndarray:
        """(N,) float scores of `images` (uint8 (H, W, 3)) against `prompts`, computed `batch_size` at a time."""
        if len(images) != len(prompts):
            raise HdiffError(f"{len(images)} images for {len(prompts)} prompts")
        parts = [self.score_batch(images[lo:lo + self.batch_size], prompts[lo:lo + self.batch_size])
                 for lo in range(0, len(images), self.batch_size)]
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)

    @abstractmethod
    def score_batch(self, images: list[np.ndarray], prompts: list[str]) -> np.ndarray:
        """(B,) scores of one batch."""

    def identity(self) -> dict[str, str | None]:
        """What the manifest names: the scorer, its model's id and resolved revision."""
        return {"scorer": self.name, "id": self.model_id, "revision": self.revision}


BUILT_IN = {"clip": "clip", "aesthetic": "aesthetic", "nsfw": "nsfw", "oracle": "oracle"}  # name -> its module


class ScorerRegistry(Mapping[str, type[Scorer]]):
    """Scorer classes by name. A built-in scorer's module (torch, transformers) is imported when the scorer is first
    asked for, so reading a config that names no scorer imports none of them."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Scorer]] = {}

    def __getitem__(self, name: str) -> type[Scorer]:
        if name not in self._classes and name in BUILT_IN:
            importlib.import_module(f"hdiff.scoring.{BUILT_IN[name]}")  # registers it
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*BUILT_IN, *self._classes]))

    def __len__(self) -> int:
        return len(dict.fromkeys([*BUILT_IN, *self._classes]))

    def add(self, cls: type[Scorer]) -> None:
        self._classes[cls.name] = cls


SCORERS = ScorerRegistry()


def register(cls: type[Scorer]) -> type[Scorer]:
    SCORERS.add(cls)
    return cls


def check_scorer(name: str) -> type[Scorer]:
    """The registered scorer `name`, or HdiffError with one line listing the choices."""
    if name not in SCORERS:
        raise HdiffError(f"unknown scorer {name!r}; choose one of {', '.join(sorted(SCORERS))}")
    return SCORERS[name]


def require_cached(name: str, model: str | None = None, **options) -> None:
    """Offline, every model the scorer loads must be in the local cache (or a folder), else one line names it and the
    command that fetches it; online, nothing to check."""
    if not hub.offline():
        return
    for source in check_scorer(name).models(model, **options):
        if hub.looks_like_hub_id(source) and hub.cached_commit(source) is None:
            raise hub.offline_error(f"scorer {name}: model {source!r} is", [hub.model_download_command(source)])


def load_scorer(name: str, *, model: str | None = None, device: str = "cpu", **options) -> Scorer:
    """The scorer `name` with its model (default: the scorer's own) on `device`."""
    cls = check_scorer(name)
    require_cached(name, model, **options)
    return cls.load(model or cls.default_model, device=device, **options)


def model_folder(source: str) -> str:
    """A local folder holding what a scorer loads of `source` (configs, tokenizer files, safetensors weights): the
    folder itself, or a snapshot of the Hub repo fetched as `hf download` would (local files only when offline).
    Loading from the folder asks the Hub nothing more (a processor would otherwise list the repo's tree)."""
    from pathlib import Path

    if Path(source).expanduser().is_dir() or not hub.looks_like_hub_id(source):
        return source
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(source, allow_patterns=list(hub.MODEL_FILES), ignore_patterns=list(hub.MODEL_SKIP),
                                 local_files_only=hub.offline())
    except Exception:  # noqa: BLE001 - any failure here means "not available"
        raise hub.missing_model_error(source) from None


def torch_device(device: str):
    import torch

    from hdiff.devices import resolve_device

    return torch.device(resolve_device(device))
