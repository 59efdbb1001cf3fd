"""The LAION improved aesthetic predictor (christophschuhmann/improved-aesthetic-predictor): an MLP over the
L2-normalized CLIP ViT-L/14 image embedding, predicting a 1–10 rating (AVA-style).

The MLP's weights come from a configured Hub repo or folder, as one safetensors file whose keys end as the original
module's (`layers.0.weight` … `layers.7.bias`); the CLIP model is configured apart (default
openai/clip-vit-large-patch14). Pickle (.pth) copies are not read.
"""

from __future__ import annotations

import torch
from torch import nn

from hdiff.errors import HdiffError
from hdiff.scoring.base import Scorer, model_folder, register, torch_device
from hdiff.scoring.clip import CLIP_L14, ClipScorer

AESTHETIC_REPO = "ttj/sac-logos-ava1-l14-linearMSE"  # the original weights ported to safetensors
LAYER_KEYS = ("layers.0", "layers.2", "layers.4", "layers.6", "layers.7")  # the Linear layers of the original


def aesthetic_mlp(embedding_dim: int, widths: tuple[int, ...] = (1024, 128, 64, 16)) -> nn.Sequential:
    """The predictor's MLP, numbered as the original (dropouts between the first four Linear layers)."""
    a, b, c, d = widths
    return nn.Sequential(nn.Linear(embedding_dim, a), nn.Dropout(0.2), nn.Linear(a, b), nn.Dropout(0.2),
                         nn.Linear(b, c), nn.Dropout(0.1), nn.Linear(c, d), nn.Linear(d, 1))


def weights_file(source: str) -> str:
    """The one .safetensors file of a folder or Hub repo (fetched, or from the cache when offline)."""
    from pathlib import Path

    found = sorted(Path(model_folder(source)).glob("*.safetensors"))
    if len(found) != 1:
        raise HdiffError(f"aesthetic predictor {source}: expected one .safetensors file, found "
                         f"{len(found) or 'none'}")
    return str(found[0])


def load_mlp(source: str) -> nn.Sequential:
    """The MLP with the weights in `source`; keys are matched by their `layers.N.weight|bias` ending."""
    from safetensors.torch import load_file

    tensors = load_file(weights_file(source))
    state = {}
    for key, value in tensors.items():
        tail = key[key.index("layers."):] if "layers." in key else key
        state[tail] = value
    missing = [f"{k}.weight" for k in LAYER_KEYS if f"{k}.weight" not in state]
    if missing:
        raise HdiffError(f"aesthetic predictor {source}: no {', '.join(missing)} among its tensors "
                         f"({', '.join(sorted(tensors)[:6])}…)")
    widths = tuple(state[f"{k}.weight"].shape[0] for k in LAYER_KEYS[:4])
    mlp = aesthetic_mlp(state["layers.0.weight"].shape[1], widths)
    mlp.load_state_dict({k.removeprefix("layers."): v for k, v in state.items() if k.startswith(LAYER_KEYS)})
    return mlp.eval()


@register
class AestheticScorer(Scorer):
    name = "aesthetic"
    default_model = AESTHETIC_REPO
    unit = "LAION aesthetic rating (about 1–10)"

    def __init__(self, model_id: str, device: str = "cpu", *, clip: str | None = None):
        super().__init__(model_id, device)
        self.clip = ClipScorer(clip or CLIP_L14, device)
        self.mlp = load_mlp(model_id).to(torch_device(device))

    @classmethod
    def models(cls, model, *, clip: str | None = None, **options):
        return [model or cls.default_model, clip or CLIP_L14]

    @torch.no_grad()
    def score_batch(self, images, prompts):
        embeddings = self.clip.image_embeddings(images).to(next(self.mlp.parameters()).device)  # (B, D), unit
        return self.mlp(embeddings).squeeze(-1).float().cpu().numpy()

    def identity(self):
        return {**super().identity(), "clip": self.clip.model_id, "clip_revision": self.clip.revision}
