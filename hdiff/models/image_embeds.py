"""The denoiser call shared by UNets conditioned on one image-embedding vector (Kandinsky 2.2's decoder path)."""

from __future__ import annotations

import torch

from hdiff.models.base import classifier_free_guidance


def image_embeds_forward(unet, latent_input: torch.Tensor, t, embeds: torch.Tensor) -> torch.Tensor:
    """The UNet's raw output for latents (B, C, h, w) and embeddings (B, D), as KandinskyV22Pipeline calls it."""
    return unet(sample=latent_input, timestep=t, encoder_hidden_states=None,
                added_cond_kwargs={"image_embeds": embeds.to(unet.dtype)}, return_dict=False)[0]


def guided_with_learned_variance(output: torch.Tensor, scheduler, guided: bool, guidance_scale: float,
                                 channels: int) -> torch.Tensor:
    """The model output of a UNet that may also predict a variance (`channels` more outputs), as Kandinsky's loop
    forms it: guidance on the noise prediction, the conditional rows' variance kept, and the variance dropped
    unless the scheduler learns it."""
    learned_variance = output.shape[1] > channels
    if guided:
        output, variance = output.split(channels, dim=1) if learned_variance else (output, output[:, :0])
        _, variance_cond = variance.chunk(2)
        output = torch.cat([classifier_free_guidance(output, guidance_scale), variance_cond], dim=1)
    if learned_variance and getattr(scheduler.config, "variance_type", None) not in ("learned", "learned_range"):
        output, _ = output.split(channels, dim=1)
    return output
