"""Real-size random-weight denoisers and decoders of SDXL, SD3.5 Large and FLUX.1 [dev], for speed without downloads.

Each arch is its family's adapter (hdiff.models.sdxl, .sd3, .flux: the same model call, latent shape, scheduler
setting and VAE decoding as with real weights) on a stock pipeline assembled from a random-weight denoiser and VAE
built from the published configs, without text encoders. Conditioning comes from precomputed MiniLM prompt embeddings
(384-d): the pooled vector is a fixed random projection of the embedding, each token of the sequence the same
projection plus a fixed random per-position offset; the tree clusters the pooled vectors. Timings on random weights
are valid for speed; the text encoders' time is not measured (they run once per prompt, not per step).
Kandinsky 2.2 is hdiff.bench.kandinsky_arch. `tiny=True` builds the same block types shrunk (CPU tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from hdiff.errors import HdiffError
from hdiff.models.base import Conditioning, default_dtype, register
from hdiff.models.flux import FluxAdapter
from hdiff.models.sd3 import StableDiffusion3Adapter
from hdiff.models.sdxl import StableDiffusionXLAdapter

VAE_BLOCKS = dict(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                  block_out_channels=[128, 256, 512, 512], layers_per_block=2, norm_num_groups=32, in_channels=3,
                  out_channels=3)
TINY_VAE_BLOCKS = dict(VAE_BLOCKS, down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                       block_out_channels=[16, 32], layers_per_block=1, norm_num_groups=8)


@dataclass(frozen=True)
class Arch:
    """One family at real size: its adapter, the diffusers classes and configs of its denoiser, VAE and scheduler,
    and the per-prompt shapes of its conditioning tensors (`pooled` is what the tree clusters)."""

    adapter: type
    pipeline: str  # the stock pipeline class assembled around the denoiser and VAE
    denoiser_class: str
    denoiser: dict  # the published config
    tiny_denoiser: dict  # the same block types shrunk, for CPU tests
    vae: dict
    scheduler_class: str
    scheduler: dict
    sequence: str  # name of the token-sequence tensor
    pooled: str  # name of the pooled tensor
    tokens: int  # sequence length at the stock pipeline's defaults
    width: int  # sequence width (text-encoder states)
    pooled_width: int
    tiny_width: int = 32
    tiny_pooled_width: int = 32
    denoiser_kwarg: str = "transformer"
    extra_components: dict = field(default_factory=dict)


ARCHS: dict[str, Arch] = {
    # stabilityai/stable-diffusion-xl-base-1.0: unet, vae, scheduler configs (2.57 B UNet parameters)
    "sdxl": Arch(
        adapter=StableDiffusionXLAdapter, pipeline="StableDiffusionXLPipeline", denoiser_class="UNet2DConditionModel",
        denoiser=dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                      down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                      block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10),
                      attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
                      addition_embed_type="text_time", addition_time_embed_dim=256,
                      projection_class_embeddings_input_dim=2816),
        tiny_denoiser=dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                           down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                           up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(16, 32),
                           transformer_layers_per_block=(1, 2), attention_head_dim=(2, 4), cross_attention_dim=32,
                           use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                           projection_class_embeddings_input_dim=80, norm_num_groups=8),
        vae=dict(latent_channels=4, scaling_factor=0.13025, force_upcast=True),
        scheduler_class="EulerDiscreteScheduler",
        scheduler=dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                       timestep_spacing="leading", prediction_type="epsilon"),
        sequence="prompt_embeds", pooled="text_embeds", tokens=77, width=2048, pooled_width=1280,
        denoiser_kwarg="unet", extra_components=dict(add_watermarker=False)),
    # stabilityai/stable-diffusion-3.5-large: transformer, vae, scheduler configs (8.1 B transformer parameters)
    "sd35": Arch(
        adapter=StableDiffusion3Adapter, pipeline="StableDiffusion3Pipeline", denoiser_class="SD3Transformer2DModel",
        denoiser=dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=38,
                      attention_head_dim=64, num_attention_heads=38, joint_attention_dim=4096,
                      caption_projection_dim=2432, pooled_projection_dim=2048, pos_embed_max_size=192,
                      qk_norm="rms_norm"),
        tiny_denoiser=dict(sample_size=16, patch_size=1, in_channels=16, out_channels=16, num_layers=2,
                           attention_head_dim=8, num_attention_heads=4, joint_attention_dim=32,
                           caption_projection_dim=32, pooled_projection_dim=32, qk_norm="rms_norm"),
        vae=dict(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                 use_post_quant_conv=False),
        scheduler_class="FlowMatchEulerDiscreteScheduler", scheduler=dict(shift=3.0),
        sequence="prompt_embeds", pooled="pooled_projections", tokens=77 + 256, width=4096, pooled_width=2048),
    # black-forest-labs/FLUX.1-dev: transformer, vae, scheduler configs (11.9 B transformer parameters)
    "flux": Arch(
        adapter=FluxAdapter, pipeline="FluxPipeline", denoiser_class="FluxTransformer2DModel",
        denoiser=dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                      num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                      guidance_embeds=True, axes_dims_rope=(16, 56, 56)),
        tiny_denoiser=dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
                           num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                           guidance_embeds=True, axes_dims_rope=(4, 4, 8)),
        vae=dict(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                 use_post_quant_conv=False),
        scheduler_class="FlowMatchEulerDiscreteScheduler",
        scheduler=dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                       max_image_seq_len=4096),
        sequence="prompt_embeds", pooled="pooled_projections", tokens=512, width=4096, pooled_width=768),
}
ARCH_CHOICES = ("kandinsky22", *ARCHS)


class ProjectedConditioning:
    """Conditioning of a text-encoder-free arch: projections of MiniLM prompt embeddings to the family's shapes."""

    def set_projection(self, arch: Arch, embeddings: dict[str, np.ndarray], tiny: bool, seed: int) -> None:
        dim = len(next(iter(embeddings.values())))
        width, pooled = (arch.tiny_width, arch.tiny_pooled_width) if tiny else (arch.width, arch.pooled_width)
        generator = torch.Generator("cpu").manual_seed(seed)
        self.arch, self.embeddings = arch, embeddings
        self.to_pooled = torch.randn(dim, pooled, generator=generator) / dim**0.5  # (384, P)
        self.to_tokens = torch.randn(dim, width, generator=generator) / dim**0.5  # (384, D)
        self.positions = torch.randn(arch.tokens, width, generator=generator)  # (L, D)

    def encode(self, prompts, generators) -> Conditioning:
        missing = [p for p in prompts if p not in self.embeddings]
        if missing:
            raise HdiffError(f"{len(missing)} prompts have no precomputed embedding, e.g. {missing[0]!r}")
        vectors = torch.from_numpy(np.stack([self.embeddings[p] for p in prompts]).astype(np.float32))  # (N, 384)
        pooled = vectors @ self.to_pooled  # (N, P)
        tokens = (vectors @ self.to_tokens)[:, None, :] + self.positions  # (N, L, D)
        return Conditioning({self.arch.pooled: pooled.to(self.device, self.dtype),
                             self.arch.sequence: tokens.to(self.device, self.dtype)}, pooled.numpy())

    def negative(self, negative_prompt=""):
        return {self.arch.pooled: torch.zeros(1, self.to_pooled.shape[1], device=self.device, dtype=self.dtype),
                self.arch.sequence: torch.zeros(1, *self.positions.shape, device=self.device, dtype=self.dtype)}


