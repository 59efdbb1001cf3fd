"""The build config: one YAML file per dataset build, validated once, mapped onto the flow's parameters.

Relative paths (source, output, cache) are relative to the working directory the build runs in, except in a
dataset's own config (OUT/hdiff.yaml beside OUT/manifest.json, hdiff.dataset.recipe): there a relative `output` and a
`./` or `../` corpus path are relative to that folder, so `hdiff build OUT/hdiff.yaml` extends OUT from anywhere.
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hdiff.dataset.encoding import DEFAULT_PNG_LEVEL, Encoding
from hdiff.errors import HdiffDeprecation, HdiffError
from hdiff.devices import check_devices
from hdiff.models.schedulers import check_scheduler
from hdiff.scoring.spec import ScoreSpec, filter_rules
from hdiff.settings import GenerationSettings
from hdiff.validation import did_you_mean
from hdiff.validation import format_validation_error as _format

MOVED_TO_GENERATION = ("steps", "guidance_scale", "height", "width")  # were model.*: read there with a note


def _checked(check, *values):
    """`check(*values)`, its HdiffError turned into the ValueError pydantic reports on the field."""
    try:
        return check(*values)
    except HdiffError as exc:
        raise ValueError(str(exc)) from None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # every number finite


class SourceConfig(_Section):
    path_or_id: str = Field(min_length=1, description="a Hub dataset id, an hf://datasets/OWNER/NAME[@REV][/PATH] "
                            "path, or a local file / glob / folder")
    revision: str | None = Field(None, min_length=1, description="Hub datasets: a branch, tag or commit sha")
    name: str | None = Field(None, min_length=1, description="Hub datasets: the subset (config name)")
    split: str = Field("train", min_length=1)
    column: str = Field("prompt", min_length=1)
    data_files: str | list[str] | None = Field(None, description="Hub datasets: file patterns in the repository")
    streaming: bool = Field(False, description="read the corpus in batches, never whole (corpora larger than memory)")
    keep_columns: list[str] | Literal["all"] = Field(default_factory=list, description="source columns carried into "
                                                      "each record's `source`; 'all': every column")

    def open(self):
        """The opened corpus (hdiff.dataset.sources.Corpus)."""
        from hdiff.dataset.sources import open_corpus

        return open_corpus(self.path_or_id, column=self.column, split=self.split, revision=self.revision,
                           name=self.name, data_files=self.data_files, streaming=self.streaming,
                           keep_columns=self.keep_columns)

    def missing_offline(self) -> str | None:
        """Offline, the command that fetches what the cache lacks of a Hub source; a local source must exist."""
        from hdiff.dataset.sources import missing_source_command

        return missing_source_command(self.path_or_id, revision=self.revision, name=self.name, split=self.split,
                                      data_files=self.data_files)


class IngestConfig(_Section):
    max_chars: int = Field(1000, ge=1)
    long_policy: Literal["truncate", "drop"] = "truncate"
    near_dedupe: float | None = Field(None, gt=0, le=1, description="cosine threshold; None turns it off (on, every "
                                      "kept prompt's embedding is held at once)")
    limit: int | None = Field(None, ge=1)
    sample_seed: int | None = Field(0, ge=0, description="seeded sample under `limit`; None takes the first ones")


class EmbeddingConfig(_Section):
    model: str = Field("all-MiniLM-L6-v2", min_length=1)
    cache_dir: str = ".cache/hdiff/embeddings"
    batch_size: int = Field(256, ge=1)


class ShardingConfig(_Section):
    min_size: int = Field(32, ge=1)
    max_size: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _max_twice_min(self) -> ShardingConfig:
        if self.max_size < 2 * self.min_size:
            raise ValueError(f"max_size must be at least 2 × min_size ({2 * self.min_size}), got {self.max_size}")
        return self


class ModelConfig(_Section):
    id: str = Field("hdiff/shapes", min_length=1, description="a registered model id, Hub id or local folder")
    prior: str | None = Field(None, min_length=1, description="Kandinsky 2.2: the prior's Hub id or local folder "
                              "(unset: kandinsky-community/kandinsky-2-2-prior)")
    scheduler: str | None = Field(None, description="a name in hdiff.models.schedulers.SCHEDULERS; None: the model's")
    device: str | list[str] = Field("all", description="'all': every GPU of the machine (else the CPU), one "
                                    "model copy each; 'auto': the first GPU (else the CPU); or a device, or a list")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    channels_last: bool = Field(False, description="channels_last memory for the UNet and decoder (GPUs)")
    compile: bool = Field(False, description="torch.compile the UNet's forward (pair with generation.batch_multiple)")
    allow_pickle: bool = Field(False, description="also load pickle (.bin/.ckpt) weights, which can run code when "
                               "loaded; off: safetensors only")

    @field_validator("scheduler")
    @classmethod
    def _registered_scheduler(cls, value: str | None) -> str | None:
        return value if value is None else _checked(check_scheduler, value)

    def adapter_options(self) -> dict[str, str]:
        """The adapter's own options this section sets (the prior), for hdiff.models.load_adapter."""
        return {"prior": self.prior} if self.prior else {}

    @field_validator("device")
    @classmethod
    def _known_devices(cls, value: str | list[str]) -> str | list[str]:
        return _checked(check_devices, value)


class GenerationConfig(GenerationSettings):
    """The generation settings (hdiff.settings, declared there once) and how a build packs its shards."""

    pack_shards: int = Field(1, ge=1, description="shards sampled together, their active clusters batched as one "
                             "(keeps GPU batches full while clusters are few)")

    def settings(self) -> GenerationSettings:
        """The generation settings alone (steps, guidance and size unset: the model's own)."""
        return GenerationSettings(**self.model_dump(exclude={"pack_shards"}))


class OutputFormatConfig(_Section):
    image_format: Literal["png", "jpg", "webp"] = "png"
    jpeg_quality: int = Field(95, ge=1, le=100, description="jpg's and webp's quality")
    png_compress_level: int = Field(DEFAULT_PNG_LEVEL, ge=0, le=9, description="zlib level of png (lossless at "
                                    "every level: time against size, never pixels; docs/speed.md's table)")

    def encoding(self) -> Encoding:
        """The encoder settings of this dataset's images."""
        return Encoding(self.image_format, self.jpeg_quality, self.png_compress_level)


class RunnerConfig(_Section):
    kind: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    gpu_concurrency: int = Field(1, ge=1, description="shards running at once on each device (local runner)")
    retries: int = Field(2, ge=0)
    encode_workers: int | None = Field(None, ge=1, description="processes that encode images beside sampling, one "
                                       "pool per machine (Ray: per worker process); None: one per usable core")
    write_queue_mib: int = Field(1024, ge=1, description="decoded images waiting to be encoded, MiB, shared by the "
                                 "machine's devices; a device waits while it is full")
    prepare_timeout: float = Field(3600, gt=0, description="seconds the prepare task (ingest, embedding, plan) may "
                                   "take before it fails")
    shard_timeout: float = Field(3600, gt=0, description="seconds one shard task (a pack of generation.pack_shards "
                                 "shards) may take before it fails (and is retried)")
    commit_timeout: float = Field(600, gt=0, description="seconds the commit task may take before it fails")
    publish_timeout: float = Field(3600, gt=0, description="seconds the publish task (push.repo) may take")


class LimitsConfig(_Section):
    """Bounds that stop a typo from filling a disk: raise them on purpose."""

    images_per_prompt: int = Field(100, ge=1, description="the most generation.images_per_prompt may be")
    images: int = Field(10_000_000, ge=1, description="the most images one build may make (prompts kept × "
                        "images_per_prompt), checked before ingest when ingest.limit sets the prompts, else "
                        "right after ingest, before any embedding or generation")

    def check(self, prompts: int, images_per_prompt: int) -> None:
        """HdiffError (one line) when `prompts` prompts at `images_per_prompt` each exceed `images`."""
        if prompts * images_per_prompt > self.images:
            raise HdiffError(f"{prompts} prompts × {images_per_prompt} images is {prompts * images_per_prompt} "
                             f"images, more than limits.images ({self.images}); raise limits.images to allow it")


class UpdateConfig(_Section):
    prune: bool = Field(False, description="remove prompts that left the corpus from the dataset (rewriting the "
                        "shards that hold them); off: they are kept and counted in the version")


class PushConfig(_Section):
    """Where the flow publishes after a committed run (as `hdiff push`); the token from HF_TOKEN or `hf auth login`,
    never from the config."""

    repo: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$",
                             description="the dataset repo (owner/name); unset: no publishing")
    private: bool = Field(False, description="create the repo private (an existing repo keeps its visibility)")
    revision: str | None = Field(None, min_length=1, description="the branch to push to (default: main)")


LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")  # the Hub's license ids: apache-2.0, cc-by-4.0, openrail++, ...
GENERATED_LICENSE_NAME = "model-and-source-terms"  # the default: the images follow the model's and the corpus's terms


