"""Figures written beside generated images: the cluster dendrogram and an image grid."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from hdiff.planning import Plan


def linkage_matrix(plan: Plan) -> np.ndarray:
    """scipy's (N-1, 4) linkage matrix for the plan's tree."""
    tree = plan.tree
    n = tree.n_leaves
    heights = tree.heights[n:].copy()
    finite = np.isfinite(heights)
    top = heights[finite].max() if finite.any() else 1.0
    heights[~finite] = 1.5 * top + np.arange((~finite).sum())  # a packed forest's joins, drawn above the trees
    return np.column_stack([tree.children.astype(float), heights, tree.sizes[n:].astype(float)])


def save_dendrogram(plan: Plan, path: Path, labels: list[str] | None = None, max_leaves: int = 64) -> None:
    """The tree with the first cut height φ(0) drawn across it: clusters below the line start out shared."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram

    fig, ax = plt.subplots(figsize=(10, 5))
    if plan.tree.n_leaves > 1:
        truncate = dict(truncate_mode="lastp", p=max_leaves) if plan.tree.n_leaves > max_leaves else {}
        leaf_labels = None
        if labels is not None and len(labels) == plan.tree.n_leaves and not truncate:
            leaf_labels = [labels[i][:40] for i in np.argsort(plan.tree.leaf_of_row)]
        dendrogram(linkage_matrix(plan), ax=ax, labels=leaf_labels, leaf_rotation=90, **truncate)
        ax.axhline(plan.cut_heights[0], color="tab:red", linestyle="--", label=f"φ(0) = τ = {plan.cut_heights[0]:.3g}")
        ax.legend(loc="upper right")
    ax.set_ylabel("Ward merge height (c_score)")
    ax.set_title(f"{plan.tree.n_leaves} images, {plan.saved_fraction:.1%} of UNet rows saved ({plan.schedule.name})")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def save_grid(images: list[np.ndarray], path: Path, max_images: int = 64, cell: int = 128) -> None:
    """Up to `max_images` uint8 (H, W, 3) images in a square-ish grid, each scaled to `cell` pixels."""
    images = images[:max_images]
    cols = max(1, math.ceil(math.sqrt(len(images))))
    rows = max(1, math.ceil(len(images) / cols))
    grid = Image.new("RGB", (cols * cell, rows * cell), "white")
    for i, image in enumerate(images):
        tile = Image.fromarray(image).resize((cell, cell), Image.NEAREST)
        grid.paste(tile, ((i % cols) * cell, (i // cols) * cell))
    grid.save(path, format="PNG")
