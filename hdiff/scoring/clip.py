"""CLIP score (Hessel et al. 2021, as torchmetrics' CLIPScore defines it): 100 × max(cos(image, text), 0).

Any CLIP-class model works: openai/clip-vit-large-patch14 by default, PickScore (yuvalkirstain/PickScore_v1, with
the processor of laion/CLIP-ViT-H-14-laion2B-s32B-b79K) for preference. The image embeddings serve the paired
image similarity too (hdiff.scoring.similarity).
"""

from __future__ import annotations

import numpy as np
import torch

from hdiff import hub
from hdiff.errors import HdiffError
from hdiff.models.base import load_component
from hdiff.scoring.base import Scorer, model_folder, register, torch_device

CLIP_L14 = "openai/clip-vit-large-patch14"


def load_clip(model: str, processor: str | None, device: str):
    """(CLIPModel in eval mode on `device`, its processor): safetensors only, local files only when offline."""
    from transformers import CLIPModel, CLIPProcessor

    net = load_component(CLIPModel, model_folder(model)).to(torch_device(device)).eval()
    return net, load_processor(CLIPProcessor, processor or model)


def load_processor(loader, source: str):
    """A processor (no weights) from a Hub id or folder, local files only when offline; a missing one is one line
    naming it and the command that fetches it."""
    try:
        return loader.from_pretrained(model_folder(source), local_files_only=hub.offline())
    except (OSError, ValueError) as exc:
        if not hub.looks_like_hub_id(source):
            raise HdiffError(f"cannot load {loader.__name__} from {source}: {str(exc).splitlines()[0]}") from exc
        raise hub.missing_model_error(source) from exc


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    return features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def pooled(output) -> torch.Tensor:
    """get_*_features' projected embeddings: a tensor, or (transformers ≥ 5) an output's pooler_output."""
    return output if torch.is_tensor(output) else output.pooler_output


@register
class ClipScorer(Scorer):
    name = "clip"
    default_model = CLIP_L14
    unit = "CLIP score, 100 × cosine of image and prompt embeddings (0–100)"

    def __init__(self, model_id: str, device: str = "cpu", *, processor: str | None = None):
        super().__init__(model_id, device)
        self.net, self.processor = load_clip(model_id, processor, device)
        self.processor_id = processor

    @torch.no_grad()
    def image_embeddings(self, images: list[np.ndarray]) -> torch.Tensor:
        """(N, D) unit image embeddings, on the CPU."""
        rows = []
        for lo in range(0, len(images), self.batch_size):
            pixels = self.processor(images=list(images[lo:lo + self.batch_size]), return_tensors="pt")["pixel_values"]
            features = pooled(self.net.get_image_features(pixel_values=pixels.to(self.net.device, self.net.dtype)))
            rows.append(unit_rows(features.float()).cpu())
        return torch.cat(rows)

    @torch.no_grad()
    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """(N, D) unit prompt embeddings (prompts cut at the model's context length, as torchmetrics does)."""
        limit = self.net.config.text_config.max_position_embeddings
        tokens = self.processor(text=list(prompts), return_tensors="pt", padding=True, truncation=True,
                                max_length=limit)
        features = pooled(self.net.get_text_features(input_ids=tokens["input_ids"].to(self.net.device),
                                                     attention_mask=tokens["attention_mask"].to(self.net.device)))
        return unit_rows(features.float()).cpu()

    def score_batch(self, images, prompts):
        cosine = (self.image_embeddings(images) * self.text_embeddings(prompts)).sum(dim=-1)  # (B,)
        return (100.0 * cosine.clamp_min(0.0)).numpy()

    @classmethod
    def models(cls, model, *, processor: str | None = None, **options):
        return [model or cls.default_model, *([processor] if processor else [])]
