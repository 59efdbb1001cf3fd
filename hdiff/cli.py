"""The `hdiff` command line: generate, build, verify, push, bench."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hdiff.errors import HdiffError, run_as_command
from hdiff.prompts import read_prompt_file
from hdiff.records import NOISE_DEVICES


def staged_output(out: Path, overwrite: bool) -> Path:
    """A temporary sibling folder of `out`, renamed to `out` only when the run completes."""
    if out.exists() and not overwrite:
        raise HdiffError(f"{out} already exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))


def publish_staged(staging: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)


def cmd_generate(args) -> int:
    import torch
    from PIL import Image
    from tqdm import tqdm

    from hdiff.figures import save_dendrogram, save_grid
    from hdiff.generate import GenerationSettings, ImageJob, generate
    from hdiff.models import load_adapter
    from hdiff.models.schedulers import count_evaluations

    prompts = read_prompt_file(args.prompts)
    if args.tau is not None and args.tau < 0:
        raise HdiffError(f"--tau must be >= 0, got {args.tau}")
    if args.steps is not None and args.steps < 1:
        raise HdiffError(f"--steps must be >= 1, got {args.steps}")
    if args.budget is not None and not 0 <= args.budget < 1:
        raise HdiffError(f"--budget must be in [0, 1), got {args.budget}")
    if args.batch_multiple < 1:
        raise HdiffError(f"--batch-multiple must be >= 1, got {args.batch_multiple}")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise HdiffError(f"{out} already exists; pass --overwrite to replace it")
    job = ImageJob.from_prompts(prompts, images_per_prompt=args.images_per_prompt, base_seed=args.seed)
    adapter = load_adapter(args.model, adapter=args.adapter, device=args.device, scheduler=args.scheduler)
    adapter.accelerate(channels_last=args.channels_last, compile=args.compile)
    size = args.size or adapter.default_size
    settings = GenerationSettings(
        steps=args.steps or adapter.default_steps,
        guidance_scale=args.guidance if args.guidance is not None else adapter.default_guidance,
        height=size, width=size, tau=args.tau, budget=args.budget,  # neither: the model's own τ
        schedule=args.schedule, max_batch=args.max_batch, copy_max_shared=args.copy_max_shared,
        noise_device=args.noise_device, batch_multiple=args.batch_multiple)
    staging = staged_output(out, args.overwrite)
    try:
        started = time.perf_counter()
        total = count_evaluations(adapter.scheduler, settings.steps)
        with tqdm(desc="denoising", unit="eval", total=total, disable=args.quiet) as bar:
            def on_evaluation(k, active):
                bar.set_postfix(active=active)
                bar.update(1)

            with torch.inference_mode():
                generation = generate(adapter, job, settings, on_evaluation=on_evaluation)
        (staging / "images").mkdir()
        grid = []
        for row, image in generation.images():
            Image.fromarray(image).save(staging / "images" / f"{row:05d}.png")
            if len(grid) < 64:
                grid.append(image)
        seconds = time.perf_counter() - started
        plan = generation.plan
        report = {"model": args.model, "adapter": adapter.name, "settings": settings.__dict__,
                  "plan": plan.summary(), "tau": plan.schedule.tau,
                  "seconds": seconds, "device": str(adapter.device),
                  "images": [{"file": f"images/{i:05d}.png", **r.model_dump()} for i, r in enumerate(generation.records)]}
        (staging / "report.json").write_text(json.dumps(report, indent=1))
        save_dendrogram(plan, staging / "dendrogram.png", labels=job.prompts)
        save_grid(grid, staging / "grid.png")
        publish_staged(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"{len(job)} images in {out} ({seconds:.1f} s); τ = {plan.schedule.tau:.4g}, "
          f"UNet rows {plan.unet_rows} of {plan.standard_unet_rows} standard, {plan.saved_fraction:.1%} saved")
    return 0


def cmd_build(args) -> int:
    from hdiff.dataset.config import apply_overrides, load_config
    from flows.build_dataset import build_dataset_from_config

    config = load_config(args.config)
    if args.set:
        overrides = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise HdiffError(f"--set expects KEY=VALUE, got {item!r}")
            overrides[key] = value
        config = apply_overrides(config, overrides)
    manifest = build_dataset_from_config(config)
    totals = manifest["totals"]
    print(f"{totals['samples']} images in {config.output}: {totals['percent_saved']:.1f}% of UNet rows saved "
          f"({totals['unet_rows']} of {totals['standard_rows']}), {totals['wall_seconds']:.1f} s")
    return 0


def cmd_verify(args) -> int:
    from hdiff.dataset.verify import run_verify

    return run_verify(args.out)


def cmd_push(args) -> int:
    from hdiff.publish import push_dataset

    url = push_dataset(args.out, args.repo, private=args.private, revision=args.revision)
    print(url)
    return 0


def cmd_bench(args) -> int:
    import importlib

    module = importlib.import_module(f"hdiff.bench.{args.which}")
    return module.main(args.rest)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hdiff", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="images for a prompt file, sharing early denoising steps")
    g.add_argument("--model", default="hdiff/shapes", help="Hub id or local folder (default: the embedded model)")
    g.add_argument("--adapter", default=None, help="adapter name when it cannot be inferred")
    g.add_argument("--prompts", required=True, help=".txt (one a line) or .jsonl ({\"prompt\": ...})")
    share = g.add_mutually_exclusive_group()
    share.add_argument("--tau", type=float, default=None,
                       help="φ(0), the first cut height (0: standard sampling; default: the model's own)")
    share.add_argument("--budget", type=float, default=None, help="target fraction of UNet rows saved, in [0, 1)")
    g.add_argument("--schedule", default="linear", choices=["linear", "cosine", "quadratic"])
    g.add_argument("--steps", type=int, default=None)
    g.add_argument("--guidance", type=float, default=None)
    g.add_argument("--scheduler", default=None, help="ddpm, ddim, euler, euler-ancestral, dpm++, unipc, heun")
    g.add_argument("--size", type=int, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--images-per-prompt", type=int, default=1)
    g.add_argument("--copy-max-shared", type=float, default=0.25)
    g.add_argument("--max-batch", type=int, default=64)
    g.add_argument("--noise-device", choices=NOISE_DEVICES, default="cpu",
                   help="where sampling noise is drawn: cpu (the same images on every machine) or the model's device")
    g.add_argument("--device", default="auto")
    g.add_argument("--channels-last", action="store_true", help="channels_last memory for the UNet and decoder")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet's forward (pair with --batch-multiple 8: one graph per batch size)")
    g.add_argument("--batch-multiple", type=int, default=1,
                   help="pad UNet micro-batches to a multiple of this many clusters (8 on GPUs)")
    g.add_argument("--out", required=True)
    g.add_argument("--overwrite", action="store_true")
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(func=cmd_generate)

    b = sub.add_parser("build", help="build a WebDataset image dataset from a YAML config (a Prefect flow)")
    b.add_argument("config")
    b.add_argument("--set", action="append", help="override a config value, e.g. --set generation.tau=0.5")
    b.set_defaults(func=cmd_build)

    v = sub.add_parser("verify", help="check a built dataset; exit 1 if anything is wrong")
    v.add_argument("out")
    v.set_defaults(func=cmd_verify)

    u = sub.add_parser("push", help="upload a built dataset to the Hugging Face Hub")
    u.add_argument("out")
    u.add_argument("--repo", required=True)
    u.add_argument("--private", action="store_true")
    u.add_argument("--revision", default=None)
    u.set_defaults(func=cmd_push)

    bench = sub.add_parser("bench", help="benchmarks that print figures: saved, quality, speed, plan")
    bench.add_argument("which", choices=["saved", "quality", "speed", "plan"])
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_as_command(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
