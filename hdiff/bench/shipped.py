"""`hdiff bench shipped`: the shipped shapes model's accuracy floors, measured on held-out prompts.

These were the test suite's accuracy assertions on the shipped weights (hdiff/shapes/weights); they generate 320
images, about 5,400 UNet rows (the suite spent ~140 s on them on a 2-core CPU; 8 min here with two threads on a
busy one), so they run here, and the tests keep the behaviour on a handful of prompts (tests/test_shapes_model.py;
the prior's and the reader's floors, which generate nothing, are still checked in test_shapes_prior.py and
test_shapes_wording.py). Each figure is printed beside its floor; the command exits 1 when one is missed. The
floors, at --scale 1 (the default):

- standard sampling (τ = 0, the model's steps) on 16 held-out combinations, 8 in template wording and 8 in held-out
  phrasings (seed 5): every image costs 2 UNet rows a step (nothing shared), and at least 14 of 16 (87.5%) are
  right in every attribute;
- sharing at the model's default τ on 48 paraphrased clustered prompts (seed 3): at least 25% of the UNet rows
  saved; the model's reader reads at least 46 of 48 prompts (95.8%) right, and every image of a prompt it reads
  right is right in every attribute;
- equal compute where steps are scarce, 128 clustered prompts (seed 3): hdiff on 6 steps at the default τ spends
  fewer UNet rows than standard sampling on 3 steps, is at least as accurate and at least 127 of 128 (99.2%) right,
  and its mean error from the exact renders is under 0.8 × standard's (docs/quality-notes.md);
- the layout prior reads all five attributes of 40 held-out one-object prompts (seed 13) at least 95% right;
- the reader on 60 prompts a set (seed 77): held-out phrasings and partial prompts at least 90%, templates 99%.

--scale multiplies every set's size (a quick look: --scale 0.25; the floors are fractions, so they still apply).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from hdiff.bench.common import check_output_file, machine_line, markdown_table, number
from hdiff.devices import DEVICE_CHOICES, check_device
from hdiff.errors import CommandParser
from hdiff.files import write_atomically


@dataclass
class Figure:
    """One measured figure against its floor (or ceiling): `ok` when `value` is on the right side of `bound`."""

    check: str
    what: str
    value: float
    bound: float
    at_least: bool = True  # False: the figure must stay below (or at) the bound
    strict: bool = False  # a strict inequality
    percent: bool = True

    @property
    def ok(self) -> bool:
        if self.at_least:
            return self.value > self.bound if self.strict else self.value >= self.bound
        return self.value < self.bound if self.strict else self.value <= self.bound

    def row(self) -> list[str]:
        def shown(x: float) -> str:
            return f"{100 * x:.1f}%" if self.percent else f"{x:.3g}"

        sign = (">" if self.strict else "≥") if self.at_least else ("<" if self.strict else "≤")
        return [self.check, self.what, shown(self.value), f"{sign} {shown(self.bound)}",
                "ok" if self.ok else "MISSED"]


def sized(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def shipped_run(adapter, pairs, *, steps: int, tau: float) -> dict:
    """The model on `pairs` at its own guidance: the plan's UNet rows and saved fraction, the oracle's result per
    image and all-attribute accuracy, and the mean error against the exact renders."""
    from hdiff.bench.quality import render_error
    from hdiff.generate import GenerationSettings, ImageJob, generate
    from hdiff.shapes.oracle import all_correct, score

    settings = GenerationSettings(steps=steps, guidance_scale=adapter.default_guidance, height=adapter.default_size,
                                  width=adapter.default_size, tau=tau,
                                  max_batch=16)  # 32 UNet rows a call: the fastest per row on a CPU
    with torch.inference_mode():
        generation = generate(adapter, ImageJob.from_prompts([p for p, _ in pairs], base_seed=0), settings)
        images = [image for _, image in generation.images()]
    scenes = [scene for _, scene in pairs]
    results = [score(image, scene) for image, scene in zip(images, scenes)]
    return {"images": len(images), "unet_rows": generation.plan.unet_rows, "saved": generation.plan.saved_fraction,
            "accuracy": float(np.mean([all_correct(r) for r in results])), "results": results,
            "render_error": render_error(images, scenes)}


def read_right(adapter, pairs) -> list[bool]:
    """Whether the model's reader reads each prompt of `pairs` as its scene's request."""
    from hdiff.shapes.reader import read_prompts
    from hdiff.shapes.world import Request

    read = read_prompts(adapter.info["reader"], [p for p, _ in pairs], adapter.sentence_model)
    return [request == Request.of(scene) for request, (_, scene) in zip(read, pairs)]


def standard_check(adapter, scale: float) -> list[Figure]:
    from hdiff.shapes.prompts import diverse_set, paraphrased_set

    pairs = diverse_set(sized(8, scale), seed=5) + paraphrased_set(sized(8, scale), seed=5)
    run = shipped_run(adapter, pairs, steps=adapter.default_steps, tau=0.0)
    rows = adapter.rows_per_cluster(adapter.default_guidance) * adapter.default_steps
    name = f"standard, {len(pairs)} held-out"
    return [Figure(name, "UNet rows per image (τ = 0: nothing shared)", run["unet_rows"] / len(pairs), rows,
                   at_least=False, percent=False),
            Figure(name, "all-attribute accuracy", run["accuracy"], 14 / 16)]


def sharing_check(adapter, scale: float) -> list[Figure]:
    from hdiff.shapes.oracle import all_correct
    from hdiff.shapes.prompts import paraphrased_set

    pairs = paraphrased_set(sized(48, scale), seed=3)
    run = shipped_run(adapter, pairs, steps=adapter.default_steps, tau=adapter.default_tau)
    right = read_right(adapter, pairs)
    followed = [all_correct(result) for result, ok in zip(run["results"], right) if ok]
    name = f"default τ {adapter.default_tau:g}, {len(pairs)} paraphrased"
    return [Figure(name, "UNet rows saved", run["saved"], 0.25),
            Figure(name, "prompts the reader reads right", float(np.mean(right)), 46 / 48),
            Figure(name, "accuracy where the reader is right", float(np.mean(followed)) if followed else 0.0, 1.0)]


def equal_compute_check(adapter, scale: float) -> list[Figure]:
    from hdiff.shapes.prompts import clustered_set

    pairs = clustered_set(sized(128, scale), seed=3)
    shared = shipped_run(adapter, pairs, steps=6, tau=adapter.default_tau)
    cut = shipped_run(adapter, pairs, steps=3, tau=0.0)
    name = f"6 steps τ {adapter.default_tau:g} vs 3 steps τ 0, {len(pairs)} clustered"
    return [Figure(name, "UNet rows, hdiff / standard", shared["unet_rows"] / cut["unet_rows"], 1.0, at_least=False,
                   strict=True, percent=False),
            Figure(name, "accuracy, hdiff − standard", shared["accuracy"] - cut["accuracy"], 0.0),
            Figure(name, "accuracy, hdiff", shared["accuracy"], 127 / 128),
            Figure(name, "render error, hdiff / standard", shared["render_error"] / max(cut["render_error"], 1e-9),
                   0.8, at_least=False, strict=True, percent=False)]


def prior_check(adapter, scale: float) -> list[Figure]:
    from hdiff.shapes.prior import ATTRIBUTE_WEIGHTS, predict_attributes, scene_attribute
    from hdiff.shapes.prompts import diverse_set

    pairs = diverse_set(sized(40, scale), seed=13)
    vectors = adapter.encode([p for p, _ in pairs], []).tensors["image_embeds"].float()
    predicted = predict_attributes(adapter.info["prior"], vectors)
    right = np.mean([all(p[name] == scene_attribute(s, name) for name in ATTRIBUTE_WEIGHTS)
                     for p, (_, s) in zip(predicted, pairs)])
    return [Figure(f"prior, {len(pairs)} held-out", "all five attributes read right", float(right), 0.95)]


READER_FLOORS = {"phrasings": 0.9, "partial": 0.9, "templates": 0.99}


def reader_check(adapter, scale: float) -> list[Figure]:
    from hdiff.shapes.reader import read_prompts
    from hdiff.shapes.reader_sets import evaluation_sets
    from hdiff.shapes.world import Request

    n = sized(60, scale)
    sets = evaluation_sets(n, seed=77)
    figures = []
    for name, floor in READER_FLOORS.items():
        prompts, targets = zip(*sets[name])
        read_back = read_prompts(adapter.info["reader"], list(prompts), adapter.sentence_model)
        wanted = [t if isinstance(t, Request) else Request.of(t) for t in targets]
        figures.append(Figure(f"reader, {n} a set", f"{name} read right",
                              float(np.mean([a == b for a, b in zip(read_back, wanted)])), floor))
    return figures


CHECKS = {"standard": standard_check, "sharing": sharing_check, "equal-compute": equal_compute_check,
          "prior": prior_check, "reader": reader_check}


def run_checks(adapter, scale: float = 1.0, checks=tuple(CHECKS)) -> list[Figure]:
    """Every named check's figures on an already loaded shapes adapter (the tests pass theirs)."""
    figures = []
    for name in checks:
        figures += CHECKS[name](adapter, scale)
    return figures


