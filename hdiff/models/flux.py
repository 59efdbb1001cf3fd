"""FLUX.1 [dev] and [schnell] (FluxPipeline): a 12 B rectified-flow transformer on CLIP-L pooled and T5-XXL text.

Conditioning per prompt: T5's token states (N, T, 4096) (`max_sequence_length`, 512 by default) and CLIP-L's pooled
output (N, 768); the tree clusters the pooled vectors. A node is conditioned on its medoid member's T5 sequence by
default (see hdiff.models.sd3 for why a position-wise mean is not any prompt's encoding).

Guidance is distilled into [dev]: the guidance scale enters the transformer as an embedding, and each cluster costs
1 row per evaluation, not 2; [schnell] has no guidance input at all (its guidance_scale is ignored).
Latents stay (N, C, h, w) between steps and are packed into 2 × 2 patches (N, h/2 · w/2, 4C) only for the
transformer call: the scheduler's update is element-wise, so stepping packed or unpacked latents is the same.
The sigma schedule is linear from 1 to 1/steps, shifted by μ from the image's token count (FLUX's
resolution-dependent shift), as the stock pipeline sets it.
"""

from __future__ import annotations

import numpy as np
import torch

from hdiff.models.base import Conditioning, register
from hdiff.models.flow import FlowMatchingAdapter, dynamic_shift


@register
class FluxAdapter(FlowMatchingAdapter):
    name = "flux"
    pipeline_classes = ("FluxPipeline",)
    options = ("max_sequence_length",)
    stock_pipeline = "FluxPipeline"
    cluster_features = "CLIP-L's pooled output (768-d)"
    default_size = 1024

    def __init__(self, model_id: str, pipeline, *, device="cpu", dtype=torch.float32, max_sequence_length: int = 512):
        super().__init__(model_id, pipeline, device=device, dtype=dtype)
        self.max_sequence_length = max_sequence_length
        # FluxPipeline's default size is its fixed default_sample_size (128) × the VAE's scale, not a config's
        self.default_size = pipeline.default_sample_size * pipeline.vae_scale_factor
        self.guidance_embeds = bool(pipeline.transformer.config.guidance_embeds)
        # [dev]: 28 steps at guidance 3.5 (the stock call's defaults); [schnell]: 4 steps, no guidance
        self.default_steps, self.default_guidance = (28, 3.5) if self.guidance_embeds else (4, 0.0)

    def rows_per_cluster(self, guidance_scale: float) -> int:
        """One: [dev]'s guidance is an input of the one conditional row, [schnell] has none."""
        return 1

    @torch.no_grad()
    def encode(self, prompts, generators) -> Conditioning:
        states, pooled, _ = self.pipeline.encode_prompt(prompt=list(prompts), prompt_2=None, device=self.device,
                                                        num_images_per_prompt=1,
                                                        max_sequence_length=self.max_sequence_length)
        return Conditioning({"prompt_embeds": states, "pooled_projections": pooled}, pooled.float().cpu().numpy())

    def negative(self, negative_prompt=""):
        return {}  # no unconditional row

    def latent_shape(self, height, width):
        scale = self.pipeline.vae_scale_factor * 2  # VAE downsampling, then 2 × 2 packing
        return (self.pipeline.transformer.config.in_channels // 4, 2 * (height // scale), 2 * (width // scale))

    def image_tokens(self, height, width):
        _, h, w = self.latent_shape(height, width)
        return (h // 2) * (w // 2)

    def set_timesteps(self, scheduler, num_steps, height, width):
        mu = dynamic_shift(scheduler.config, self.image_tokens(height, width), self.default_max_shift)
        if scheduler.config.get("use_flow_sigmas"):  # a multistep solver computes its own flow sigmas
            scheduler.set_timesteps(num_steps, device=self.device, mu=mu)
        else:
            sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
            scheduler.set_timesteps(sigmas=sigmas, device=self.device, mu=mu)
        scheduler.set_begin_index(0)

    @torch.no_grad()
    def forward(self, latents, t, cond, guidance_scale):
        pipeline = self.pipeline
        batch, channels, h, w = latents.shape
        packed = pipeline._pack_latents(latents, batch, channels, h, w)  # (B, h/2 · w/2, 4C)
        image_ids = pipeline._prepare_latent_image_ids(batch, h // 2, w // 2, latents.device, latents.dtype)
        states = cond["prompt_embeds"]
        text_ids = torch.zeros(states.shape[1], 3, device=latents.device, dtype=states.dtype)
        guidance = None
        if self.guidance_embeds:
            guidance = torch.full([1], guidance_scale, device=latents.device, dtype=torch.float32).expand(batch)
        timestep = t.expand(batch).to(latents.dtype)
        output = pipeline.transformer(hidden_states=packed, timestep=timestep / 1000, guidance=guidance,
                                      pooled_projections=cond["pooled_projections"], encoder_hidden_states=states,
                                      txt_ids=text_ids, img_ids=image_ids, return_dict=False)[0]
        scale = pipeline.vae_scale_factor
        return pipeline._unpack_latents(output, h * scale, w * scale, scale)  # (B, C, h, w)
