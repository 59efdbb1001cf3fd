"""The shapes model's layout prior: what prompts are clustered by.

hdiff shares early denoising steps inside clusters of prompts, and the early steps decide coarse image structure.
Kandinsky 2.2 clusters well because its conditioning is a prior's *image* embedding: prompts close in that space
draw similar images. Sentence embeddings are not like that in the shapes world: "… in the top left …" and "… in
the top right …" differ by one word, sit closer than two paraphrases of one scene, and are merged first, although
their layouts differ exactly where a pixel-space denoiser decides first.

The prior plays the part of Kandinsky's: a linear read-out (multinomial logistic regression, one per attribute) from
the model's conditioning vector to the scene's attributes, fit on the training split. A prompt's cluster features
are its predicted attribute distributions, each scaled by ATTRIBUTE_WEIGHTS, which follow the order in which the
denoiser decides them: the flat background and the object's place and size first, its colour and shape later. With
cosine distance (the tree's metric) prompts that differ in colour or shape alone sit at ~0.04, prompts that
differ in background or place at ~0.4.

Stored beside the UNet as `prior.safetensors` (per attribute: `{name}.weight` (K, D) and `{name}.bias` (K,);
the class names, weights and the default τ on these features' scale in the file's metadata). This module is the
runtime part (features, storage) and the fit on given vectors; the trainer fits it on the training split
(hdiff.shapes_training.train, and `python -m hdiff.shapes_training.add_prior FOLDER` for a model trained before the
prior existed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from hdiff.errors import HdiffError
from hdiff.files import atomic_path

PRIOR_FILE = "prior.safetensors"
ATTRIBUTE_WEIGHTS: dict[str, float] = {"background": 3.0, "position": 3.0, "size": 2.0, "color": 1.0, "shape": 1.0}
DEFAULT_TAU = 0.1  # on these features' scale: 55.9% of UNet rows saved at 100% accuracy on the clustered set


def scene_attribute(scene, name: str) -> str:
    """The attribute `name` of a scene's first object (or its background)."""
    return scene.background if name == "background" else getattr(scene.objects[0], name)


def fit_prior(vectors: np.ndarray, scenes: list) -> dict:
    """Fit one logistic regression per attribute on (N, D) conditioning vectors of one-object training scenes.

    Returns {"tensors": {name.weight, name.bias}, "classes": {name: [labels]}, "weights": ATTRIBUTE_WEIGHTS,
    "default_tau": DEFAULT_TAU}. Deterministic (L-BFGS from zeros).
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(vectors, dtype=np.float64)
    if len(scenes) == 0:
        raise HdiffError("the prior needs one-object training scenes; there are none (raise --pairs-limit)")
    if len(x) != len(scenes):
        raise HdiffError(f"the prior needs one vector per scene, got {len(x)} vectors and {len(scenes)} scenes")
    tensors, classes = {}, {}
    for name in ATTRIBUTE_WEIGHTS:
        labels = [scene_attribute(scene, name) for scene in scenes]
        values = sorted(set(labels))
        if len(values) == 1:  # a small subset (tests, sanity runs): the one value, with certainty
            coef, bias = np.zeros((1, x.shape[1])), np.zeros(1)
        else:
            model = LogisticRegression(C=1.0, max_iter=2000).fit(x, labels)
            coef, bias, values = model.coef_, model.intercept_, list(model.classes_)
            if len(values) == 2:  # sklearn keeps one row for two classes: expand to a two-way softmax
                coef, bias = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-bias / 2, bias / 2])
        tensors[f"{name}.weight"] = torch.from_numpy(coef).float()
        tensors[f"{name}.bias"] = torch.from_numpy(bias).float()
        classes[name] = [str(c) for c in values]
    return {"tensors": tensors, "classes": classes, "weights": dict(ATTRIBUTE_WEIGHTS), "default_tau": DEFAULT_TAU}


def fit_prior_on_pairs(vectors: torch.Tensor, pairs: list) -> dict:
    """fit_prior on the one-object rows of (prompt, scene) training pairs; `vectors` (N, D) row-aligned with them."""
    rows = [i for i, (_, scene) in enumerate(pairs) if len(scene.objects) == 1]
    return fit_prior(vectors[rows].numpy(), [pairs[i][1] for i in rows])


def _logits(prior: dict, name: str, vectors: torch.Tensor) -> torch.Tensor:
    """(N, K) logits of attribute `name`."""
    return vectors.float() @ prior["tensors"][f"{name}.weight"].T + prior["tensors"][f"{name}.bias"]


def prior_features(prior: dict, vectors: torch.Tensor) -> torch.Tensor:
    """(N, D) conditioning vectors → (N, ΣK) weighted attribute distributions: the cluster features."""
    parts = [weight * torch.softmax(_logits(prior, name, vectors), dim=1) for name, weight in prior["weights"].items()]
    return torch.cat(parts, dim=1)


def predict_attributes(prior: dict, vectors: torch.Tensor) -> list[dict[str, str]]:
    """The most likely value of every attribute, per vector (to check the prior)."""
    out = [{} for _ in range(len(vectors))]
    for name in prior["weights"]:
        for row, index in enumerate(_logits(prior, name, vectors).argmax(dim=1).tolist()):
            out[row][name] = prior["classes"][name][index]
    return out


def save_prior(folder: str | os.PathLike, prior: dict) -> None:
    from safetensors.torch import save_file

    metadata = {"classes": json.dumps(prior["classes"]), "weights": json.dumps(prior["weights"]),
                "default_tau": json.dumps(prior["default_tau"])}
    with atomic_path(Path(folder) / PRIOR_FILE) as partial:  # never a half-written prior
        save_file({k: v.contiguous() for k, v in prior["tensors"].items()}, str(partial), metadata)


def load_prior(folder: str | os.PathLike) -> dict | None:
    """The prior saved in a model folder, or None (models trained before it: clustered on their vectors)."""
    path = Path(folder) / PRIOR_FILE
    if not path.is_file():
        return None
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    try:
        classes, weights = json.loads(metadata["classes"]), json.loads(metadata["weights"])
        default_tau = float(json.loads(metadata["default_tau"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise HdiffError(f"{path} has no class names, weights or default τ in its metadata") from exc
    tensors = load_file(str(path))
    missing = [f"{n}.{p}" for n in weights for p in ("weight", "bias") if f"{n}.{p}" not in tensors]
    if missing:
        raise HdiffError(f"{path} lacks {', '.join(missing)}")
    for name in weights:
        weight, bias = tensors[f"{name}.weight"], tensors[f"{name}.bias"]
        if weight.ndim != 2 or weight.shape[0] != len(classes.get(name, [])) or bias.shape != (weight.shape[0],):
            raise HdiffError(f"{path}: {name} has weight {tuple(weight.shape)} and bias {tuple(bias.shape)} for "
                             f"{len(classes.get(name, []))} classes")
    return {"tensors": tensors, "classes": classes, "weights": weights, "default_tau": default_tau}
