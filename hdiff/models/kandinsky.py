"""Kandinsky 2.2: unCLIP prior (text → CLIP image embedding) + decoder UNet + MoVQ. The paper's model.

The tree clusters the prior's image embeddings; the negative row is the prior's zero-image embedding.
"""

from __future__ import annotations

import torch

from hdiff.models.base import Adapter, Conditioning, default_dtype, load_component, load_scheduler, register
from hdiff.models.image_embeds import guided_with_learned_variance, image_embeds_forward

DEFAULT_PRIOR = "kandinsky-community/kandinsky-2-2-prior"


@register
class Kandinsky22Adapter(Adapter):
    name = "kandinsky22"
    pipeline_classes = ("KandinskyV22Pipeline", "KandinskyV22CombinedPipeline")
    options = ("prior", "prior_steps", "prior_guidance")
    hub_ids = ("kandinsky-community/kandinsky-2-2-decoder",)
    default_steps = 40
    default_guidance = 4.0
    default_size = 512
    scales_model_input = False  # the stock Kandinsky loop omits it (harmless for DDPM/DDIM/DPM-Solver)

    def __init__(self, model_id: str, prior_pipeline, unet, movq, scheduler, *, device="cpu", dtype=torch.float32,
                 prior_steps: int = 25, prior_guidance: float = 4.0):
        super().__init__(model_id, scheduler, device, dtype)
        self.prior_pipeline = prior_pipeline
        self.unet = unet
        self.movq = movq
        self.prior_steps = prior_steps
        self.prior_guidance = prior_guidance
        self.movq_scale_factor = 2 ** (len(movq.config.block_out_channels) - 1)
        if isinstance(unet.config.get("sample_size"), int):  # the model's own size: 64 × 8 = 512 px for the real one
            self.default_size = unet.config.sample_size * self.movq_scale_factor

    @classmethod
    def from_pretrained(cls, source: str, *, device: str = "cpu", dtype=None, allow_pickle: bool = False,
                        prior: str | None = None, scheduler=None, **options) -> "Kandinsky22Adapter":
        """The decoder from `source` and the prior from `prior` (a Hub id or a folder); the scheduler the decoder's
        scheduler_config.json names unless `scheduler` is given."""
        from diffusers import KandinskyV22PriorPipeline, UNet2DConditionModel, VQModel

        dtype = dtype or default_dtype(device)
        prior_pipeline = load_component(KandinskyV22PriorPipeline, prior or DEFAULT_PRIOR, torch_dtype=dtype,
                                        allow_pickle=allow_pickle).to(device)
        prior_pipeline.set_progress_bar_config(disable=True)
        unet = load_component(UNet2DConditionModel, source, "unet", torch_dtype=dtype,
                              allow_pickle=allow_pickle).to(device)
        movq = load_component(VQModel, source, "movq", torch_dtype=dtype, allow_pickle=allow_pickle).to(device)
        scheduler = scheduler or load_scheduler(source)
        return cls(source, prior_pipeline, unet, movq, scheduler, device=device, dtype=dtype, **options)

    @classmethod
    def companion_sources(cls, options: dict) -> dict[str, str]:
        return {"prior": options.get("prior") or DEFAULT_PRIOR}

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.unet

    @property
    def decoder(self) -> torch.nn.Module:
        return self.movq

    @torch.no_grad()
    def encode(self, prompts, generators) -> Conditioning:
        out = self.prior_pipeline(prompt=list(prompts), generator=list(generators),
                                  num_inference_steps=self.prior_steps, guidance_scale=self.prior_guidance,
                                  output_type="pt")
        embeds = out.image_embeds.to(self.dtype)  # (N, D)
        return Conditioning({"image_embeds": embeds}, embeds.float().cpu().numpy())

    @torch.no_grad()
    def negative(self, negative_prompt=""):
        zero = self.prior_pipeline.get_zero_embed(1, device=self.device)  # (1, D)
        return {"image_embeds": zero.to(self.dtype)}

    def latent_shape(self, height, width):
        scale = self.movq_scale_factor
        h = -(-height // scale**2) * scale
        w = -(-width // scale**2) * scale
        return (self.unet.config.in_channels, h, w)

    @torch.no_grad()
    def forward(self, latent_input, t, rows, guidance_scale):
        return image_embeds_forward(self.unet, latent_input, t, rows["image_embeds"])

    def model_output(self, output, scheduler, guided, guidance_scale, channels):
        return guided_with_learned_variance(output, scheduler, guided, guidance_scale, channels)

    @torch.no_grad()
    def decode(self, latents):
        image = self.movq.decode(latents, force_not_quantize=True)["sample"]
        return (image * 0.5 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float()