class CardConfig(_Section):
    """The license the dataset card's YAML header declares (the Hub shows it and filters by it)."""

    license: str = Field("other", description="a Hub license id (huggingface.co/docs/hub/repositories-licenses), "
                         "or other: then license_name names it")
    license_name: str | None = Field(None, description="license: other: an id for the terms, e.g. my-license-1.0")
    license_link: str | None = Field(None, pattern=r"^https?://\S+$", description="license: other: a URL to the "
                                     "terms")

    @field_validator("license", "license_name")
    @classmethod
    def _license_id(cls, value: str | None) -> str | None:
        if value is not None and not LICENSE_ID.match(value):
            raise ValueError(f"must be an id of lowercase letters, digits, '.', '+' and '-' (apache-2.0, "
                             f"cc-by-4.0, my-license-1.0), got {value!r}")
        return value

    @model_validator(mode="after")
    def _other_is_named(self) -> CardConfig:
        if self.license == "other" and self.license_name is None:
            raise ValueError("license: other needs license_name (an id for the terms, e.g. my-license-1.0)")
        if self.license != "other" and (self.license_name or self.license_link):
            raise ValueError(f"license_name and license_link are for license: other, not {self.license}")
        return self


def default_card() -> CardConfig:
    """`other`, named for what the images follow: the terms of the model and of the prompts' source."""
    return CardConfig(license_name=GENERATED_LICENSE_NAME)


