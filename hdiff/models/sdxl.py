"""Stable Diffusion XL (base): two CLIP text encoders (CLIP-L and OpenCLIP bigG) and a UNet with added conditions.

Conditioning per prompt: both encoders' penultimate states concatenated along features (N, 77, 2048), and bigG's
pooled projection (N, 1280) as the UNet's `text_embeds`; the micro-conditioning `time_ids` (original size, crop,
target size) is the image size, the same for every row. The tree clusters the pooled projections. A node is
conditioned on its members' rows averaged (states position by position), as for Stable Diffusion 1.x/2.x: CLIP's
77 positions are short and all used. The negative row is the stock pipeline's: zeros for the empty negative prompt
when the model says `force_zeros_for_empty_prompt` (SDXL base does). Images carry no invisible watermark (the stock
pipeline adds one when the `invisible-watermark` package is installed).
"""

from __future__ import annotations

import torch

from hdiff.models.base import Conditioning, register
from hdiff.models.stable_diffusion import StableDiffusionAdapter


@register
class StableDiffusionXLAdapter(StableDiffusionAdapter):
    """Loading, latent shape and the denoiser are Stable Diffusion's; conditioning and decoding are SDXL's."""

    name = "sdxl"
    pipeline_classes = ("StableDiffusionXLPipeline",)
    stock_pipeline = "StableDiffusionXLPipeline"
    stock_pipeline_kwargs = {"add_watermarker": False}  # images as the model makes them, no invisible watermark
    cluster_features = "bigG's pooled text projection (text_embeds, 1280-d)"
    default_steps = 40
    default_guidance = 5.0
    default_size = 1024

    def __init__(self, model_id: str, pipeline, *, device="cpu", dtype=torch.float32):
        super().__init__(model_id, pipeline, device=device, dtype=dtype)
        vae = pipeline.vae
        if vae.dtype == torch.float16 and vae.config.force_upcast:  # SDXL's VAE overflows in fp16
            vae.to(torch.float32)

    @torch.no_grad()
    def encode(self, prompts, generators) -> Conditioning:
        states, _, pooled, _ = self.pipeline.encode_prompt(list(prompts), device=self.device,
                                                           num_images_per_prompt=1,
                                                           do_classifier_free_guidance=False)
        return Conditioning({"prompt_embeds": states, "text_embeds": pooled}, pooled.float().cpu().numpy())

    @torch.no_grad()
    def negative(self, negative_prompt=""):
        # "" is the stock call's default (None): zeros when the model forces them for an empty prompt
        _, states, _, pooled = self.pipeline.encode_prompt([""], device=self.device, num_images_per_prompt=1,
                                                           do_classifier_free_guidance=True,
                                                           negative_prompt=negative_prompt or None)
        return {"prompt_embeds": states, "text_embeds": pooled}  # (1, L, D), (1, P)

    def time_ids(self, latents: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """(rows of `pooled`, 6): original size, crop top-left (0, 0) and target size, all the image's, as the stock
        call's defaults make them."""
        pipeline = self.pipeline
        size = (latents.shape[-2] * pipeline.vae_scale_factor, latents.shape[-1] * pipeline.vae_scale_factor)
        ids = pipeline._get_add_time_ids(size, (0, 0), size, dtype=pooled.dtype,
                                         text_encoder_projection_dim=pooled.shape[-1])  # bigG's projection width
        return ids.to(latents.device).repeat(len(pooled), 1)

    @torch.no_grad()
    def forward(self, latent_input, t, rows, guidance_scale):
        added = {"text_embeds": rows["text_embeds"], "time_ids": self.time_ids(latent_input, rows["text_embeds"])}
        return self.pipeline.unet(latent_input, t, encoder_hidden_states=rows["prompt_embeds"],
                                  added_cond_kwargs=added, return_dict=False)[0]

    def set_timesteps(self, scheduler, num_steps, height, width):
        scheduler.set_timesteps(num_steps, device=self.device)
        if hasattr(scheduler, "set_begin_index"):  # as the stock loop does before its first step
            scheduler.set_begin_index(0)

    @torch.no_grad()
    def decode(self, latents):
        vae = self.pipeline.vae
        mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
        latents = latents.to(vae.dtype)
        if mean is not None and std is not None:
            shape = (1, len(mean), 1, 1)
            mean = torch.tensor(mean).view(shape).to(latents.device, latents.dtype)
            std = torch.tensor(std).view(shape).to(latents.device, latents.dtype)
            latents = latents * std / vae.config.scaling_factor + mean
        else:
            latents = latents / vae.config.scaling_factor
        return self.postprocess(vae.decode(latents, return_dict=False)[0])
