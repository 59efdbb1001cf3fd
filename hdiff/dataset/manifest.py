"""manifest.json, typed: the dataset's configuration, counts, last run's ingest counts, per-shard table, compute
totals, versions, hardware, provenance and identity. A run's commit writes it last (hdiff.dataset.finalize); the next run,
verify, publish and the card read it.

`counts_of` and `totals_of` aggregate the shards' stats: the commit writes what they give, and verify recomputes them
from the stats files and names every field that differs. `Manifest.write` and `Manifest.read` are the one way the
file is written and read; reading a manifest and writing it again gives back its bytes.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

import hdiff
from hdiff.dataset import layout
from hdiff.dataset.ingest import IngestReport
from hdiff.dataset.writer import ShardRow, ShardStats
from hdiff.files import write_atomically
from hdiff.machine import cpu_model

MANIFEST_FORMAT = 2


def _is_none(value: Any) -> bool:
    return value is None


def _left_out_when_none(description: str) -> Any:
    """A field that is absent from the file, not null, when it has no value."""
    return Field(None, exclude_if=_is_none, description=description)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Counts(_Entry):
    shards: int = Field(ge=0)
    samples: int = Field(ge=0)
    image_formats: list[str]
    taus: list[float] = Field(default_factory=list, description="the τ the records were sampled at")


class OracleAccuracy(_Entry):
    """The shapes world's oracle on every image of the dataset (hdiff.shapes.built); an attribute is scored only on
    the images whose prompt names it, and left out when no prompt does."""

    all: float = Field(description="the share of images whose every scored attribute is right")
    n: int = Field(description="images scored")
    unscored: int = Field(description="images whose prompt names nothing the oracle reads")
    background: float | None = _left_out_when_none("share right among the images scored on it")
    color: float | None = _left_out_when_none("share right among the images scored on it")
    shape: float | None = _left_out_when_none("share right among the images scored on it")
    size: float | None = _left_out_when_none("share right among the images scored on it")
    position: float | None = _left_out_when_none("share right among the images scored on it")
    count: float | None = _left_out_when_none("share right among the images scored on it")
    not_understood: int | None = _left_out_when_none("prompts naming what the world does not have (each warned "
                                                      "about when generated; hdiff.shapes.wording)")


class Totals(_Entry):
    """The dataset's compute and size: sums over its shards, but `wall_seconds` (the runs', from the versions). The
    compute covers every image generated: the written ones' (unet_rows, standard_rows) and those a filter dropped
    after generation (filtered_unet_rows, filtered_standard_rows)."""

    samples: int = Field(ge=0)
    unet_rows: float = Field(ge=0, description="UNet rows the written images cost")
    standard_rows: int = Field(ge=0, description="UNet rows standard sampling would spend on the written images")
    percent_saved: float = Field(description="UNet rows saved against standard sampling, in percent, over every "
                                 "image generated (written or filtered out)")
    wall_seconds: float = Field(description="the versions' wall time: every run that changed the dataset")
    shard_wall_seconds: float
    device_seconds: float
    tar_bytes: int = Field(ge=0)
    oracle_accuracy: OracleAccuracy | None = _left_out_when_none("the shapes world's oracle; other models have none")
    filtered: dict[str, int] | None = _left_out_when_none("images the config's filter dropped, by rule")
    filtered_unet_rows: float | None = _left_out_when_none("UNet rows spent on the images the filter dropped")
    filtered_standard_rows: int | None = _left_out_when_none("UNet rows standard sampling would spend on them")
    scoring_seconds: float | None = _left_out_when_none("time spent scoring, apart from generation (not in "
                                                        "shard_wall_seconds or device_seconds)")


class Corpus(_Entry):
    """The ingested corpus a run planned against."""

    source: str = Field(description="its Hub id or local file, as the card names it")
    revision: str | None = Field(description="the commit sha it resolved to, or a hash of local files")
    prompts: int = Field(ge=0, description="prompts kept by ingest")
    fingerprint: str = Field(description="sha256 of its prompt ids (hdiff.dataset.update.corpus_fingerprint)")


class Version(_Entry):
    """What one run that changed the dataset did; the compute is the shards it generated, not those it rewrote."""

    version: int = Field(ge=1)
    created_utc: str
    corpus: Corpus
    shards_added: list[str]
    shards_removed: list[str]
    prompts_added: int
    prompts_removed: int
    prompts_not_in_corpus: int = Field(description="prompts of the dataset the corpus no longer has, kept")
    samples: int = Field(description="the dataset's samples after this run")
    unet_rows: float
    standard_rows: int
    device_seconds: float
    wall_seconds: float
    scores: dict[str, dict[str, float]] | None = _left_out_when_none("each score over the images this run wrote: "
                                                                     "n, mean, p5, p50, p95")
    scoring_seconds: float | None = _left_out_when_none("time this run spent scoring, apart from generation")
    filtered: int | None = _left_out_when_none("images a filter dropped, in the dataset after this run (in no tar)")
    filtered_unet_rows: float | None = _left_out_when_none("UNet rows this run spent on images a filter dropped")
    filtered_standard_rows: int | None = _left_out_when_none("UNet rows standard sampling would spend on them")


class Hardware(_Entry):
    """The machine a run committed on."""

    cpu: str
    cpu_count: int | None
    platform: str
    python: str
    torch: str | None
    cuda: str | None
    gpu: str | None
    gpu_count: int

    @classmethod
    def this_machine(cls) -> Hardware:
        """CPU, core count, platform, Python, torch version, GPU name and count if any."""
        found: dict[str, Any] = {"torch": None, "cuda": None, "gpu": None, "gpu_count": 0}
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            found["torch"] = torch.__version__
            if torch.cuda.is_available():
                found.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(0),
                             gpu_count=torch.cuda.device_count())
        return cls(cpu=cpu_model(), cpu_count=os.cpu_count(), platform=platform.platform(),
                   python=platform.python_version(), **found)


class SourceProvenance(_Entry):
    """The corpus the prompts came from (hdiff.dataset.sources.build_provenance)."""

    dataset: str = Field(description="the Hub dataset id, or the local file's portable name")
    hub: bool
    name: str | None = Field(description="the Hub subset")
    split: str | None
    revision: str | None


class ModelProvenance(_Entry):
    """A model the images came from, or a companion (a prior) (hdiff.models.loading.model_provenance)."""

    id: str
    revision: str | None
    pipeline_class: str | None = _left_out_when_none("the model's pipeline; companions have none")


class Manifest(_Entry):
    """OUT/manifest.json: the dataset as committed. `shards` is the listing order."""

    format: int = MANIFEST_FORMAT
    hdiff_version: str
    created_utc: str = Field(description="the first commit's time")
    updated_utc: str = Field(description="the last commit's time")
    config: dict[str, Any] = Field(description="the build configuration (BuildConfig.to_flow_parameters), local "
                                   "paths by their last part (hdiff.dataset.card.portable)")
    counts: Counts
    ingest: IngestReport = Field(description="the last run's ingest counts")
    shards: list[ShardRow]
    totals: Totals
    versions: list[Version]
    hardware: Hardware
    provenance: dict[str, SourceProvenance | ModelProvenance] | None = Field(
        None, description="the corpus (role `source`), the model and its companions, with their revisions")
    identity: dict[str, Any] | None = _left_out_when_none(
        "everything that decides the pixels: image settings as dotted keys and the models' resolved revisions "
        "(hdiff.dataset.settings); a re-run must match it, verify checks every record against it")
    scorers: dict[str, dict[str, str | None]] | None = _left_out_when_none(
        "each score's scorer, model id and resolved revision (hdiff.scoring)")

    @classmethod
    def read(cls, out_dir: str | Path) -> Manifest:
        """OUT/manifest.json; OSError when it is missing or unreadable, ValueError (a pydantic ValidationError when
        it is JSON) when it is not a manifest."""
        return cls.model_validate(json.loads(layout.manifest_path(out_dir).read_text(encoding="utf-8")))

    def to_json(self) -> bytes:
        """The file's bytes: sorted keys, two-space indent, UTF-8, a final newline."""
        return (json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2, ensure_ascii=False)
                + "\n").encode("utf-8")

    def write(self, out_dir: str | Path) -> None:
        """Write OUT/manifest.json atomically (under a temporary name, then renamed)."""
        write_atomically(layout.manifest_path(out_dir), self.to_json())