class SDXLArchAdapter(ProjectedConditioning, StableDiffusionXLAdapter):
    name = "sdxl-arch"


class SD35ArchAdapter(ProjectedConditioning, StableDiffusion3Adapter):
    name = "sd35-arch"


class FluxArchAdapter(ProjectedConditioning, FluxAdapter):
    name = "flux-arch"


ARCH_ADAPTERS = {"sdxl": SDXLArchAdapter, "sd35": SD35ArchAdapter, "flux": FluxArchAdapter}


def build_arch(name: str, embeddings: dict[str, np.ndarray], *, device: str = "cpu",
               dtype: torch.dtype | None = None, tiny: bool = False, seed: int = 0):
    """The random-weight arch `name` on `device` in the family's dtype (bf16 for SD3.5 and FLUX on CUDA)."""
    import diffusers

    arch, cls = ARCHS[name], ARCH_ADAPTERS[name]
    dtype = dtype or default_dtype(device, cls.cuda_dtype)
    torch.manual_seed(seed)
    with torch.device(device):
        denoiser = getattr(diffusers, arch.denoiser_class)(**(arch.tiny_denoiser if tiny else arch.denoiser))
        vae = diffusers.AutoencoderKL(**(TINY_VAE_BLOCKS if tiny else VAE_BLOCKS), **arch.vae)
    scheduler = getattr(diffusers, arch.scheduler_class)(**arch.scheduler)
    pipeline = getattr(diffusers, arch.pipeline)(
        vae=vae.to(dtype).eval(), scheduler=scheduler, text_encoder=None, tokenizer=None, text_encoder_2=None,
        tokenizer_2=None, **{arch.denoiser_kwarg: denoiser.to(dtype).eval()}, **arch.extra_components,
        **({"text_encoder_3": None, "tokenizer_3": None} if name == "sd35" else {}))
    pipeline.set_progress_bar_config(disable=True)
    adapter = cls(f"{name}-arch (random weights{', tiny' if tiny else ''})", pipeline, device=device, dtype=dtype)
    adapter.set_projection(arch, embeddings, tiny, seed)
    return adapter


ARCH_PIPELINE = "HdiffRandomArchPipeline"


def write_arch_model(folder, name: str, embeddings_file: str, *, tiny: bool = False):
    """A model folder that `hdiff build` loads as the random-weight arch `name` (once this module is imported),
    conditioned by the MiniLM embeddings in `embeddings_file` (.npz, hdiff.bench.speed --write-embeddings)."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": ARCH_PIPELINE, "arch": name, "embeddings": str(Path(embeddings_file).resolve()),
             "tiny": tiny}
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


@register
class RandomArchFolder:
    """Loads a folder written by `write_arch_model` as its arch's adapter (hdiff.models.loading's registry)."""

    name = "random-arch"
    pipeline_classes = (ARCH_PIPELINE,)
    options: tuple[str, ...] = ()
    hub_ids: tuple[str, ...] = ()

    @classmethod
    def companion_sources(cls, options: dict) -> dict[str, str]:
        return {}

    @classmethod
    def from_pretrained(cls, source: str, *, device: str = "cpu", dtype=None, allow_pickle: bool = False, **options):
        import json
        from pathlib import Path

        from hdiff.bench.kandinsky_arch import load_embeddings

        index = json.loads((Path(source) / "model_index.json").read_text())
        return build_arch(index["arch"], load_embeddings(index["embeddings"]), device=device, dtype=dtype,
                          tiny=index.get("tiny", False))