def check_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CHECKS]
    if unknown or not names:
        import argparse

        raise argparse.ArgumentTypeError(f"choose from {', '.join(CHECKS)}")
    return names


def parse_args(argv: list[str] | None):
    p = CommandParser(prog="hdiff bench shipped", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="hdiff/shapes", help="a shapes model (default: the shipped one)")
    p.add_argument("--scale", type=number(0.001), default=1.0, help="multiply every prompt set's size (default 1)")
    p.add_argument("--checks", type=check_names, default=list(CHECKS),
                   help=f"comma-separated, from {','.join(CHECKS)} (default: all)")
    p.add_argument("--device", type=check_device, default="cpu", help=f"one of {', '.join(DEVICE_CHOICES)}")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.json is not None:
        args.json = check_output_file(args.json, "--json")
    return args


def main(argv: list[str] | None = None) -> int:
    from hdiff.models import load_adapter

    args = parse_args(argv)
    adapter = load_adapter(args.model, device=args.device)
    threads = torch.get_num_threads()
    print(machine_line())
    print(f"model {args.model}: {adapter.default_steps} steps, guidance {adapter.default_guidance:g}, "
          f"default τ {adapter.default_tau:g}; sets × {args.scale:g}; {threads} torch thread(s)")
    started = time.perf_counter()
    figures = run_checks(adapter, args.scale, args.checks)
    seconds = time.perf_counter() - started
    print(markdown_table(["check", "figure", "measured", "floor", ""], [f.row() for f in figures]))
    missed = [f for f in figures if not f.ok]
    print(f"{len(figures) - len(missed)} of {len(figures)} figures meet their floors"
          + (f"; missed: {'; '.join(f'{f.check}: {f.what}' for f in missed)}" if missed else ""))
    print(f"time: {seconds:.0f} s")
    if args.json is not None:
        report = {"machine": machine_line(), "model": args.model, "scale": args.scale, "seconds": seconds,
                  "figures": [asdict(f) | {"ok": f.ok} for f in figures]}
        write_atomically(Path(args.json), json.dumps(report, indent=1).encode())
        print(f"wrote {args.json}")
    return 1 if missed else 0

