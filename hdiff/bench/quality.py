"""`hdiff bench quality`: compute saved against exact accuracy in the shapes world, by τ and at equal compute.

For each prompt set (clustered: few backgrounds and shapes; diverse: spread over all attributes; both of
held-out attribute combinations) it sweeps τ and reports the UNet rows saved, the oracle's all-attribute and
per-attribute accuracy, and diversity; then the paper's fixed-budget comparison: standard sampling with fewer
steps at the same number of UNet rows as each τ. Writes quality.json, quality.md and quality.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from hdiff.bench.common import machine_line, markdown_table
from hdiff.errors import HdiffError
from hdiff.generate import GenerationSettings, ImageJob, generate
from hdiff.shapes.oracle import ATTRIBUTES, all_correct, detect, score


def run(adapter, pairs, *, steps: int, guidance: float, tau: float, seed: int = 0, max_batch: int = 128,
        schedule: str = "linear") -> dict:
    """Generate the prompts of `pairs` and score them with the oracle."""
    prompts = [prompt for prompt, _ in pairs]
    settings = GenerationSettings(steps=steps, guidance_scale=guidance, height=adapter.default_size,
                                  width=adapter.default_size, tau=tau, max_batch=max_batch, schedule=schedule)
    started = time.perf_counter()
    with torch.inference_mode():
        generation = generate(adapter, ImageJob.from_prompts(prompts, base_seed=seed), settings)
        images = [image for _, image in generation.images()]
    seconds = time.perf_counter() - started
    results = [score(image, scene) for image, (_, scene) in zip(images, pairs)]
    return {
        "tau": tau, "steps": steps, "images": len(images), "seconds": seconds,
        "saved": generation.plan.saved_fraction, "unet_rows": generation.plan.unet_rows,
        "accuracy": float(np.mean([all_correct(r) for r in results])),
        "per_attribute": {a: float(np.mean([r[a] for r in results])) for a in ATTRIBUTES},
        **diversity(images, [scene for _, scene in pairs]),
    }


def diversity(images: list[np.ndarray], scenes) -> dict:
    """Mean RMS pixel distance between images of prompts sharing background and shape (the clusters a user
    would expect to collapse), and the spread (pixel std) of detected object centres per named position."""
    groups = defaultdict(list)
    for image, scene in zip(images, scenes):
        groups[(scene.background, scene.objects[0].shape)].append(image.astype(np.float32) / 255)
    distances = [float(np.sqrt(np.mean((a - b) ** 2)))
                 for members in groups.values() for a, b in itertools.combinations(members, 2)]
    centres = defaultdict(list)
    for image, scene in zip(images, scenes):
        blobs = detect(image).blobs
        if len(scene.objects) == 1 and blobs:
            centres[scene.objects[0].position].append(blobs[0].centre)
    spreads = [float(np.linalg.norm(np.std(np.asarray(c), axis=0))) for c in centres.values() if len(c) > 1]
    return {"within_group_distance": float(np.mean(distances)) if distances else 0.0,
            "position_spread_px": float(np.mean(spreads)) if spreads else 0.0}


def equal_compute_steps(steps: int, saved: float) -> int:
    """The standard-sampling step count whose UNet rows match a run that saved `saved` of `steps`."""
    return max(1, round(steps * (1.0 - saved)))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items()):
        for key, label, style in (("hierarchical", "hdiff (τ sweep)", "o-"),
                                  ("fewer_steps", "standard, fewer steps", "s--")):
            rows = sorted(result[key], key=lambda r: r["saved"])
            ax.plot([100 * r["saved"] for r in rows], [100 * r["accuracy"] for r in rows], style, label=label)
        ax.set_title(f"{name} set ({result['hierarchical'][0]['images']} prompts)")
        ax.set_xlabel("UNet rows saved (%)")
        ax.set_ylabel("all-attribute accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def table(results: dict) -> str:
    headers = ["set", "method", "τ", "steps", "saved", "accuracy", *ATTRIBUTES, "within-group dist", "pos. spread px"]
    rows = []
    for name, result in results.items():
        for key, label in (("hierarchical", "hdiff"), ("fewer_steps", "standard, fewer steps")):
            for r in result[key]:
                rows.append([name, label, f"{r['tau']:g}", r["steps"], f"{100 * r['saved']:.1f}%",
                             f"{100 * r['accuracy']:.1f}%", *(f"{100 * r['per_attribute'][a]:.0f}" for a in ATTRIBUTES),
                             f"{r['within_group_distance']:.3f}", f"{r['position_spread_px']:.2f}"])
    return markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    from hdiff.models import load_adapter
    from hdiff.models.shapes import CLUSTER_FEATURES
    from hdiff.shapes.prompts import clustered_set, diverse_set

    p = argparse.ArgumentParser(prog="hdiff bench quality", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="hdiff/shapes")
    p.add_argument("--prompts", type=int, default=300, help="prompts per set")
    p.add_argument("--standard-prompts", type=int, default=500, help="held-out one-object prompts for the τ=0 check")
    p.add_argument("--two-object-prompts", type=int, default=200)
    p.add_argument("--taus", default=None, help="comma-separated τ (default: 0, 0.5, 1, 1.5, 2, 3 × the model's τ)")
    p.add_argument("--cluster-on", choices=CLUSTER_FEATURES, default=None,
                   help="cluster prompts by the model's layout prior (its default where it has one) or by its "
                        "conditioning vectors")
    p.add_argument("--schedule", default="linear", choices=["linear", "cosine", "quadratic"])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="out/bench-quality")
    args = p.parse_args(argv)
    try:
        taus = [float(t) for t in args.taus.split(",")] if args.taus else None
    except ValueError:
        raise HdiffError(f"--taus must be comma-separated numbers, got {args.taus!r}") from None

    adapter = load_adapter(args.model, device=args.device, cluster_on=args.cluster_on)
    taus = taus or [round(m * adapter.default_tau, 6) for m in (0, 0.5, 1, 1.5, 2, 3)]
    steps = args.steps or adapter.default_steps
    guidance = args.guidance if args.guidance is not None else adapter.default_guidance
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(machine_line())
    cluster_on = getattr(adapter, "cluster_on", "embedding")
    print(f"model {args.model}: {adapter.scheduler_name}, {steps} steps, guidance {guidance}, "
          f"clustered by {cluster_on}, default τ {adapter.default_tau:g}")

    # 1. timing: 64 images at the defaults, the embedded model's CPU figure.
    timing = run(adapter, clustered_set(64, seed=7), steps=steps, guidance=guidance, tau=adapter.default_tau)
    print(f"64 images at default settings (τ = {adapter.default_tau:g}): {timing['seconds']:.1f} s "
          f"on {adapter.device}")

    # 2. standard sampling on held-out one-object prompts, and two-object prompts beside it.
    standard = run(adapter, diverse_set(args.standard_prompts, seed=11), steps=steps, guidance=guidance, tau=0.0)
    two = run(adapter, diverse_set(args.two_object_prompts, seed=12, n_objects=2), steps=steps, guidance=guidance,
              tau=0.0)
    print(f"standard sampling, {standard['images']} held-out one-object prompts: "
          f"{100 * standard['accuracy']:.1f}% all-attribute accuracy; "
          f"{two['images']} two-object prompts: {100 * two['accuracy']:.1f}%")

    # 3. τ sweep and the equal-compute comparison on both sets.
    results = {}
    for name, pairs in (("clustered", clustered_set(args.prompts, seed=21)),
                        ("diverse", diverse_set(args.prompts, seed=22))):
        sweep = [run(adapter, pairs, steps=steps, guidance=guidance, tau=tau, schedule=args.schedule) for tau in taus]
        fewer = []
        for r in sweep:
            k = equal_compute_steps(steps, r["saved"])
            same = run(adapter, pairs, steps=k, guidance=guidance, tau=0.0)
            same["saved"] = 1.0 - k / steps
            fewer.append(same)
        results[name] = {"hierarchical": sweep, "fewer_steps": fewer}
        for r in sweep:
            print(f"  {name} τ={r['tau']:g}: saved {100 * r['saved']:.1f}%, accuracy {100 * r['accuracy']:.1f}%")

    report = {"machine": machine_line(), "model": args.model, "steps": steps, "guidance": guidance,
              "cluster_on": cluster_on, "default_tau": adapter.default_tau,
              "timing_64": timing, "standard_one_object": standard, "standard_two_object": two, "sets": results}
    (out / "quality.json").write_text(json.dumps(report, indent=1))
    markdown = table(results)
    (out / "quality.md").write_text(markdown + "\n")
    plot(results, out / "quality.png")
    print(markdown)
    print(f"wrote {out}/quality.json, quality.md, quality.png")
    return 0
