"""PixArt-Σ (PixArtSigmaPipeline): a DiT on T5-XXL text states with an attention mask, noise prediction.

Conditioning per prompt: T5's states (N, T, 4096) (`max_sequence_length`, 300 by default) and their attention
mask (N, T). T5 has no pooled vector: the tree clusters the states averaged over each prompt's own (unmasked)
tokens. A node is conditioned on its medoid member's sequence and mask by default (see hdiff.models.sd3 for why);
with `node_condition: mean` the states are averaged position by position and the node attends wherever one of its
members does. Guidance is classifier-free on the empty prompt's encoding: 2 rows per cluster. The transformer
also predicts a variance (learned sigma); as in the stock pipeline, only the noise half reaches the scheduler.
Images are made at the requested size: the stock pipeline's resolution binning (generate at the nearest trained
aspect ratio, then resize) is not applied, so choose a size from the model's bins (1024 × 1024 is one).
"""

from __future__ import annotations

import torch

from hdiff.models.base import Conditioning, StockPipelineAdapter, register


@register
class PixArtSigmaAdapter(StockPipelineAdapter):
    name = "pixart-sigma"
    takes_negative_prompt = True
    pipeline_classes = ("PixArtSigmaPipeline",)
    options = ("max_sequence_length", "clean_caption")
    stock_pipeline = "PixArtSigmaPipeline"
    denoiser_name = "transformer"
    cluster_features = "T5 states averaged over the prompt's own tokens (4096-d)"
    default_node_condition = "medoid"
    default_steps = 20
    default_guidance = 4.5
    default_size = 1024

    def __init__(self, model_id: str, pipeline, *, device="cpu", dtype=torch.float32, max_sequence_length: int = 300,
                 clean_caption: bool = True):
        super().__init__(model_id, pipeline, device=device, dtype=dtype)
        self.max_sequence_length = max_sequence_length
        self.clean_caption = clean_caption  # the stock call's caption cleaning (needs bs4 and ftfy, else skipped)

    def _encode(self, prompts: list[str], guided: bool, negative_prompt: str = ""):
        return self.pipeline.encode_prompt(prompts, guided, negative_prompt=negative_prompt, num_images_per_prompt=1,
                                           device=self.device, clean_caption=self.clean_caption,
                                           max_sequence_length=self.max_sequence_length)

    @torch.no_grad()
    def encode(self, prompts, generators) -> Conditioning:
        states, mask, _, _ = self._encode(list(prompts), False)  # (N, T, D), (N, T)
        weights = mask.unsqueeze(-1).float()  # (N, T, 1)
        features = (states.float() * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)  # (N, D)
        return Conditioning({"prompt_embeds": states, "prompt_attention_mask": mask}, features.cpu().numpy(),
                            masks=("prompt_attention_mask",))

    @torch.no_grad()
    def negative(self, negative_prompt=""):
        _, _, states, mask = self._encode([""], True, negative_prompt)
        return {"prompt_embeds": states, "prompt_attention_mask": mask}

    def latent_shape(self, height, width):
        scale = self.pipeline.vae_scale_factor
        return (self.pipeline.transformer.config.in_channels, height // scale, width // scale)

    @torch.no_grad()
    def forward(self, latent_input, t, rows, guidance_scale):
        timestep = torch.as_tensor(t, device=latent_input.device).reshape(-1).expand(len(latent_input))
        return self.pipeline.transformer(latent_input, encoder_hidden_states=rows["prompt_embeds"],
                                         encoder_attention_mask=rows["prompt_attention_mask"], timestep=timestep,
                                         added_cond_kwargs={"resolution": None, "aspect_ratio": None},
                                         return_dict=False)[0]

    def model_output(self, output, scheduler, guided, guidance_scale, channels):
        output = super().model_output(output, scheduler, guided, guidance_scale, channels)
        if self.pipeline.transformer.config.out_channels // 2 == channels:  # learned sigma: keep the noise
            output = output.chunk(2, dim=1)[0]
        return output

    @torch.no_grad()
    def decode(self, latents):
        vae = self.pipeline.vae
        return self.postprocess(vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0])
