"""Stable Diffusion 3 and 3.5 (StableDiffusion3Pipeline): an MMDiT on CLIP-L, CLIP-G and T5-XXL text, flow matching.

Conditioning per prompt: a token sequence (N, 77 + T, 4096) — both CLIPs' penultimate states side by side, zero
padded to T5's width, followed by T5's T states (`max_sequence_length`, 256 by default) — and the two CLIPs' pooled
projections side by side (N, 2048). The tree clusters the pooled vectors. A node is conditioned on its medoid member's
sequence by default: T5's positions carry different words in different prompts, and past each prompt's end its own
padding states, so a position-wise mean is not any prompt's encoding (`node_condition: mean` averages anyway).
Guidance is classifier-free on the empty prompt's encoding: 2 rows per cluster.
"""

from __future__ import annotations

import torch

from hdiff.models.base import Conditioning, register
from hdiff.models.flow import FlowMatchingAdapter, dynamic_shift


@register
class StableDiffusion3Adapter(FlowMatchingAdapter):
    name = "sd3"
    takes_negative_prompt = True
    pipeline_classes = ("StableDiffusion3Pipeline",)
    options = ("max_sequence_length",)
    stock_pipeline = "StableDiffusion3Pipeline"
    cluster_features = "CLIP-L and CLIP-G pooled projections side by side (2048-d)"
    default_steps = 28
    default_guidance = 3.5
    default_size = 1024
    default_max_shift = 1.16

    def __init__(self, model_id: str, pipeline, *, device="cpu", dtype=torch.float32, max_sequence_length: int = 256):
        super().__init__(model_id, pipeline, device=device, dtype=dtype)
        self.max_sequence_length = max_sequence_length

    def _encode(self, prompts: list[str], guided: bool, negative_prompt: str = ""):
        return self.pipeline.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None, device=self.device,
                                           num_images_per_prompt=1, do_classifier_free_guidance=guided,
                                           negative_prompt=negative_prompt or None,
                                           max_sequence_length=self.max_sequence_length)

    @torch.no_grad()
    def encode(self, prompts, generators) -> Conditioning:
        states, _, pooled, _ = self._encode(list(prompts), False)  # (N, 77 + T, D), (N, P)
        return Conditioning({"prompt_embeds": states, "pooled_projections": pooled}, pooled.float().cpu().numpy())

    @torch.no_grad()
    def negative(self, negative_prompt=""):
        _, states, _, pooled = self._encode([""], True, negative_prompt)  # the stock default: ""
        return {"prompt_embeds": states, "pooled_projections": pooled}

    def latent_shape(self, height, width):
        scale = self.pipeline.vae_scale_factor
        return (self.pipeline.transformer.config.in_channels, height // scale, width // scale)

    def set_timesteps(self, scheduler, num_steps, height, width):
        """A fixed shift (SD3.5: 3.0) lives in the scheduler; a dynamic one gets μ from the image's token count."""
        shift = {}
        if scheduler.config.get("use_dynamic_shifting"):
            shift["mu"] = dynamic_shift(scheduler.config, self.image_tokens(height, width), self.default_max_shift)
        scheduler.set_timesteps(num_steps, device=self.device, **shift)

    @torch.no_grad()
    def forward(self, latent_input, t, rows, guidance_scale):
        return self.pipeline.transformer(hidden_states=latent_input, timestep=t.expand(len(latent_input)),
                                         encoder_hidden_states=rows["prompt_embeds"],
                                         pooled_projections=rows["pooled_projections"], return_dict=False)[0]
