"""Tiny random-weight versions of the real architectures, built from configs written here (nothing downloaded)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, DDPMScheduler, KandinskyV22Pipeline, KandinskyV22PriorPipeline,
                       PriorTransformer, StableDiffusionPipeline, UNet2DConditionModel, UnCLIPScheduler, VQModel)
from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection,
                          CLIPTokenizer, CLIPVisionConfig, CLIPVisionModelWithProjection)

TEXT_DIM = 32


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte-level alphabet (GPT-2's table): every byte mapped to a printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    table = {}
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    chars = [table[b] for b in range(256)]
    return chars


@lru_cache(maxsize=1)
def tokenizer_dir() -> str:
    """A character-level CLIP tokenizer (no merges) in a temp folder."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="hdiff-tok-"))
    alphabet = _bytes_to_unicode()
    tokens = ["<|startoftext|>", "<|endoftext|>", "!"] + alphabet + [c + "</w>" for c in alphabet]
    vocab = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return str(folder)


def tokenizer(max_length: int = 77) -> CLIPTokenizer:
    vocab = json.loads(Path(tokenizer_dir(), "vocab.json").read_text())
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def text_config() -> CLIPTextConfig:
    tok = tokenizer()
    return CLIPTextConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                          hidden_size=TEXT_DIM, projection_dim=TEXT_DIM, intermediate_size=37, layer_norm_eps=1e-5,
                          num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tok),
                          max_position_embeddings=tok.model_max_length)


def ddpm_scheduler(**overrides) -> DDPMScheduler:
    config = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
                  clip_sample=False, steps_offset=1, prediction_type="epsilon", thresholding=False)
    config.update(overrides)
    return DDPMScheduler(**config)


def kandinsky_prior() -> KandinskyV22PriorPipeline:
    torch.manual_seed(0)
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=TEXT_DIM, num_layers=1)
    prior.clip_std = torch.nn.Parameter(torch.ones(prior.clip_std.shape))  # post_process_latents stays non-trivial
    torch.manual_seed(0)
    text_encoder = CLIPTextModelWithProjection(text_config()).eval()
    torch.manual_seed(0)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=TEXT_DIM, image_size=32, projection_dim=TEXT_DIM, intermediate_size=37, num_attention_heads=4,
        num_channels=3, num_hidden_layers=2, patch_size=8)).eval()
    image_processor = CLIPImageProcessor(crop_size=32, do_center_crop=True, do_normalize=True, do_resize=True,
                                         image_mean=[0.48145466, 0.4578275, 0.40821073],
                                         image_std=[0.26862954, 0.26130258, 0.27577711], resample=3, size=32)
    scheduler = UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample", num_train_timesteps=1000,
                                clip_sample=True, clip_sample_range=10.0)
    pipe = KandinskyV22PriorPipeline(prior=prior, image_encoder=image_encoder, text_encoder=text_encoder,
                                     tokenizer=tokenizer(), scheduler=scheduler, image_processor=image_processor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def kandinsky_decoder_unet(out_channels: int = 8, sample_size: int | None = None) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        in_channels=4, out_channels=out_channels, addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64), layers_per_block=1,
        encoder_hid_dim=TEXT_DIM, encoder_hid_dim_type="image_proj", cross_attention_dim=TEXT_DIM,
        attention_head_dim=4, resnet_time_scale_shift="scale_shift", class_embed_type=None, norm_num_groups=8,
        sample_size=sample_size).eval()


def movq() -> VQModel:
    torch.manual_seed(0)
    return VQModel(block_out_channels=[32, 64], down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
                   in_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8, norm_type="spatial",
                   num_vq_embeddings=12, out_channels=3, up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
                   vq_embed_dim=4).eval()


def kandinsky_decoder(scheduler=None, sample_size: int | None = None) -> KandinskyV22Pipeline:
    """`sample_size` set: the model's default image is sample_size × 2 pixels square (the MoVQ's scale)."""
    pipe = KandinskyV22Pipeline(unet=kandinsky_decoder_unet(sample_size=sample_size), scheduler=scheduler or ddpm_scheduler(),
                                movq=movq())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stable_diffusion(scheduler=None) -> StableDiffusionPipeline:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=TEXT_DIM,
                                norm_num_groups=8, attention_head_dim=4).eval()
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4,
                        norm_num_groups=8).eval()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(text_config()).eval()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer(), unet=unet,
                                   scheduler=scheduler or ddpm_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stable_unclip(scheduler=None):
    """A tiny StableUnCLIPPipeline: Karlo-style prior, image-embedding noiser, SD 2.x-style UNet with class labels."""
    from diffusers import DDIMScheduler, StableUnCLIPPipeline
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer

    torch.manual_seed(0)
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=TEXT_DIM, num_layers=1)
    prior.clip_std = torch.nn.Parameter(torch.ones(prior.clip_std.shape))  # post_process_latents stays non-trivial
    torch.manual_seed(0)
    prior_text_encoder = CLIPTextModelWithProjection(text_config()).eval()
    prior_scheduler = DDPMScheduler(variance_type="fixed_small_log", prediction_type="sample", num_train_timesteps=1000,
                                    clip_sample=True, clip_sample_range=5.0, beta_schedule="squaredcos_cap_v2")
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(text_config()).eval()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=TEXT_DIM,
                                class_embed_type="projection", projection_class_embeddings_input_dim=2 * TEXT_DIM,
                                norm_num_groups=8, attention_head_dim=4, use_linear_projection=True,
                                upcast_attention=True).eval()
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4,
                        norm_num_groups=8).eval()
    scheduler = scheduler or DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                           beta_end=0.012, prediction_type="v_prediction", set_alpha_to_one=False,
                                           steps_offset=1, clip_sample=False)
    pipe = StableUnCLIPPipeline(prior_tokenizer=tokenizer(), prior_text_encoder=prior_text_encoder, prior=prior,
                                prior_scheduler=prior_scheduler,
                                image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=TEXT_DIM),
                                image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
                                tokenizer=tokenizer(), text_encoder=text_encoder, unet=unet, scheduler=scheduler,
                                vae=vae)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_shapes_model(folder) -> str:
    """A random-weight model in the embedded shapes model's on-disk format (fast: 4 steps, a tiny UNet)."""
    from hdiff.shapes.model import TINY_SPEC, build_unet

    folder = Path(folder)
    if not (folder / "hdiff_shapes.json").exists():
        torch.manual_seed(0)
        build_unet(TINY_SPEC).save_pretrained(folder / "unet")
        DDPMScheduler(num_train_timesteps=1000).save_pretrained(folder / "scheduler")
        (folder / "hdiff_shapes.json").write_text(json.dumps({
            "default_steps": 4, "default_guidance_scale": 3.0, "default_scheduler": "dpm++", "image_size": 32}))
    return str(folder)
