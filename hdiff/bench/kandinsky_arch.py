"""The real-size Kandinsky 2.2 decoder (UNet + MoVQ) with random weights, for speed benchmarks without downloads.

Timings on random weights are valid for speed. The prior is replaced by a fixed random projection of precomputed
all-MiniLM-L6-v2 prompt embeddings (384-d) to 1280-d image embeddings; the tree clusters those projections.
Not registered as an adapter: `hdiff bench speed --arch kandinsky22` builds it directly.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from hdiff.errors import HdiffError
from hdiff.models.base import Conditioning, default_dtype
from hdiff.models.kandinsky import Kandinsky22Adapter

IMAGE_EMBED_DIM = 1280

# kandinsky-community/kandinsky-2-2-decoder unet/config.json (1,253 M parameters).
UNET_CONFIG = dict(
    in_channels=4, out_channels=8, addition_embed_type="image", encoder_hid_dim=IMAGE_EMBED_DIM,
    encoder_hid_dim_type="image_proj", cross_attention_dim=768, attention_head_dim=64, layers_per_block=3,
    block_out_channels=(384, 768, 1152, 1536), resnet_time_scale_shift="scale_shift", class_embed_type=None,
    down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D",
                      "SimpleCrossAttnDownBlock2D"),
    up_block_types=("SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D",
                    "ResnetUpsampleBlock2D"),
    mid_block_type="UNetMidBlock2DSimpleCrossAttn", sample_size=64)

# kandinsky-community/kandinsky-2-2-decoder movq/config.json.
MOVQ_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, vq_embed_dim=4, num_vq_embeddings=16384, norm_type="spatial",
    norm_num_groups=32, layers_per_block=2, block_out_channels=(128, 256, 256, 512),
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"))

# A shrunken version of the same block types, for tests of the code path on a CPU.
TINY_UNET_CONFIG = dict(
    UNET_CONFIG, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, attention_head_dim=8,
    norm_num_groups=8, sample_size=16,
    down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
    up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"))
TINY_MOVQ_CONFIG = dict(
    MOVQ_CONFIG, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, num_vq_embeddings=12,
    down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"))

# kandinsky-community/kandinsky-2-2-decoder scheduler/scheduler_config.json.
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
                        clip_sample=False, prediction_type="epsilon", steps_offset=1, thresholding=False,
                        variance_type="fixed_small", timestep_spacing="leading")


def load_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    """prompt → MiniLM embedding (384,) from an .npz with `prompts` (N,) and `embeddings` (N, 384) arrays."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise HdiffError(f"embeddings file {path} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise HdiffError(f"{path} is not an .npz of embeddings: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, np.lib.npyio.NpzFile) or "prompts" not in data or "embeddings" not in data:
        raise HdiffError(f"{path}: needs arrays 'prompts' and 'embeddings'")
    prompts, vectors = data["prompts"], data["embeddings"].astype(np.float32)
    if len(prompts) != len(vectors) or vectors.ndim != 2 or not len(vectors):
        raise HdiffError(f"{path}: expected N prompts and (N, D) embeddings with N >= 1, got {prompts.shape} and "
                         f"{vectors.shape}")
    if not np.isfinite(vectors).all():
        raise HdiffError(f"{path}: embeddings hold NaN or infinite values")
    return {str(p): v for p, v in zip(prompts, vectors)}


class KandinskyArchAdapter(Kandinsky22Adapter):
    """Kandinsky 2.2's decoder path at real size with random weights; conditioning from precomputed embeddings.

    The denoiser call, latent shape and MoVQ decoding are Kandinsky22Adapter's; only the prior is replaced.
    """

    name = "kandinsky22-arch"
    default_steps = 40
    default_guidance = 4.0
    default_size = 512

    def __init__(self, unet, movq, scheduler, embeddings: dict[str, np.ndarray], projection: torch.Tensor, *,
                 device="cpu", dtype=torch.float32, model_id: str = "kandinsky22-arch (random weights)"):
        super().__init__(model_id, None, unet, movq, scheduler, device=device, dtype=dtype)
        self.embeddings = embeddings
        self.projection = projection  # (384, 1280) float32, CPU

    @classmethod
    def build(cls, embeddings: dict[str, np.ndarray], *, device: str = "cpu", dtype: torch.dtype | None = None,
              tiny: bool = False, seed: int = 0) -> "KandinskyArchAdapter":
        """Random-weight UNet and MoVQ, initialised directly on `device` (fast for 1.25 B parameters on a GPU)."""
        from diffusers import DDPMScheduler, UNet2DConditionModel, VQModel

        dtype = dtype or default_dtype(device)
        torch.manual_seed(seed)
        with torch.device(device):
            unet = UNet2DConditionModel(**(TINY_UNET_CONFIG if tiny else UNET_CONFIG)).to(dtype).eval()
            movq = VQModel(**(TINY_MOVQ_CONFIG if tiny else MOVQ_CONFIG)).to(dtype).eval()
        dim = len(next(iter(embeddings.values())))
        generator = torch.Generator("cpu").manual_seed(seed)
        projection = torch.randn(dim, IMAGE_EMBED_DIM, generator=generator) / dim**0.5  # (D, 1280)
        return cls(unet, movq, DDPMScheduler(**SCHEDULER_CONFIG), embeddings, projection, device=device, dtype=dtype)

    @classmethod
    def from_pretrained(cls, source, *, device="cpu", dtype=None, **options):
        raise HdiffError("kandinsky22-arch has random weights only: build it with KandinskyArchAdapter.build")

    def encode(self, prompts, generators) -> Conditioning:
        missing = [p for p in prompts if p not in self.embeddings]
        if missing:
            raise HdiffError(f"{len(missing)} prompts have no precomputed embedding, e.g. {missing[0]!r}")
        vectors = torch.from_numpy(np.stack([self.embeddings[p] for p in prompts]))  # (N, 384)
        embeds = vectors @ self.projection  # (N, 1280)
        return Conditioning({"image_embeds": embeds.to(self.device, self.dtype)}, embeds.numpy())

    def negative(self, negative_prompt=""):
        return {"image_embeds": torch.zeros(1, IMAGE_EMBED_DIM, device=self.device, dtype=self.dtype)}