class BuildConfig(_Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    output: str = Field(min_length=1, description="the dataset folder")
    source: SourceConfig
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    sharding: ShardingConfig = Field(default_factory=ShardingConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    output_format: OutputFormatConfig = Field(default_factory=OutputFormatConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    update: UpdateConfig = Field(default_factory=UpdateConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    push: PushConfig = Field(default_factory=PushConfig)
    card: CardConfig = Field(default_factory=default_card)
    scores: list[ScoreSpec] = Field(default_factory=list, description="scorers run on every image (hdiff.scoring): "
                                    "names, or {name, scorer, model, ...}; each score goes into the record")
    filter: dict[str, float | int | str] = Field(default_factory=dict, description="<score>_min / <score>_max, "
                                                 "and `<flag>: drop`: images outside are not written")

    @model_validator(mode="before")
    @classmethod
    def _budget_from_pilot(cls, data: Any) -> Any:
        """generation.budget: pilot reads the setting `hdiff pilot` recommended (hdiff.dataset.recommendation)."""
        generation = data.get("generation") if isinstance(data, dict) else None
        if not (isinstance(generation, dict) and generation.get("budget") == "pilot"):
            return data
        from hdiff.dataset.recommendation import read_recommendation

        if not isinstance(data.get("output"), str):
            raise ValueError("generation.budget: pilot needs output (the pilot's folder is beside it)")
        model = data.get("model", {}).get("id", ModelConfig.model_fields["id"].default) \
            if isinstance(data.get("model"), dict) else ModelConfig.model_fields["id"].default
        setting = read_recommendation(data["output"], model)
        kept = {k: v for k, v in generation.items() if k not in ("budget", "tau")}
        return {**data, "generation": {**kept, **setting}}

    @model_validator(mode="after")
    def _filters_on_computed_scores(self) -> BuildConfig:
        filter_rules(self.filter, self.scores)
        names = [spec.name for spec in self.scores]
        if len(set(names)) != len(names):
            raise ValueError(f"scores: each name once, got {', '.join(names)}")
        if any(spec.kind_name == "oracle" for spec in self.scores):
            from hdiff.shapes.built import has_oracle

            if not has_oracle(self.model.id):
                raise ValueError(f"scores: the oracle scores shapes-world images only, not {self.model.id}'s")
        return self

    def filter_rules(self):
        """The `filter:` rules (hdiff.scoring.spec.Rule), in config order."""
        return filter_rules(self.filter, self.scores)

    @model_validator(mode="before")
    @classmethod
    def _moved_to_generation(cls, data: Any) -> Any:
        """model.steps, guidance_scale, height and width are read as generation.*, with a one-line note."""
        model = data.get("model") if isinstance(data, dict) else None
        moved = [key for key in MOVED_TO_GENERATION if isinstance(model, dict) and key in model]
        if not moved:
            return data
        generation = data.get("generation")
        generation = dict(generation) if isinstance(generation, dict) else {}
        for key in moved:
            if key in generation:
                raise ValueError(f"model.{key} and generation.{key} are both set: keep generation.{key}")
            generation[key] = model[key]
        warnings.warn(f"{', '.join('model.' + key for key in moved)} now live{'s' if len(moved) == 1 else ''} under "
                      f"generation (read as {', '.join('generation.' + key for key in moved)}); move "
                      f"{'it' if len(moved) == 1 else 'them'} in the config", HdiffDeprecation, stacklevel=2)
        return {**data, "model": {k: v for k, v in model.items() if k not in moved}, "generation": generation}

    @model_validator(mode="after")
    def _within_limits(self) -> BuildConfig:
        if self.generation.images_per_prompt > self.limits.images_per_prompt:
            raise ValueError(f"generation.images_per_prompt {self.generation.images_per_prompt} is more than "
                             f"limits.images_per_prompt ({self.limits.images_per_prompt}); raise "
                             "limits.images_per_prompt to allow it")
        if self.ingest.limit is not None:  # the prompts are known before ingest
            _checked(self.limits.check, self.ingest.limit, self.generation.images_per_prompt)
        return self

    @model_validator(mode="after")
    def _compile_runs_alone(self) -> BuildConfig:
        if self.model.compile and self.runner.gpu_concurrency > 1:
            raise ValueError("model.compile needs runner.gpu_concurrency: 1 (a compiled UNet is not shared "
                             "between threads)")
        return self

    def generation_settings(self) -> GenerationSettings:
        """This build's generation settings (steps, guidance and size unset: the model's own)."""
        return self.generation.settings()

    def to_flow_parameters(self) -> dict[str, Any]:
        """A JSON-able dict of every setting, defaults included (Prefect flow parameters)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_flow_parameters(cls, parameters: dict[str, Any], origin: str = "flow parameters") -> BuildConfig:
        """The config back from `to_flow_parameters` (or any mapping of sections); HdiffError when invalid."""
        try:
            return cls.model_validate(parameters)
        except ValidationError as exc:
            raise HdiffError(format_validation_error(exc, origin)) from None



def load_config(path: str | os.PathLike, *, before_pilot: bool = False) -> BuildConfig:
    """The validated BuildConfig in a YAML file; HdiffError with one line per problem. `before_pilot`: read
    `generation.budget: pilot` as unset (the pilot that makes the recommendation reads the config first)."""
    origin = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise HdiffError(f"{origin}: no such config file") from None
    except UnicodeDecodeError:
        raise HdiffError(f"{origin}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise HdiffError(f"{origin}: invalid YAML{_yaml_where(exc)}: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise HdiffError(f"{origin}: expected a mapping of sections (name, output, source, ...), "
                         f"got {type(data).__name__}")
    generation = data.get("generation")
    if before_pilot and isinstance(generation, dict) and generation.get("budget") == "pilot":
        data = {**data, "generation": {k: v for k, v in generation.items() if k != "budget"}}
    return in_dataset_folder(BuildConfig.from_flow_parameters(data, origin), Path(path))


def in_dataset_folder(config: BuildConfig, path: Path) -> BuildConfig:
    """A dataset's own config (hdiff.yaml beside a manifest.json) with its relative output and `./` corpus path
    made relative to its folder; any other config as it is."""
    from hdiff.dataset import layout

    folder = path.parent
    if path.name != layout.CONFIG_NAME or not layout.manifest_path(folder).is_file():
        return config
    source = config.source.path_or_id
    if source.startswith(("./", "../")):
        source = os.path.normpath(folder / source)
    output = config.output if Path(config.output).expanduser().is_absolute() else str(folder / config.output)
    return config.model_copy(update={"output": os.path.normpath(output),
                                     "source": config.source.model_copy(update={"path_or_id": source})})


def apply_overrides(config: BuildConfig, overrides: dict[str, Any]) -> BuildConfig:
    """A new config with dotted keys replaced, e.g. {"generation.tau": 0.5}, validated as a whole.

    A string value for a key that does not hold a string is read as a YAML scalar: "0.5", "null", "[a, b]".
    """
    data = copy.deepcopy(config.model_dump())
    overrides = {_moved_key(dotted): value for dotted, value in overrides.items()}
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise HdiffError(f"override {dotted}: no section {key!r}")
            node = node[key]
        if leaf not in node:
            hint = did_you_mean(leaf, BuildConfig)
            raise HdiffError(f"override {dotted}: unknown key {leaf!r}{f' (did you mean {hint}?)' if hint else ''}; "
                             f"expected one of: {', '.join(node)}")
        node[leaf] = _parsed(value) if not isinstance(node[leaf], str) else value
    given = {"tau": "generation.tau" in overrides, "budget": "generation.budget" in overrides}
    if given["budget"] and not given["tau"]:
        data["generation"].pop("tau")  # a budget given on its own replaces tau, as in a YAML file
    if given["tau"] and not given["budget"]:
        data["generation"]["budget"] = None  # and a tau replaces a budget
    return BuildConfig.from_flow_parameters(data, "overrides")


def _moved_key(dotted: str) -> str:
    section, _, key = dotted.partition(".")
    if section != "model" or key not in MOVED_TO_GENERATION:
        return dotted
    warnings.warn(f"{dotted} now lives under generation (read as generation.{key})", HdiffDeprecation, stacklevel=3)
    return f"generation.{key}"


def _parsed(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def format_validation_error(exc: ValidationError, origin: str) -> str:
    """One line per problem: `configs/x.yaml: generation.tau: must be >= 0, got -1`."""
    return _format(exc, origin, BuildConfig)


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def _yaml_problem(exc: yaml.YAMLError) -> str:
    return str(getattr(exc, "problem", None) or exc).splitlines()[0]