def percent_saved(unet_rows: float, standard_rows: float) -> float:
    """UNet rows saved against standard sampling, in percent (0 when nothing was generated)."""
    return 100.0 * (1.0 - unet_rows / standard_rows) if standard_rows else 0.0


def counts_of(shards: Sequence[ShardRow]) -> Counts:
    """The counts of a dataset of `shards`: shards, samples, image formats, and the τ its records were sampled at."""
    return Counts(shards=len(shards), samples=sum(s.samples for s in shards),
                  image_formats=sorted({s.image_format for s in shards}),
                  taus=sorted({tau for s in shards for tau in s.taus}))


def totals_of(shards: Sequence[ShardRow], versions: Sequence[Version],
              oracle_accuracy: OracleAccuracy | None = None) -> Totals:
    """The totals of a dataset of `shards` (ShardStats or manifest rows, summed in the order given) whose history is
    `versions`; the commit writes them and verify recomputes them from the stats files."""
    unet_rows = sum(s.unet_rows for s in shards)
    standard_rows = sum(s.standard_rows for s in shards)
    filtered: dict[str, int] = {}
    for shard in shards:
        for reason, count in (shard.filtered or {}).items():
            filtered[reason] = filtered.get(reason, 0) + count
    filtered_rows = sum(s.filtered_unet_rows or 0.0 for s in shards)
    filtered_standard = sum(s.filtered_standard_rows or 0 for s in shards)
    rows_known = all(s.filtered_rows_known for s in shards)  # unknown in stats written before they were counted
    scored = [s.scoring_seconds for s in shards if s.scoring_seconds is not None]
    return Totals(samples=sum(s.samples for s in shards), unet_rows=unet_rows, standard_rows=standard_rows,
                  percent_saved=percent_saved(unet_rows + filtered_rows, standard_rows + filtered_standard),
                  wall_seconds=sum(v.wall_seconds for v in versions),
                  shard_wall_seconds=sum(s.wall_seconds for s in shards),
                  device_seconds=sum(s.device_seconds for s in shards), tar_bytes=sum(s.tar_bytes for s in shards),
                  oracle_accuracy=oracle_accuracy, filtered=dict(sorted(filtered.items())) if filtered else None,
                  filtered_unet_rows=filtered_rows if filtered and rows_known else None,
                  filtered_standard_rows=filtered_standard if filtered and rows_known else None,
                  scoring_seconds=sum(scored) if scored else None)


def manifest_for(*, config: dict[str, Any], ingest: IngestReport, shards: list[ShardStats], versions: list[Version],
                 hardware: Hardware, oracle_accuracy: OracleAccuracy | None = None,
                 provenance: dict[str, Any] | None = None, created_utc: str | None = None,
                 identity: dict[str, Any] | None = None, scorers: dict[str, dict] | None = None) -> Manifest:
    """The manifest of a dataset of `shards` (in listing order) whose history is `versions`, committed now.

    `config` and `provenance` are stored as given (pass them through hdiff.dataset.card.portable); `oracle_accuracy`
    is the shapes world oracle's on the dataset's images (hdiff.shapes.built), None for other models; `identity` is
    the dataset's (hdiff.dataset.settings).
    """
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return Manifest(hdiff_version=hdiff.__version__, created_utc=created_utc or now, updated_utc=now, config=config,
                    counts=counts_of(shards), ingest=ingest, shards=[s.row() for s in shards],
                    totals=totals_of(shards, versions, oracle_accuracy), versions=versions, hardware=hardware,
                    provenance=provenance, identity=identity, scorers=scorers)
