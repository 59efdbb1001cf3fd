"""`hdiff bench quality`: compute saved against exact accuracy in the shapes world, by τ and at equal compute.

For each prompt set (clustered: few backgrounds and shapes; paraphrased: the clustered set's scenes in held-out
phrasings, as people write; diverse: spread over all attributes; all of held-out attribute combinations) it sweeps τ, at the model's step count and at a few lower ones, and reports the
UNet rows spent, the oracle's all-attribute and per-attribute accuracy, the error against the exact render, and
diversity; then the paper's fixed-budget comparison: each point against standard sampling at the fewest steps that
cost at least as many UNet rows. Writes quality.json, quality.md and quality.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from hdiff.bench.common import comma_list, integer, machine_line, markdown_table, number
from hdiff.devices import DEVICE_CHOICES, check_device
from hdiff.errors import CommandParser
from hdiff.files import atomic_path, check_writable_output, write_atomically
from hdiff.generate import GenerationSettings, ImageJob, generate
from hdiff.planning import SCHEDULE_CURVES
from hdiff.shapes.oracle import ATTRIBUTES, all_correct, detect, score
from hdiff.shapes.world import render

PROMPT_SETS = ("clustered", "paraphrased", "diverse")  # the τ sweeps' sets, in the order they run


def run(adapter, pairs, *, steps: int, guidance: float, tau: float, seed: int = 0, max_batch: int = 128,
        schedule: str = "linear") -> dict:
    """Generate the prompts of `pairs` and score them with the oracle and against their exact renders."""
    prompts = [prompt for prompt, _ in pairs]
    settings = GenerationSettings(steps=steps, guidance_scale=guidance, height=adapter.default_size,
                                  width=adapter.default_size, tau=tau, max_batch=max_batch, schedule=schedule)
    started = time.perf_counter()
    with torch.inference_mode():
        generation = generate(adapter, ImageJob.from_prompts(prompts, base_seed=seed), settings)
        images = [image for _, image in generation.images()]
    seconds = time.perf_counter() - started
    scenes = [scene for _, scene in pairs]
    results = [score(image, scene) for image, scene in zip(images, scenes)]
    saved = generation.plan.saved_fraction
    return {
        "tau": tau, "steps": steps, "images": len(images), "seconds": seconds,
        "saved": saved, "unet_rows": generation.plan.unet_rows,
        "steps_per_image": steps * (1.0 - saved),
        "accuracy": float(np.mean([all_correct(r) for r in results])),
        "per_attribute": {a: float(np.mean([r[a] for r in results])) for a in ATTRIBUTES},
        "render_error": render_error(images, scenes),
        **diversity(images, scenes),
    }


def render_error(images: list[np.ndarray], scenes) -> float:
    """Mean absolute difference (0–255) between each image and the exact render of its prompt's scene."""
    return float(np.mean([np.abs(image.astype(np.float32) - render(scene)).mean()
                          for image, scene in zip(images, scenes)]))


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


def equal_compute_steps(steps_per_image: float) -> int:
    """The fewest standard-sampling steps that cost at least `steps_per_image` UNet steps per image."""
    return max(1, math.ceil(steps_per_image - 1e-9))


def better(hierarchical: dict, standard: dict) -> str:
    """Which run of an equal-compute pair is more accurate: "hdiff", "standard" or "tie"."""
    if hierarchical["accuracy"] == standard["accuracy"]:
        return "tie"
    return "hdiff" if hierarchical["accuracy"] > standard["accuracy"] else "standard"


def compare_at_equal_compute(adapter, pairs, *, base_steps: list[int], taus: list[float], guidance: float,
                             schedule: str) -> dict:
    """The τ sweep at each base step count, each point against standard sampling at the fewest steps that cost at
    least as much (so a win for hdiff is never bought with more compute)."""
    sweep = [run(adapter, pairs, steps=base, guidance=guidance, tau=tau, schedule=schedule)
             for base in base_steps for tau in taus]
    standard = {point["steps"]: point for point in sweep if point["tau"] == 0.0}  # τ = 0 is standard sampling
    comparisons = []
    for index, point in enumerate(sweep):
        if point["tau"] == 0.0:
            continue  # standard sampling itself
        k = equal_compute_steps(point["steps_per_image"])
        if k not in standard:
            standard[k] = run(adapter, pairs, steps=k, guidance=guidance, tau=0.0)
        comparisons.append({"hierarchical": index, "standard_steps": k, "better": better(point, standard[k])})
    return {"hierarchical": sweep, "fewer_steps": [standard[k] for k in sorted(standard, reverse=True)],
            "comparisons": comparisons}


def equal_compute_pairs(result: dict) -> Iterator[tuple[dict, dict, str]]:
    """(hierarchical run, standard run at equal compute, which is more accurate) for each comparison of a set."""
    standard = {r["steps"]: r for r in result["fewer_steps"]}
    for c in result["comparisons"]:
        yield result["hierarchical"][c["hierarchical"]], standard[c["standard_steps"]], c["better"]


