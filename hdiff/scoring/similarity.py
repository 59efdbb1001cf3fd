"""Paired image similarity: the cosine between an image's embedding and its reference's (the same prompt and seed
made another way, e.g. at τ = 0). Embeddings are CLIP's image embeddings (`ClipScorer.image_embeddings`) or, for
a world without a CLIP model, the images' own pixels (each image's pixels minus their mean, so that the cosine is
their correlation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from hdiff.errors import HdiffError

Embedder = Callable[[list[np.ndarray]], np.ndarray]  # uint8 (H, W, 3) images -> (N, D) unit rows
SIMILARITIES = ("clip", "pixels")
SimilarityName = Literal["clip", "pixels"]


def pixel_embeddings(images: list[np.ndarray]) -> np.ndarray:
    """(N, H·W·3) unit rows: each image's pixels in [0, 1] less their mean."""
    rows = np.stack([np.asarray(image, dtype=np.float64).ravel() / 255.0 for image in images])  # (N, H·W·3)
    rows -= rows.mean(axis=1, keepdims=True)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True).clip(1e-12)


def clip_embedder(scorer) -> Embedder:
    """A CLIP scorer's unit image embeddings as an Embedder."""
    return lambda images: scorer.image_embeddings(images).numpy().astype(np.float64)


def paired_similarity(embed: Embedder, images: list[np.ndarray], references: list[np.ndarray]) -> np.ndarray:
    """(N,) cosine of each image to its reference (row i to row i)."""
    if len(images) != len(references):
        raise HdiffError(f"{len(images)} images for {len(references)} references")
    return (embed(list(images)) * embed(list(references))).sum(axis=1)
