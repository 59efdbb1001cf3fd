"""The LAION improved aesthetic predictor (christophschuhmann/improved-aesthetic-predictor): an MLP over the
L2-normalized CLIP ViT-L/14 image embedding, predicting a 1–10 rating (AVA-style).

The MLP's weights come from a configured Hub repo or folder, as one safetensors file holding the original module's
state dict under its own key names: the Linear layers of its `layers` Sequential at `layers.0`, `layers.2`,
`layers.4`, `layers.6` and `layers.7` (dropouts between the first four), a weight and a bias each. The upstream
`.pth` files are pickles, which hdiff does not load: docs/reference.md converts one to safetensors once. The CLIP
model is configured apart (default openai/clip-vit-large-patch14).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hdiff.errors import HdiffError
from hdiff.scoring.base import Scorer, model_folder, register, torch_device
from hdiff.scoring.clip import CLIP_L14, ClipScorer

AESTHETIC_REPO = "ttj/sac-logos-ava1-l14-linearMSE"  # the original weights ported to safetensors
LINEAR_LAYERS = ("layers.0", "layers.2", "layers.4", "layers.6", "layers.7")  # the original's Linear layers
WEIGHT_KEYS = tuple(f"{layer}.{part}" for layer in LINEAR_LAYERS for part in ("weight", "bias"))
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
CONVERT_HINT = "convert it to safetensors once as docs/reference.md shows (Aesthetic predictor weights)"


class AestheticMLP(nn.Module):
    """The predictor's MLP, its state dict keyed as the original's (`layers.0.weight` … `layers.7.bias`)."""

    def __init__(self, embedding_dim: int, widths: tuple[int, ...] = (1024, 128, 64, 16)):
        super().__init__()
        a, b, c, d = widths
        self.layers = nn.Sequential(nn.Linear(embedding_dim, a), nn.Dropout(0.2), nn.Linear(a, b), nn.Dropout(0.2),
                                    nn.Linear(b, c), nn.Dropout(0.1), nn.Linear(c, d), nn.Linear(d, 1))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings)  # (B, D) -> (B, 1)


def weights_file(source: str) -> Path:
    """The one .safetensors file of a folder or Hub repo (fetched, or from the cache when offline). A pickle, given
    or found, is refused in one line saying how to convert it."""
    if Path(source).suffix in PICKLE_SUFFIXES:
        raise HdiffError(f"aesthetic predictor {source}: a pickle file, which hdiff does not load; {CONVERT_HINT}")
    folder = Path(model_folder(source)).expanduser()
    found = sorted(folder.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES)
    if not found and pickles:
        raise HdiffError(f"aesthetic predictor {source}: only pickle weights ({', '.join(pickles)}), which hdiff "
                         f"does not load; {CONVERT_HINT}")
    raise HdiffError(f"aesthetic predictor {source}: expected one .safetensors file, found "
                     f"{len(found) or 'none'} (a .pth is not read: {CONVERT_HINT})")


def load_mlp(source: str) -> AestheticMLP:
    """The MLP with the weights in `source`, each tensor found by its full key name (WEIGHT_KEYS, no other)."""
    from safetensors.torch import load_file

    tensors = load_file(str(weights_file(source)))
    missing = [key for key in WEIGHT_KEYS if key not in tensors]
    unexpected = sorted(set(tensors) - set(WEIGHT_KEYS))
    if missing or unexpected:
        raise HdiffError(f"aesthetic predictor {source}: not the improved-aesthetic-predictor's keys ("
                         + "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                                       f"unexpected {', '.join(unexpected[:4])}" if unexpected else "")
                                     if part) + f"); expected {', '.join(WEIGHT_KEYS)}")
    widths = tuple(tensors[f"{layer}.weight"].shape[0] for layer in LINEAR_LAYERS[:4])
    mlp = AestheticMLP(tensors["layers.0.weight"].shape[1], widths)
    try:
        mlp.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:  # shapes that do not chain
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise HdiffError(f"aesthetic predictor {source}: the layers' shapes do not chain: {detail}") from None
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
