"""The `hdiff` command line: generate, build, verify, push, bench."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import hdiff
from hdiff.devices import DEVICE_CHOICES, check_present
from hdiff.errors import CommandParser, HdiffError, run_as_command
from hdiff.files import atomic_folder, check_writable_output
from hdiff.models.schedulers import SCHEDULERS
from hdiff.prompts import read_prompt_file
from hdiff.settings import add_flags, from_flags


def cmd_generate(args) -> int:
    import torch
    from PIL import Image
    from tqdm import tqdm

    from hdiff.figures import save_dendrogram, save_grid
    from hdiff.generate import ImageJob, generate
    from hdiff.models import load_adapter
    from hdiff.models.schedulers import count_evaluations

    # every setting is checked before the prompts are embedded or a model loads; unset ones are the model's own
    requested = from_flags(args, height=args.size, width=args.size)
    check_present(args.device)
    check_writable_output(args.out, overwrite=args.overwrite)
    prompts = read_prompt_file(args.prompts)
    job = ImageJob.from_prompts(prompts, images_per_prompt=requested.images_per_prompt, base_seed=requested.seed)
    options = {"prior": args.prior} if args.prior else {}
    adapter = load_adapter(args.model, adapter=args.adapter, device=args.device, scheduler=args.scheduler,
                           allow_pickle=args.allow_pickle, **options)
    adapter.accelerate(channels_last=args.channels_last, compile=args.compile)
    settings = requested.for_model(adapter)
    out = Path(args.out)
    with atomic_folder(out, overwrite=args.overwrite) as staging:
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
        report = {"model": args.model, "adapter": adapter.name, "settings": settings.model_dump(mode="json"),
                  "plan": plan.summary(), "tau": plan.schedule.tau,
                  "seconds": seconds, "device": str(adapter.device),
                  "images": [{"file": f"images/{i:05d}.png", **r.model_dump()} for i, r in enumerate(generation.records)]}
        (staging / "report.json").write_text(json.dumps(report, indent=1))
        save_dendrogram(plan, staging / "dendrogram.png", labels=job.prompts)
        save_grid(grid, staging / "grid.png")
    print(f"{len(job)} images in {out} ({seconds:.1f} s); τ = {plan.schedule.tau:.4g}, "
          f"UNet rows {plan.unet_rows} of {plan.standard_unet_rows} standard, {plan.saved_fraction:.1%} saved")
    return 0


def cmd_build(args) -> int:
    from hdiff.dataset.config import apply_overrides, load_config
    from hdiff.dataset.pipeline import preflight
    from flows.build_dataset import build_dataset_from_config, describe_run

    config = load_config(args.config)
    if args.set:
        overrides = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise HdiffError(f"--set expects KEY=VALUE, got {item!r}")
            overrides[key] = value
        config = apply_overrides(config, overrides)
    preflight(config)  # before the flow (and a temporary Prefect server) starts; the flow checks again
    manifest = build_dataset_from_config(config)
    totals, run = manifest["totals"], manifest["run"]
    compute = ""
    if run["version"] is not None:
        version = manifest["versions"][-1]
        compute = (f"; this run {version['unet_rows']:.0f} of {version['standard_rows']} UNet rows, "
                   f"{version['wall_seconds']:.1f} s")
    oracle = totals.get("oracle_accuracy")  # the shapes world's oracle; other models have none
    accuracy = f", oracle accuracy {100 * oracle['all']:.1f}%" if oracle else ""
    if oracle and "not_understood" in oracle:  # prompts naming what the world does not have (each warned about)
        accuracy += f", {oracle['not_understood']} prompts not understood"
    print(f"{describe_run(run)}{compute}; the dataset: {totals['samples']} images in {config.output}, "
          f"{totals['percent_saved']:.1f}% of UNet rows saved{accuracy}")
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
    p = CommandParser(prog="hdiff", description=__doc__)
    p.add_argument("--version", action="version", version=f"hdiff {hdiff.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="images for a prompt file, sharing early denoising steps")
    g.add_argument("--model", default="hdiff/shapes", help="Hub id or local folder (default: the embedded model)")
    g.add_argument("--prior", default=None, help="Kandinsky 2.2: the prior's Hub id or local folder "
                   "(default: kandinsky-community/kandinsky-2-2-prior)")
    g.add_argument("--adapter", default=None, help="adapter name when it cannot be inferred")
    g.add_argument("--prompts", required=True, help=".txt (one a line) or .jsonl ({\"prompt\": ...})")
    add_flags(g.add_argument_group("generation settings (hdiff.settings.GenerationSettings; a build config's "
                                   "`generation` section)"))
    g.add_argument("--size", type=int, default=None, help="height and width at once")
    g.add_argument("--scheduler", default=None, choices=list(SCHEDULERS), help="default: the model's own")
    g.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)}: 'auto' is the first GPU, "
                   "else the CPU")
    g.add_argument("--allow-pickle", action="store_true",
                   help="also load pickle (.bin/.ckpt) weights, which can run code when loaded (default: safetensors)")
    g.add_argument("--channels-last", action="store_true", help="channels_last memory for the UNet and decoder")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet's forward (pair with --batch-multiple 8: one graph per batch size)")
    g.add_argument("--out", required=True, help="the output folder (images/, report.json, grid.png, "
                   "dendrogram.png), written under a temporary name and renamed when complete")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    b = sub.add_parser("build", help="build a WebDataset image dataset from a YAML config (a Prefect flow)")
    b.add_argument("config", help="the build config, a YAML file (see configs/demo.yaml)")
    b.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set generation.tau=0.5 (repeatable)")
    b.set_defaults(func=cmd_build)

    v = sub.add_parser("verify", help="check a built dataset; exit 1 if anything is wrong")
    v.add_argument("out", help="the dataset folder a build wrote")
    v.set_defaults(func=cmd_verify)

    u = sub.add_parser("push", help="upload a built dataset to the Hugging Face Hub")
    u.add_argument("out", help="the dataset folder a build wrote")
    u.add_argument("--repo", required=True, help="the Hub dataset repository, OWNER/NAME (created if absent)")
    u.add_argument("--private", action="store_true", help="create the repository private")
    u.add_argument("--revision", default=None, help="the branch to commit to (default: main)")
    u.set_defaults(func=cmd_push)

    bench = sub.add_parser("bench", help="benchmarks that print figures: saved, quality, speed, plan, ingest")
    bench.add_argument("which", choices=["saved", "quality", "speed", "plan", "ingest"], help="the benchmark")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="its own flags (hdiff bench WHICH --help)")
    bench.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        args = parser().parse_args(argv)
        return args.func(args)

    try:
        return run_as_command(run)
    except SystemExit as exc:  # --help and --version print and exit 0
        return int(exc.code or 0)


if __name__ == "__main__":
    sys.exit(main())
