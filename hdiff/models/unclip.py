"""Stable unCLIP (StableUnCLIPPipeline): unCLIP prior (text → CLIP image embedding) + Stable Diffusion 2.x UNet.

The prior's image embedding, noise-augmented by `noise_level`, conditions the UNet as `class_labels`; the
text-encoder states condition it through cross-attention. The tree clusters the prior's image embeddings (what the
paper clusters); a cluster is conditioned on its members' noised image embeddings and text states, each averaged
row-wise (the states position by position). The negative row is the empty prompt's states with all-zero class labels,
as the stock pipeline builds it.

Generators (the reproducibility recipe). StableUnCLIPPipeline draws everything of image i from generator i, in order:
    (1) the prior's initial latents, (2) the prior scheduler's step noise, (3) the noise added to the image
    embedding, (4) the UNet's initial latents, (5) the UNet scheduler's step noise.
`encode` draws (1)–(3) from a generator seeded with the image's seed. The sampler then gives each node a fresh
generator (a leaf's is seeded with its own seed, hdiff.planning.seeds); `initial_latents` first advances it past
(1)–(3), replaying their shapes without any model call, so that it feeds (4) and (5). At τ = 0 the images therefore
equal StableUnCLIPPipeline(prompts, generator=[torch.Generator().manual_seed(s) for s in seeds]).
"""

from __future__ import annotations

import copy

import torch
from diffusers.utils.torch_utils import randn_tensor

from hdiff.models.base import Conditioning, classifier_free_guidance, register
from hdiff.models.stable_diffusion import StableDiffusionAdapter


@torch.no_grad()
def prior_image_embeds(pipeline, prompts: list[str], generators: list[torch.Generator], num_steps: int,
                       guidance_scale: float) -> torch.Tensor:
    """CLIP image embeddings (N, D) from the unCLIP prior, as StableUnCLIPPipeline.__call__ (steps 3–7) makes them."""
    device = pipeline._execution_device
    guided = guidance_scale > 1.0
    text_embeds, text_states, text_mask = pipeline._encode_prior_prompt(prompts, device, 1, guided)
    scheduler = copy.deepcopy(pipeline.prior_scheduler)
    scheduler.set_timesteps(num_steps, device=device)
    shape = (len(prompts), pipeline.prior.config.embedding_dim)
    latents = pipeline.prepare_latents(shape, text_embeds.dtype, device, generators, None, scheduler)  # (N, D)
    extra = pipeline.prepare_prior_extra_step_kwargs(generators, 0.0)
    for t in scheduler.timesteps:
        latent_input = torch.cat([latents] * 2) if guided else latents  # unconditional rows first
        latent_input = scheduler.scale_model_input(latent_input, t)
        predicted = pipeline.prior(latent_input, timestep=t, proj_embedding=text_embeds,
                                   encoder_hidden_states=text_states, attention_mask=text_mask)[0]  # (N or 2N, D)
        if guided:
            predicted = classifier_free_guidance(predicted, guidance_scale)
        latents = scheduler.step(predicted, timestep=t, sample=latents, **extra, return_dict=False)[0]
    return pipeline.prior.post_process_latents(latents)


@register
class StableUnCLIPAdapter(StableDiffusionAdapter):
    """Latent shape, VAE decoding and the denoiser are Stable Diffusion's; conditioning adds the prior's embedding."""

    name = "unclip"
    takes_negative_prompt = False  # its prior's negative path is not driven yet
    pipeline_classes = ("StableUnCLIPPipeline",)
    options = ("prior_steps", "prior_guidance", "noise_level")
    stock_pipeline = "StableUnCLIPPipeline"
    stock_pipeline_kwargs = {}
    default_steps = 40
    default_guidance = 10.0
    default_size = 768

    def __init__(self, model_id: str, pipeline, *, device="cpu", dtype=torch.float32, prior_steps: int = 25,
                 prior_guidance: float = 4.0, noise_level: int = 0):
        super().__init__(model_id, pipeline, device=device, dtype=dtype)
        self.prior_steps = prior_steps
        self.prior_guidance = prior_guidance
        self.noise_level = noise_level

    @torch.no_grad()
    def encode(self, prompts, generators) -> Conditioning:
        prompts, generators = list(prompts), list(generators)
        embeds = prior_image_embeds(self.pipeline, prompts, generators, self.prior_steps, self.prior_guidance)
        states, _ = self.pipeline.encode_prompt(prompts, self.device, 1, False)  # (N, L, D_text)
        labels = self.pipeline.noise_image_embeddings(embeds, self.noise_level, generator=generators)  # (N, 2D)
        return Conditioning({"prompt_embeds": states, "class_labels": labels}, embeds.float().cpu().numpy())

    @torch.no_grad()
    def negative(self, negative_prompt=""):
        _, states = self.pipeline.encode_prompt([""], self.device, 1, True, negative_prompt=None)  # (1, L, D_text)
        width = self.pipeline.unet.config.projection_class_embeddings_input_dim
        return {"prompt_embeds": states, "class_labels": torch.zeros(1, width, device=self.device, dtype=self.dtype)}

    def initial_latents(self, scheduler, shape, generators):
        """Draws (4) of the module docstring: each generator first skips what `encode` draws from one."""
        for generator in generators:
            self.skip_encoder_draws(generator)
        return super().initial_latents(scheduler, shape, generators)

    def skip_encoder_draws(self, generator: torch.Generator) -> None:
        """Advance `generator` past draws (1)–(3): the same noise shapes, in order, with no model evaluated."""
        row = torch.zeros(1, self.pipeline.prior.config.embedding_dim, dtype=self.dtype)  # (1, D)
        randn_tensor(row.shape, generator=generator, dtype=self.dtype)  # (1) prior initial latents
        scheduler = copy.deepcopy(self.pipeline.prior_scheduler)
        scheduler.set_timesteps(self.prior_steps)
        extra = self.pipeline.prepare_prior_extra_step_kwargs(generator, 0.0)
        for t in scheduler.timesteps:  # (2) prior step noise, wherever the prior scheduler draws it
            scheduler.step(row, timestep=t, sample=row, **extra, return_dict=False)
        randn_tensor(row.shape, generator=generator, dtype=self.dtype)  # (3) image-embedding noise

    @torch.no_grad()
    def forward(self, latent_input, t, rows, guidance_scale):
        return self.pipeline.unet(latent_input, t, encoder_hidden_states=rows["prompt_embeds"],
                                  class_labels=rows["class_labels"], return_dict=False)[0]
