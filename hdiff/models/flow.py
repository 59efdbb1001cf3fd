"""What the flow-matching transformers (SD3, FLUX) share: unscaled starting noise, the resolution-dependent shift
of the sigma schedule, and a VAE with a shift factor.

Flow matching (Lipman et al. 2023; Esser et al. 2024, SD3) trains a velocity v = ε − x₀ along x_σ = (1 − σ) x₀ + σ ε;
sampling steps σ from 1 to 0. The schedule is shifted toward high noise, by a fixed `shift` or, with
`use_dynamic_shifting`, by μ growing linearly with the number of image tokens (FLUX; Esser et al., Sec. 5.3.2).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from diffusers.utils.torch_utils import randn_tensor

from hdiff.models.base import StockPipelineAdapter


def dynamic_shift(config, image_tokens: int, default_max_shift: float) -> float:
    """μ for `image_tokens` tokens: linear from base_shift at base_image_seq_len to max_shift at max_image_seq_len,
    from the scheduler's config with the stock pipeline's defaults."""
    base_tokens, max_tokens = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", default_max_shift)
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return image_tokens * slope + base_shift - slope * base_tokens


class FlowMatchingAdapter(StockPipelineAdapter):
    """A stock flow-matching pipeline with a transformer denoiser, run in bf16 on CUDA."""

    denoiser_name = "transformer"
    cuda_dtype = torch.bfloat16
    default_node_condition = "medoid"
    scales_model_input = False  # the stock flow-matching loops pass latents to the transformer as they are
    default_max_shift: ClassVar[float] = 1.15  # calculate_shift's default max_shift in the stock pipeline

    def initial_latents(self, scheduler, shape, generators):
        """Standard normal noise, one generator per row: σ = 1 is pure noise (no init_noise_sigma scaling)."""
        return randn_tensor(shape, generator=generators, device=self.device, dtype=self.dtype)

    def image_tokens(self, height: int, width: int) -> int:
        """Tokens the transformer sees for one image: latent positions over the patch area."""
        _, h, w = self.latent_shape(height, width)
        return (h // self.denoiser.config.patch_size) * (w // self.denoiser.config.patch_size)

    @torch.no_grad()
    def decode(self, latents):
        vae = self.pipeline.vae
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        return self.postprocess(vae.decode(latents.to(vae.dtype), return_dict=False)[0])
