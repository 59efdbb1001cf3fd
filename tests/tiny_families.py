"""Tiny random-weight twins of SDXL, SD3.5, FLUX.1 and PixArt-Σ, built from configs written here (nothing downloaded).

Each has its family's components and wiring — CLIP-L and CLIP-G text encoders, a T5 encoder with a SentencePiece-style
(Unigram) tokenizer built from a character vocabulary, the denoiser's block types and the stock scheduler's kind —
shrunk to widths of 16–64. Every network is built after torch.manual_seed(0).
"""

from __future__ import annotations

import string

import torch
from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel, PixArtSigmaPipeline,
                       PixArtTransformer2DModel, SD3Transformer2DModel, StableDiffusion3Pipeline,
                       StableDiffusionXLPipeline, UNet2DConditionModel)
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel,
                          T5Tokenizer)

import tiny_models as tm

T5_DIM = 32


def seeded(build):
    torch.manual_seed(0)
    return build().eval()


def clip_config(hidden: int, projection: int) -> CLIPTextConfig:
    return CLIPTextConfig(**{**tm.text_config().to_dict(), "hidden_size": hidden, "projection_dim": projection})


def t5_tokenizer() -> T5Tokenizer:
    """A Unigram tokenizer over single characters (word-initial ones with SentencePiece's ▁), appending </s>."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_letters + string.digits + string.punctuation]
    pieces += [("▁" + c, -2.5) for c in string.ascii_letters + string.digits]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def t5_encoder() -> T5EncoderModel:
    config = T5Config(vocab_size=len(t5_tokenizer()), d_model=T5_DIM, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return seeded(lambda: T5EncoderModel(config))


def vae(latent_channels: int = 4, **flow) -> AutoencoderKL:
    """A two-level VAE (scale factor 2); `flow`: the SD3 / FLUX scaling and shift factors."""
    return seeded(lambda: AutoencoderKL(
        block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=8,
        **flow))


def sdxl(scheduler=None) -> StableDiffusionXLPipeline:
    """CLIP-L (16-d states) + CLIP-G (16-d states, 16-d pooled projection) → 32-d cross-attention, text_time."""
    unet = seeded(lambda: UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=64,
        cross_attention_dim=32, norm_num_groups=8))
    scheduler = scheduler or EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1,
        prediction_type="epsilon", interpolation_type="linear", use_karras_sigmas=False)
    pipe = StableDiffusionXLPipeline(
        vae=vae(scaling_factor=0.13025), unet=unet, scheduler=scheduler,
        text_encoder=seeded(lambda: CLIPTextModel(clip_config(16, 16))), tokenizer=tm.tokenizer(),
        text_encoder_2=seeded(lambda: CLIPTextModelWithProjection(clip_config(16, 16))), tokenizer_2=tm.tokenizer(),
        force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd3(scheduler=None) -> StableDiffusion3Pipeline:
    """CLIP-L and CLIP-G (16-d each, side by side = T5's 32) + T5 → an MMDiT; SD3.5's fixed shift 3.0."""
    transformer = seeded(lambda: SD3Transformer2DModel(
        sample_size=16, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=T5_DIM, pooled_projection_dim=32, out_channels=4,
        qk_norm="rms_norm"))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=scheduler or FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae(scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=seeded(lambda: CLIPTextModelWithProjection(clip_config(16, 16))), tokenizer=tm.tokenizer(),
        text_encoder_2=seeded(lambda: CLIPTextModelWithProjection(clip_config(16, 16))), tokenizer_2=tm.tokenizer(),
        text_encoder_3=t5_encoder(), tokenizer_3=t5_tokenizer())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def flux_scheduler(dev: bool = True) -> FlowMatchEulerDiscreteScheduler:
    """[dev]: FLUX's resolution-dependent shift; [schnell]: none."""
    if dev:
        return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                               base_image_seq_len=256, max_image_seq_len=4096)
    return FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)


def flux(dev: bool = True, scheduler=None) -> FluxPipeline:
    """CLIP-L's pooled output (16-d) + T5 states → double and single stream blocks; [dev] embeds the guidance."""
    transformer = seeded(lambda: FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=T5_DIM, pooled_projection_dim=16, guidance_embeds=dev, axes_dims_rope=(4, 4, 8)))
    pipe = FluxPipeline(
        transformer=transformer, scheduler=scheduler or flux_scheduler(dev),
        vae=vae(scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=seeded(lambda: CLIPTextModel(clip_config(16, 16))), tokenizer=tm.tokenizer(),
        text_encoder_2=t5_encoder(), tokenizer_2=t5_tokenizer())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pixart_sigma(scheduler=None) -> PixArtSigmaPipeline:
    """T5 states with their attention mask → a DiT with AdaLN-single and learned sigma; DPM-Solver++ by default."""
    transformer = seeded(lambda: PixArtTransformer2DModel(
        sample_size=16, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
        caption_channels=T5_DIM, in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6))
    scheduler = scheduler or DPMSolverMultistepScheduler(
        beta_start=0.0001, beta_end=0.02, beta_schedule="linear", algorithm_type="dpmsolver++", solver_order=2,
        prediction_type="epsilon", lower_order_final=True)
    pipe = PixArtSigmaPipeline(tokenizer=t5_tokenizer(), text_encoder=t5_encoder(), vae=vae(scaling_factor=0.13025),
                               transformer=transformer, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe
