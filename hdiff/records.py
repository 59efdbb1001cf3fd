"""The per-image record: what was generated, from what, and the compute it cost."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

NoiseDevice = Literal["cpu", "device"]
NOISE_DEVICES: tuple[str, ...] = NoiseDevice.__args__
NodeCondition = Literal["mean", "medoid"]  # a shared node's conditioning: its members' rows averaged, or one member's
NODE_CONDITIONS: tuple[str, ...] = NodeCondition.__args__


class ClusterStep(BaseModel):
    """One node on a prompt's path through the cluster tree: active from `from_step` until the next node's."""

    model_config = ConfigDict(extra="forbid")

    node: int = Field(description="node id in the shard's tree (leaves are 0..N-1 in canonical order)")
    size: int = Field(ge=1, description="images that shared this node's latent")
    from_step: int = Field(ge=0, description="first denoising step (scheduler evaluation) at which the node is active")


class ImageRecord(BaseModel):
    """One generated image. `unet_rows` counts UNet rows, a shared row divided evenly among the node's members."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    prompt_id: str = Field(description="stable id: a hash of the normalized prompt text")
    copy_index: int = Field(default=0, ge=0, description="which of several images of the same prompt")
    seed: int = Field(ge=0)
    model: str = Field(description="the model's Hub id or folder as given; an absolute folder path by its last part")
    model_revision: str | None = Field(default=None, description="the commit sha its Hub id resolved to, or "
                                       "sha256:<hex> of a local folder's files")
    pipeline_class: str | None = Field(default=None, description="the diffusers pipeline class it was made with "
                                       "(model_index.json's _class_name)")
    prior: str | None = Field(default=None, description="the prior's Hub id or folder, for models that load one")
    prior_revision: str | None = Field(default=None, description="the prior's revision, as model_revision")
    scheduler: str
    steps: int = Field(ge=1, description="denoising steps requested")
    evaluations: int = Field(ge=1, description="scheduler evaluations (steps, or more for 2nd-order schedulers)")
    guidance_scale: float
    negative_prompt: str = Field(default="", description="the negative prompt (left out of the JSON when empty, the "
                                 "stock default)")
    tau: float = Field(ge=0)
    schedule: str
    height: int
    width: int
    noise_device: NoiseDevice = Field(default="cpu", description="where the sampling noise was drawn: 'cpu' (the same "
                              "image on every machine) or 'device' (the GPU's generator)")
    node_condition: NodeCondition = Field(default="mean", description="what a shared node was conditioned on: "
                                          "'mean' of its members' conditioning, or its 'medoid' member's")
    cluster_path: list[ClusterStep]
    split_evaluation: int = Field(ge=0, description="evaluation at which this image's own latent became active")
    shared_evaluations: int = Field(ge=0, description="evaluations spent in a node shared with other images")
    unet_rows: float = Field(ge=0, description="UNet rows attributable to this image")
    standard_unet_rows: int = Field(ge=0, description="UNet rows standard sampling would spend on it")

    @model_serializer(mode="wrap")
    def _without_an_empty_negative_prompt(self, handler) -> dict[str, Any]:
        data = handler(self)
        if not data.get("negative_prompt"):  # the records of datasets built before the field stay byte for byte
            data.pop("negative_prompt", None)
        return data


class SourceRow(BaseModel):
    """Where a prompt came from: its corpus, the corpus's revision, its row there and the columns kept from it."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="the source as named in the config (Hub id or local file name)")
    revision: str | None = Field(description="the commit sha the source resolved to, or sha256:<hex> of local files")
    row: int = Field(ge=0, description="the prompt's row in the source (the first one, for a repeated prompt)")
    columns: dict[str, Any] = Field(default_factory=dict, description="source.keep_columns of that row")


class DatasetRecord(ImageRecord):
    """An ImageRecord as stored in a dataset shard, with the sample key and the shard it belongs to."""

    source: SourceRow | None = Field(default=None, description="the prompt's source row (builds from a corpus)")
    scores: dict[str, float | None] | None = Field(default=None, exclude_if=lambda v: v is None,
                                                   description="the config's scores of this image (hdiff.scoring): "
                                                   "name -> value, null where the scorer cannot judge it")
    key: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="WebDataset key, no dots")
    shard: str
    image_format: str
