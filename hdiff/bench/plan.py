"""`hdiff bench plan`: many prompts → semantic shards → a Ward tree and a plan per shard, with time and peak memory.

The embeddings are synthetic, a two-level mixture on the unit sphere standing in for a clustered prompt corpus:
topics uniform on the sphere, SUBTOPICS_PER_TOPIC subtopics scattered around each topic, prompts scattered around a
subtopic (Gaussian offsets of the given norms, renormalized). There is one topic per PROMPTS_PER_TOPIC prompts, so a
subtopic holds about 128 prompts whatever N is. Everything is float32 and generated in chunks, so memory is the N×D
matrix plus O(N) index arrays. Accounting per shard is the plan's own (UNet rows = Σ_k active clusters × 2 with
classifier-free guidance); totals sum the shards, as a dataset build does.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from hdiff.bench.common import integer, machine_line, markdown_table, number, peak_rss_mib, stage
from hdiff.dataset.shard import semantic_shards
from hdiff.errors import CommandParser, HdiffError
from hdiff.planning import Schedule, build_tree, make_plan

PROMPTS_PER_TOPIC = 2048
SUBTOPICS_PER_TOPIC = 16
SUBTOPIC_SPREAD = 1.0  # norm of a subtopic's offset from its topic (unit vectors; then renormalized)
PROMPT_SPREAD = 0.5  # norm of a prompt's offset from its subtopic
CHUNK = 65_536


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = CommandParser(prog="hdiff bench plan", description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=integer(1), default=1_000_000)
    p.add_argument("--dim", type=integer(2), default=384)
    p.add_argument("--min-shard", type=integer(1), default=128)
    p.add_argument("--max-shard", type=integer(2), default=512, help="at least twice --min-shard")
    p.add_argument("--steps", type=integer(1), default=40, help="scheduler evaluations K the plans are made over")
    p.add_argument("--tau", type=number(0), default=1.0)
    p.add_argument("--seed", type=integer(0), default=0)
    args = p.parse_args(argv)
    if args.max_shard < 2 * args.min_shard:
        raise HdiffError(f"--max-shard must be at least twice --min-shard, got {args.min_shard} and "
                         f"{args.max_shard}")
    return args


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Scales each row of x to unit length, in place; returns x."""
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def synthetic_embeddings(n: int, dim: int, seed: int) -> np.ndarray:
    """(n, dim) float32 unit vectors from the two-level mixture in the module docstring, generated CHUNK rows a time."""
    rng = np.random.default_rng(seed)
    topics = normalize_rows(rng.standard_normal((max(1, n // PROMPTS_PER_TOPIC), dim), dtype=np.float32))  # (T, D)
    n_sub = len(topics) * SUBTOPICS_PER_TOPIC
    offsets = rng.standard_normal((n_sub, dim), dtype=np.float32) * (SUBTOPIC_SPREAD / np.sqrt(dim))
    subtopics = normalize_rows(topics[rng.integers(len(topics), size=n_sub)] + offsets)  # (S, D)
    out = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, CHUNK):
        chunk = out[lo:lo + CHUNK]  # (c, D) view
        rng.standard_normal(chunk.shape, dtype=np.float32, out=chunk)
        chunk *= PROMPT_SPREAD / np.sqrt(dim)
        chunk += subtopics[rng.integers(n_sub, size=len(chunk))]
        normalize_rows(chunk)
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    schedule = Schedule("linear", args.tau)
    k = args.steps
    timings: dict[str, list[float]] = {}
    peaks: dict[str, float] = {}
    started, cpu_started = time.perf_counter(), time.process_time()

    with stage(timings, "embeddings"):
        x = synthetic_embeddings(args.prompts, args.dim, args.seed)  # (N, D) float32
    peaks["embeddings"] = peak_rss_mib()
    with stage(timings, "shards"):
        ids = [f"p{i:09d}" for i in range(args.prompts)]
        shards = semantic_shards(x, ids, args.min_shard, args.max_shard, seed=args.seed)
        del ids
    peaks["shards"] = peak_rss_mib()

    unet_rows = standard_rows = 0
    change = np.zeros(k + 1, dtype=np.int64)  # Σ over shards of (+1 at a node's start, −1 at its end)
    from tqdm import tqdm

    for members in tqdm(shards, desc="trees and plans", unit="shard", disable=None, file=sys.stderr):
        with stage(timings, "trees"):
            tree = build_tree(x[members])  # members: the shard's row indices into x
        with stage(timings, "plans"):
            plan = make_plan(tree, schedule, k)
            unet_rows += plan.unet_rows
            standard_rows += plan.standard_unet_rows
            live = plan.end > plan.start
            change += np.bincount(plan.start[live], minlength=k + 1) - np.bincount(plan.end[live], minlength=k + 1)
    peaks["trees"] = peaks["plans"] = peak_rss_mib()
    active = np.cumsum(change)[:k]  # (K,) active clusters per evaluation, all shards together
    rows_per_cluster = 2  # classifier-free guidance
    assert int(active.sum()) * rows_per_cluster == unet_rows, "accounting broken: rows != Σ_k active clusters"
    total, cpu_total = time.perf_counter() - started, time.process_time() - cpu_started

    sizes = np.array([len(s) for s in shards])
    print(f"hdiff bench plan: {args.prompts:,} synthetic prompts (D = {args.dim}, two-level mixture on the sphere), "
          f"shards of {args.min_shard}..{args.max_shard}, linear φ, τ = {args.tau:g}, K = {k}")
    labels = {"embeddings": "synthetic embeddings", "shards": "semantic_shards",
              "trees": "build_tree per shard", "plans": "make_plan + accounting per shard"}
    print(markdown_table(["stage", "wall s", "CPU s", "peak RSS so far (MiB)"],
                         [[labels[name], f"{timings[name][0]:.1f}", f"{timings[name][1]:.1f}", f"{peaks[name]:,.0f}"]
                          for name in labels]
                         + [["total", f"{total:.1f}", f"{cpu_total:.1f}", f"{peak_rss_mib():,.0f}"]]))
    print()
    saved = 1 - unet_rows / standard_rows
    print(markdown_table(
        ["shards", "prompts", "shard size min / mean / max", "UNet rows", "standard rows", "saved"],
        [[f"{len(shards):,}", f"{int(sizes.sum()):,}", f"{sizes.min()} / {sizes.mean():.0f} / {sizes.max()}",
          f"{unet_rows:,}", f"{standard_rows:,}", f"{saved:.2%}"]]))
    marks = sorted({0, k // 4, k // 2, 3 * k // 4, k - 1})
    print("active clusters per evaluation, all shards: "
          + ", ".join(f"k={m}: {int(active[m]):,}" for m in marks))
    print(f"peak memory: {peak_rss_mib():,.0f} MiB (peak RSS of this process, getrusage ru_maxrss)")
    print(machine_line())
    print(f"time: {total:.1f} s wall, {cpu_total:.1f} s CPU")
    return 0