def verdicts(result: dict) -> dict[str, int]:
    """How many equal-compute comparisons each side won (ties counted apart)."""
    counts = {"hdiff": 0, "tie": 0, "standard": 0}
    for _, _, winner in equal_compute_pairs(result):
        counts[winner] += 1
    return counts


def plot(results: dict, default_steps: int, path: Path) -> None:
    """Accuracy against UNet steps per image on a log axis, less compute to the right, where fewer steps break."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items()):
        by_base = defaultdict(list)
        for r in result["hierarchical"]:
            by_base[r["steps"]].append(r)
        for base, rows in sorted(by_base.items(), reverse=True):
            rows = sorted(rows, key=lambda r: r["steps_per_image"], reverse=True)
            ax.plot([r["steps_per_image"] for r in rows], [100 * r["accuracy"] for r in rows], "o-",
                    label=f"hdiff on {base} steps (τ sweep)")
        fewer = sorted(result["fewer_steps"], key=lambda r: r["steps"], reverse=True)
        ax.plot([r["steps"] for r in fewer], [100 * r["accuracy"] for r in fewer], "s--", color="black",
                label="standard, fewer steps")
        ax.set_xscale("log")
        ticks = [k for k in (1, 2, 3, 4, 6, 10, 20, 40, 80) if k <= default_steps]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(k) for k in ticks])
        ax.invert_xaxis()
        ax.set_title(f"{name} set ({result['hierarchical'][0]['images']} prompts)")
        ax.set_xlabel(f"UNet steps per image (log; {default_steps} = standard sampling at the default)")
        ax.set_ylabel("all-attribute accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def saved_vs(default_steps: int, r: dict) -> float:
    """Percent of the UNet rows of standard sampling at `default_steps` that run `r` did not spend."""
    return 100 * (1.0 - r["steps_per_image"] / default_steps)


def table(results: dict, default_steps: int) -> str:
    headers = ["set", "method", "steps", "τ", "steps / image", f"saved vs {default_steps} steps", "accuracy",
               *ATTRIBUTES, "render error", "within-group dist", "pos. spread px"]
    rows = []
    for name, result in results.items():
        for key, label in (("hierarchical", "hdiff"), ("fewer_steps", "standard")):
            for r in result[key]:
                rows.append([name, label, r["steps"], f"{r['tau']:g}", f"{r['steps_per_image']:.2f}",
                             f"{saved_vs(default_steps, r):.1f}%", f"{100 * r['accuracy']:.1f}%",
                             *(f"{100 * r['per_attribute'][a]:.0f}" for a in ATTRIBUTES),
                             f"{r['render_error']:.2f}", f"{r['within_group_distance']:.3f}",
                             f"{r['position_spread_px']:.2f}"])
    return markdown_table(headers, rows)


def comparison_table(results: dict) -> str:
    headers = ["set", "hdiff steps", "τ", "steps / image", "accuracy", "render error",
               "standard steps", "accuracy", "render error", "more accurate"]
    rows = []
    for name, result in results.items():
        for h, f, winner in equal_compute_pairs(result):
            rows.append([name, h["steps"], f"{h['tau']:g}", f"{h['steps_per_image']:.2f}",
                         f"{100 * h['accuracy']:.1f}%", f"{h['render_error']:.2f}", f["steps"],
                         f"{100 * f['accuracy']:.1f}%", f"{f['render_error']:.2f}", winner])
    return markdown_table(headers, rows)


def prompt_set(text: str) -> str:
    """An argparse type: one of PROMPT_SETS."""
    if text not in PROMPT_SETS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(PROMPT_SETS)}")
    return text


def parse_args(argv: list[str] | None):
    from hdiff.models.shapes import CLUSTER_FEATURES

    p = CommandParser(prog="hdiff bench quality", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="hdiff/shapes")
    p.add_argument("--prompts", type=integer(1), default=300, help="prompts per set")
    p.add_argument("--standard-prompts", type=integer(1), default=500,
                   help="held-out one-object prompts for the τ=0 check")
    p.add_argument("--two-object-prompts", type=integer(1), default=200)
    p.add_argument("--timing-prompts", type=integer(1), default=64,
                   help="clustered prompts timed at the default τ (default 64)")
    p.add_argument("--taus", type=comma_list(number(0)), default=None,
                   help="comma-separated τ (default: 0, 0.5, 1, 1.5, 2, 3 × the model's τ)")
    p.add_argument("--cluster-on", choices=CLUSTER_FEATURES, default=None,
                   help="cluster prompts by the model's layout prior (its default where it has one) or by its "
                        "conditioning vectors")
    p.add_argument("--schedule", default="linear", choices=list(SCHEDULE_CURVES))
    p.add_argument("--steps", type=integer(1), default=None, help="standard sampling's steps (default: the model's)")
    p.add_argument("--low-steps", type=comma_list(integer(1), allow_empty=True), default=[10, 6],
                   help="comma-separated smaller step counts to run the τ sweep on as well, for the equal-compute "
                        "comparison at budgets where fewer steps lose accuracy (default 10,6; '' for none)")
    p.add_argument("--sets", type=comma_list(prompt_set), default=list(PROMPT_SETS),
                   help=f"comma-separated prompt sets for the τ sweeps (default: {','.join(PROMPT_SETS)})")
    p.add_argument("--guidance", type=number(0), default=None)
    p.add_argument("--device", type=check_device, default="auto", help=f"one of {', '.join(DEVICE_CHOICES)}")
    p.add_argument("--out", default="out/bench-quality")
    args = p.parse_args(argv)
    check_writable_output(args.out)
    return args


def main(argv: list[str] | None = None) -> int:
    from hdiff.models import load_adapter
    from hdiff.shapes.prompts import clustered_set, diverse_set, paraphrased_set

    builders = {"clustered": lambda n: clustered_set(n, seed=21), "paraphrased": lambda n: paraphrased_set(n, seed=21),
                "diverse": lambda n: diverse_set(n, seed=22)}

    args = parse_args(argv)
    requested = GenerationSettings.checked("flags", steps=args.steps, guidance_scale=args.guidance,
                                           schedule=args.schedule)  # checked before the model loads; unset: the model's own
    adapter = load_adapter(args.model, device=args.device, cluster_on=args.cluster_on)
    settings = requested.for_model(adapter)
    taus = args.taus or [round(m * adapter.default_tau, 6) for m in (0, 0.5, 1, 1.5, 2, 3)]
    steps, guidance = settings.steps, settings.guidance_scale
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(machine_line())
    cluster_on = getattr(adapter, "cluster_on", "embedding")
    print(f"model {args.model}: {adapter.scheduler_name}, {steps} steps, guidance {guidance}, "
          f"clustered by {cluster_on}, default τ {adapter.default_tau:g}")

    # 1. timing: clustered prompts at the defaults, the embedded model's CPU figure.
    timing = run(adapter, clustered_set(args.timing_prompts, seed=7), steps=steps, guidance=guidance,
                 tau=adapter.default_tau)
    print(f"{timing['images']} images at default settings (τ = {adapter.default_tau:g}): {timing['seconds']:.1f} s "
          f"on {adapter.device}")

    # 2. standard sampling on held-out one-object prompts, and two-object prompts beside it.
    standard = run(adapter, diverse_set(args.standard_prompts, seed=11), steps=steps, guidance=guidance, tau=0.0)
    two = run(adapter, diverse_set(args.two_object_prompts, seed=12, n_objects=2), steps=steps, guidance=guidance,
              tau=0.0)
    print(f"standard sampling, {standard['images']} held-out one-object prompts: "
          f"{100 * standard['accuracy']:.1f}% all-attribute accuracy; "
          f"{two['images']} two-object prompts: {100 * two['accuracy']:.1f}%")

    # 3. τ sweeps (at the default and the lower step counts) against fewer-step standard sampling at equal compute.
    base_steps = [steps, *sorted({k for k in args.low_steps if k < steps}, reverse=True)]
    results = {}
    for name in args.sets:
        pairs = builders[name](args.prompts)
        results[name] = compare_at_equal_compute(adapter, pairs, base_steps=base_steps, taus=taus,
                                                 guidance=guidance, schedule=args.schedule)
        for h, f, winner in equal_compute_pairs(results[name]):
            print(f"  {name} hdiff {h['steps']} steps τ={h['tau']:g}: {h['steps_per_image']:.2f} steps/image "
                  f"(saved {100 * h['saved']:.1f}%), accuracy {100 * h['accuracy']:.1f}%, render error "
                  f"{h['render_error']:.2f} | standard {f['steps']} steps: {100 * f['accuracy']:.1f}%, "
                  f"{f['render_error']:.2f} | {winner}")
        counts = verdicts(results[name])
        print(f"{name}: at equal compute hdiff is more accurate in {counts['hdiff']}, ties in {counts['tie']}, "
              f"and is less accurate in {counts['standard']} of {len(results[name]['comparisons'])} comparisons")

    report = {"machine": machine_line(), "model": args.model, "steps": steps, "base_steps": base_steps,
              "guidance": guidance, "cluster_on": cluster_on, "default_tau": adapter.default_tau,
              "timing": timing, "standard_one_object": standard, "standard_two_object": two, "sets": results,
              "verdicts": {name: verdicts(result) for name, result in results.items()}}
    write_atomically(out / "quality.json", json.dumps(report, indent=1).encode())
    markdown = (f"{table(results, steps)}\n\nAt equal compute (standard sampling at the fewest steps that cost at "
                f"least as much):\n\n{comparison_table(results)}")
    write_atomically(out / "quality.md", (markdown + "\n").encode())
    plot(results, steps, out / "quality.png")
    print(markdown)
    print(f"wrote {out}/quality.json, quality.md, quality.png")
    return 0
