"""The one model interface the sampler sees, and the registry of adapters behind it.

An adapter turns prompts into conditioning rows, runs one guided denoiser evaluation on a micro-batch of latents
exactly as its stock diffusers pipeline does, and decodes final latents into images. Everything model-specific
lives in the adapter; the sampler (hdiff.sampling) knows none of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from hdiff import hub
from hdiff.errors import HdiffError


@dataclass
class Conditioning:
    """Per-image conditioning, batch-first. `features` (N, D) are what the cluster tree is built from.

    `masks` names the attention masks among `tensors`: a node's mask attends wherever one of its members' does.
    """

    tensors: dict[str, torch.Tensor]  # each (N, ...)
    features: np.ndarray  # (N, D)
    masks: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.features)

    @classmethod
    def concat(cls, parts: list["Conditioning"]) -> "Conditioning":
        if len(parts) == 1:
            return parts[0]
        return cls({name: torch.cat([p.tensors[name] for p in parts]) for name in parts[0].tensors},
                   np.concatenate([p.features for p in parts]), parts[0].masks)

    def for_node(self, rows: np.ndarray, how: str) -> dict[str, torch.Tensor]:
        """A node's conditioning from its members' `rows` (in the tree's canonical leaf order), batch dim 1.

        "mean": each tensor averaged position by position over the members (masks: their union);
        "medoid": the rows of the member whose features are closest in cosine to the members' mean direction.
        """
        rows = np.asarray(rows)
        if how == "medoid":
            index = torch.as_tensor(rows[[medoid(self.features[rows])]], dtype=torch.long)
            return {name: value[index] for name, value in self.tensors.items()}
        if how != "mean":
            raise ValueError(f"unknown node condition {how!r}")
        index = torch.as_tensor(rows, dtype=torch.long)
        return {name: value[index].amax(dim=0, keepdim=True) if name in self.masks
                else value[index].mean(dim=0, keepdim=True) for name, value in self.tensors.items()}


def medoid(features: np.ndarray) -> int:
    """The index of the row (N, D) with the largest cosine similarity to the mean of the rows' unit vectors; the
    first such row on ties (rows come in the tree's canonical order, so the choice is order-independent)."""
    unit = features.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True).clip(1e-12)
    return int(np.argmax(unit @ unit.mean(axis=0)))


def classifier_free_guidance(output: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """A guided batch (unconditional rows first, then conditional) combined: u + s · (c − u) (Ho & Salimans 2022)."""
    uncond, cond = output.chunk(2)  # each (B, ...)
    return uncond + guidance_scale * (cond - uncond)


def guided_batch(latents: torch.Tensor, cond: dict[str, torch.Tensor], negative: dict[str, torch.Tensor],
                 guided: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One denoiser call's latents and conditioning: with guidance, the latents twice (2B rows) and each tensor's
    unconditional row repeated before the B conditional rows, as the stock pipelines batch them."""
    if not guided:
        return latents, cond
    batch = len(latents)
    rows = {name: torch.cat([negative[name].to(value.dtype).expand(batch, *value.shape[1:]), value])
            for name, value in cond.items()}
    return torch.cat([latents] * 2), rows


def denoiser_call_rows(args: tuple, kwargs: dict) -> int:
    """Rows in one denoiser call, from a forward pre-hook's arguments: UNets take `sample` first, transformers
    `hidden_states` (FLUX's packed (B, tokens, 4C), the others' (B, C, h, w))."""
    sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
    return int(sample.shape[0])


def stack_rows(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: torch.cat([row[name] for row in rows]) for name in rows[0]}


class Adapter(ABC):
    """A diffusers model family behind hdiff's interface. Subclasses register under `name`."""

    name: ClassVar[str]
    pipeline_classes: ClassVar[tuple[str, ...]] = ()  # model_index.json `_class_name`s this adapter loads
    options: ClassVar[tuple[str, ...]] = ()  # keyword options of from_pretrained beyond device, dtype, allow_pickle

    hub_ids: ClassVar[tuple[str, ...]] = ()  # real Hub repos of this family, known without their model_index.json

    default_steps: int = 40
    default_guidance: float = 4.0
    default_tau: float = 1.0  # the paper's τ on its cluster features' cosine-distance scale
    default_size: int = 512
    default_node_condition: ClassVar[str] = "mean"  # hdiff.records.NODE_CONDITIONS
    cluster_features: ClassVar[str] = ""  # what the tree clusters, in words (docs/models.md)
    cuda_dtype: ClassVar[torch.dtype] = torch.float16  # the dtype the family runs in on CUDA
    scales_model_input: ClassVar[bool] = True  # scheduler.scale_model_input before the network, as the stock loop
    takes_negative_prompt: ClassVar[bool] = False  # whether `negative` encodes a negative prompt as the stock call
    def __init__(self, model_id: str, scheduler, device: torch.device, dtype: torch.dtype):
        self.model_id = model_id
        self.scheduler = scheduler
        self.device = torch.device(device)
        self.dtype = dtype
        self.provenance: dict[str, str | None] = {}  # what the records name: revisions, pipeline class (load_adapter)

    @classmethod
    def companion_sources(cls, options: dict) -> dict[str, str]:
        """Other models this adapter loads besides its own (role -> Hub id or folder), given its `options`."""
        return {}

    @classmethod
    @abstractmethod
    def from_pretrained(cls, source: str, *, device: str = "cpu", dtype: torch.dtype | None = None,
                        allow_pickle: bool = False, **options) -> "Adapter":
        """Load from a Hub id or a local folder (safetensors weights only, unless `allow_pickle`)."""

    @abstractmethod
    def encode(self, prompts: list[str], generators: list[torch.Generator]) -> Conditioning:
        """Conditioning rows for `prompts` (`generators` feed any stochastic encoder, e.g. a diffusion prior)."""

    @abstractmethod
    def negative(self, negative_prompt: str = "") -> dict[str, torch.Tensor]:
        """The unconditional row (batch dim 1) used for classifier-free guidance: the stock pipeline's encoding of
        `negative_prompt` ("" is its default; only families with `takes_negative_prompt` accept another)."""

    @abstractmethod
    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of one latent for an image of `height` × `width` pixels."""

    @torch.no_grad()
    def predict(self, scheduler, latents: torch.Tensor, t, cond: dict[str, torch.Tensor],
                negative: dict[str, torch.Tensor], guidance_scale: float) -> torch.Tensor:
        """The scheduler's model output for `latents` (B, C, h, w), guided as the stock pipeline guides it.

        With classifier-free guidance (`rows_per_cluster` 2) the network sees 2B rows, the unconditional ones
        first, and their outputs are combined (`model_output`); the family gives only the network call (`forward`).
        """
        guided = self.rows_per_cluster(guidance_scale) == 2
        latent_input, rows = guided_batch(latents, cond, negative, guided)  # (2B, C, h, w) when guided
        if self.scales_model_input:
            latent_input = scheduler.scale_model_input(latent_input, t)
        output = self.forward(latent_input, t, rows, guidance_scale)
        return self.model_output(output, scheduler, guided, guidance_scale, channels=latents.shape[1])

    @abstractmethod
    def forward(self, latent_input: torch.Tensor, t, rows: dict[str, torch.Tensor],
                guidance_scale: float) -> torch.Tensor:
        """The denoiser's raw output for a batch, called exactly as the stock pipeline calls it."""

    def model_output(self, output: torch.Tensor, scheduler, guided: bool, guidance_scale: float,
                     channels: int) -> torch.Tensor:
        """The denoiser's output as the scheduler's model output: u + s · (c − u) when guided."""
        return classifier_free_guidance(output, guidance_scale) if guided else output

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images (B, H, W, 3) float in [0, 1] on the CPU, as the stock pipeline's output_type="np"."""

    @property
    @abstractmethod
    def denoiser(self) -> torch.nn.Module:
        """The network evaluated once per UNet row (wrapped by tests and benchmarks to count rows)."""

    @property
    def decoder(self) -> torch.nn.Module | None:
        """The latent-to-image network, if there is one (the shapes model works in pixel space)."""
        return None

    def accelerate(self, *, channels_last: bool = False, compile: bool = False) -> "Adapter":
        """GPU habits, both optional: channels_last memory for the denoiser and the decoder (convolutions run in
        NHWC on tensor cores), and torch.compile of the denoiser's forward (one graph per micro-batch size: pad
        micro-batches with GenerationSettings.batch_multiple so that few sizes occur: max_batch / batch_multiple sizes at
        most, within dynamo's default recompile limit of 8 for 64 / 8; dynamo's global settings are left as they are).
        Hooks on the module still run."""
        if channels_last:
            for module in (self.denoiser, self.decoder):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        if compile and not getattr(self, "_compiled", False):
            net = self.denoiser
            net.forward = torch.compile(net.forward, dynamic=False)
            self._compiled = True
        return self

    def noise_generator_device(self, on_device: bool) -> torch.device:
        """Where per-latent noise generators live: the model's device, or the CPU (the same images everywhere)."""
        return self.device if on_device else torch.device("cpu")

    def set_timesteps(self, scheduler, num_steps: int, height: int, width: int) -> None:
        """`scheduler`'s timesteps for `num_steps` steps at this image size, as the stock pipeline sets them."""
        scheduler.set_timesteps(num_steps, device=self.device)

    def initial_latents(self, scheduler, shape: tuple[int, ...], generators: list[torch.Generator]) -> torch.Tensor:
        """Starting noise, one generator per row, scaled as the stock pipelines' prepare_latents does."""
        latents = randn_tensor(shape, generator=generators, device=self.device, dtype=self.dtype)
        return latents * scheduler.init_noise_sigma

    def rows_per_cluster(self, guidance_scale: float) -> int:
        """Denoiser rows per cluster and evaluation: 2 with classifier-free guidance (an unconditional row)."""
        return 2 if guidance_scale > 1.0 else 1

    @property
    def scheduler_name(self) -> str:
        return type(self.scheduler).__name__


class StockPipelineAdapter(Adapter):
    """An adapter driving one stock diffusers pipeline (`stock_pipeline`): its encoders, denoiser, VAE and image
    postprocessing are used as loaded; subclasses write out its denoising loop's model call."""

    stock_pipeline: ClassVar[str]  # the diffusers class loaded and driven
    stock_pipeline_kwargs: ClassVar[dict] = {}
    denoiser_name: ClassVar[str] = "unet"  # the pipeline's denoiser component

    def __init__(self, model_id: str, pipeline, *, device="cpu", dtype=torch.float32):
        super().__init__(model_id, pipeline.scheduler, device, dtype)
        self.pipeline = pipeline
        sample_size = self.denoiser.config.get("sample_size")  # the stock pipeline's default: × the VAE's scale
        if isinstance(sample_size, int):  # SD 2.1: 96 × 8 = 768 px, SD 2.1-base: 512
            self.default_size = sample_size * pipeline.vae_scale_factor

    @classmethod
    def from_pretrained(cls, source: str, *, device: str = "cpu", dtype=None, allow_pickle: bool = False,
                        scheduler=None, **options) -> "StockPipelineAdapter":
        """The stock pipeline from a Hub id or folder, on `device` in the family's dtype, progress bar off."""
        import diffusers

        dtype = dtype or default_dtype(device, cls.cuda_dtype)
        kwargs = {"scheduler": scheduler} if scheduler is not None else {}
        pipeline = load_component(getattr(diffusers, cls.stock_pipeline), source, torch_dtype=dtype,
                                  allow_pickle=allow_pickle, **cls.stock_pipeline_kwargs, **kwargs).to(device)
        pipeline.set_progress_bar_config(disable=True)
        return cls(source, pipeline, device=device, dtype=dtype, **options)

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipeline, self.denoiser_name)

    @property
    def decoder(self) -> torch.nn.Module:
        return self.pipeline.vae

    def postprocess(self, image: torch.Tensor) -> torch.Tensor:
        """The VAE's output (B, 3, H, W) in [-1, 1] as images (B, H, W, 3) in [0, 1] on the CPU."""
        image = self.pipeline.image_processor.postprocess(image, output_type="pt")  # (B, 3, H, W) in [0, 1]
        return image.cpu().permute(0, 2, 3, 1).float()


ADAPTERS: dict[str, type[Adapter]] = {}


def register(cls: type[Adapter]) -> type[Adapter]:
    ADAPTERS[cls.name] = cls
    return cls


def default_dtype(device: torch.device | str, cuda_dtype: torch.dtype = torch.float16) -> torch.dtype:
    """`cuda_dtype` (fp16 unless the family runs in bf16) on CUDA, fp32 elsewhere."""
    return cuda_dtype if torch.device(device).type == "cuda" else torch.float32


def load_component(loader, source: str, subfolder: str | None = None, *, allow_pickle: bool = False,
                   method: str = "from_pretrained", **kwargs):
    """`loader.from_pretrained(source)`, or another of its loading `method`s (safetensors weights only unless `allow_pickle`; local files only when the
    Hub is offline), turning a missing model into a one-line message that names the command to fetch it."""
    from diffusers import SchedulerMixin

    if subfolder is not None:
        kwargs["subfolder"] = subfolder
    if not issubclass(loader, SchedulerMixin):  # schedulers have no weights
        kwargs["use_safetensors"] = not allow_pickle or None  # None: safetensors where present, else pickle
    try:
        return getattr(loader, method)(source, local_files_only=hub.offline(), **kwargs)
    except (OSError, ValueError) as exc:
        where = f"{source}{'/' + subfolder if subfolder else ''}"
        if not allow_pickle and "safetensors" in str(exc).lower():
            raise HdiffError(f"{where} has no safetensors weights; pass --allow-pickle (model.allow_pickle: true) "
                             "to load pickle files, which can run code when loaded") from exc
        if not hub.looks_like_hub_id(source):
            raise HdiffError(f"cannot load {loader.__name__} from {where}: {str(exc).splitlines()[0]}") from exc
        raise hub.missing_model_error(source, allow_pickle) from exc


def load_scheduler(source: str, subfolder: str = "scheduler"):
    """The scheduler the model's own scheduler_config.json names (its `_class_name`), configured from that file."""
    import diffusers

    config = load_component(diffusers.DDPMScheduler, source, subfolder, method="load_config")
    name = config.get("_class_name")
    found = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(found, type) and issubclass(found, diffusers.SchedulerMixin)):
        raise HdiffError(f"{source}/{subfolder}/scheduler_config.json names {name!r}, which is not a diffusers "
                         "scheduler; pass --scheduler (model.scheduler) to choose one")
    return found.from_config(config)
