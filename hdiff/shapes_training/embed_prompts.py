"""Precompute MiniLM embeddings for the trainer: `python -m hdiff.shapes_training.embed_prompts OUT.npz [--seed 0]`.

The file holds `prompts` (N,) str and `embeddings` (N, 384) float32: the training prompts of `--seed` and the
held-out evaluation prompts (`--eval-prompts` per set, as the trainer's flag), so that
`python -m hdiff.shapes_training.train --embeddings OUT.npz` runs on a machine without the sentence model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from hdiff.embedding import embed_texts
from hdiff.shapes.model import SENTENCE_MODEL
from hdiff.shapes_training.train import evaluation_sets, training_prompts


def prompts_to_embed(seed: int, eval_prompts: int) -> list[str]:
    """Training prompts, then evaluation prompts, without duplicates."""
    prompts = [prompt for prompt, _ in training_prompts(seed)]
    prompts += [prompt for pairs in evaluation_sets(eval_prompts).values() for prompt, _ in pairs]
    return list(dict.fromkeys(prompts))


def write_embeddings(out: Path, prompts: list[str]) -> Path:
    vectors = embed_texts(prompts, SENTENCE_MODEL, progress=True)  # (N, 384)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, prompts=np.asarray(prompts, dtype=str), embeddings=vectors.astype(np.float32))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hdiff.shapes_training.embed_prompts",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="the trainer's --seed (it picks the training pairs)")
    parser.add_argument("--eval-prompts", type=int, default=200, help="the trainer's --eval-prompts")
    args = parser.parse_args(argv)
    prompts = prompts_to_embed(args.seed, args.eval_prompts)
    write_embeddings(args.out, prompts)
    print(f"{len(prompts)} prompts embedded → {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
