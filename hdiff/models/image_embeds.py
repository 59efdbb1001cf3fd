"""The guided evaluation shared by UNets conditioned on one image-embedding vector (Kandinsky 2.2's decoder path)."""

from __future__ import annotations

import torch

from hdiff.models.base import classifier_free_guidance


def predict_with_image_embeds(unet, scheduler, latents: torch.Tensor, t, embeds: torch.Tensor,
                              negative: torch.Tensor, guidance_scale: float, *, scale_input: bool) -> torch.Tensor:
    """One guided evaluation, as KandinskyV22Pipeline's denoising loop does it.

    latents (B, C, h, w); embeds (B, D); negative (1, D). `scale_input` calls scheduler.scale_model_input, which
    the stock Kandinsky pipeline omits (harmless for DDPM/DDIM/DPM-Solver, needed for Euler-type schedulers).
    """
    channels = latents.shape[1]
    guided = guidance_scale > 1.0
    if guided:
        latent_input = torch.cat([latents] * 2)  # (2B, C, h, w): unconditional rows first
        image_embeds = torch.cat([negative.expand(len(latents), -1), embeds]).to(unet.dtype)
    else:
        latent_input, image_embeds = latents, embeds.to(unet.dtype)
    if scale_input:
        latent_input = scheduler.scale_model_input(latent_input, t)
    output = unet(sample=latent_input, timestep=t, encoder_hidden_states=None,
                  added_cond_kwargs={"image_embeds": image_embeds}, return_dict=False)[0]
    learned_variance = output.shape[1] > channels  # Kandinsky's decoder also predicts a variance
    if guided:
        output, variance = output.split(channels, dim=1) if learned_variance else (output, output[:, :0])
        _, variance_cond = variance.chunk(2)
        output = torch.cat([classifier_free_guidance(output, guidance_scale), variance_cond], dim=1)
    if learned_variance and getattr(scheduler.config, "variance_type", None) not in ("learned", "learned_range"):
        output, _ = output.split(channels, dim=1)
    return output
