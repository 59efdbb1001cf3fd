"""Stable Diffusion 1.x / 2.x: CLIP text-encoder states as cross-attention conditioning, VAE latents.

A cluster is conditioned on its members' text-encoder states averaged position by position; the tree clusters
each prompt's states averaged over token positions. The paper reports such models share less well than
Kandinsky 2.2, whose conditioning is one image-embedding vector.
"""

from __future__ import annotations

import torch

from hdiff.models.base import Conditioning, StockPipelineAdapter, register


@register
class StableDiffusionAdapter(StockPipelineAdapter):
    name = "stable-diffusion"
    pipeline_classes = ("StableDiffusionPipeline",)
    takes_negative_prompt = True
    options = ()
    stock_pipeline = "StableDiffusionPipeline"
    stock_pipeline_kwargs = {"safety_checker": None, "requires_safety_checker": False}
    cluster_features = "the CLIP text states averaged over token positions"
    default_steps = 40
    default_guidance = 7.5
    default_size = 512

    @torch.no_grad()
    def encode(self, prompts, generators) -> Conditioning:
        states, _ = self.pipeline.encode_prompt(list(prompts), self.device, 1, False)  # (N, L, D)
        return Conditioning({"prompt_embeds": states}, states.float().mean(dim=1).cpu().numpy())

    @torch.no_grad()
    def negative(self, negative_prompt=""):
        _, states = self.pipeline.encode_prompt([""], self.device, 1, True,
                                                negative_prompt=[negative_prompt] if negative_prompt else None)
        return {"prompt_embeds": states}  # (1, L, D)

    def latent_shape(self, height, width):
        scale = self.pipeline.vae_scale_factor
        return (self.pipeline.unet.config.in_channels, height // scale, width // scale)

    @torch.no_grad()
    def forward(self, latent_input, t, rows, guidance_scale):
        return self.pipeline.unet(latent_input, t, encoder_hidden_states=rows["prompt_embeds"], return_dict=False)[0]

    @torch.no_grad()
    def decode(self, latents):
        vae = self.pipeline.vae
        return self.postprocess(vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0])
