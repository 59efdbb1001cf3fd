"""Add a layout prior to a model folder trained before it existed: `python -m hdiff.shapes_training.add_prior FOLDER`.

The trainer fits its own prior (hdiff.shapes_training.train); this fits one the same way for a saved model — on the
training split's one-object prompts, through the folder's whitening — and writes `prior.safetensors` into the
folder, leaving the weights and `hdiff_shapes.json` alone. It needs the training data, so it lives on the
trainer's side: the runtime (hdiff.shapes.prior, hdiff.models.shapes) never imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from hdiff.errors import HdiffError, run_as_command
from hdiff.shapes.model import apply_whitening, load_whitening
from hdiff.shapes.prior import ATTRIBUTE_WEIGHTS, fit_prior_on_pairs, predict_attributes, save_prior, scene_attribute
from hdiff.shapes.prompts import training_pairs
from hdiff.shapes_training.train import embeddings_for


def add_prior(folder: str | os.PathLike, embeddings_file: str | os.PathLike | None = None,
              log=print) -> dict[str, float]:
    """Fit the prior for the model in `folder` and save it there; returns its training accuracy per attribute."""
    folder = Path(folder)
    if not (folder / "unet").is_dir():
        raise HdiffError(f"{folder} is not a shapes model folder (no unet/)")
    pairs = [(prompt, scene) for prompt, scene in training_pairs() if len(scene.objects) == 1]
    raw = embeddings_for([prompt for prompt, _ in pairs], embeddings_file)  # (N, 384)
    vectors = apply_whitening(load_whitening(folder), raw)  # (N, 384)
    prior = fit_prior_on_pairs(vectors, pairs)
    predicted = predict_attributes(prior, vectors)
    train_accuracy = {name: float(np.mean([p[name] == scene_attribute(s, name) for p, (_, s) in zip(predicted, pairs)]))
                      for name in ATTRIBUTE_WEIGHTS}
    save_prior(folder, prior)
    log(f"prior fit on {len(pairs)} one-object training prompts; training accuracy "
        + ", ".join(f"{name} {acc:.3f}" for name, acc in train_accuracy.items()))
    return train_accuracy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hdiff.shapes_training.add_prior",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a shapes model folder (e.g. hdiff/shapes/weights)")
    parser.add_argument("--embeddings", default=None, help="precomputed MiniLM embeddings (.npz), else computed")
    args = parser.parse_args(argv)

    def body() -> None:
        add_prior(args.folder, args.embeddings)

    return run_as_command(body)


if __name__ == "__main__":
    sys.exit(main())
