"""The `hdiff` command line: generate, build, verify, push, pull, bench."""

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
    from hdiff.generate import check_negative_prompt
    from hdiff.models.base import ADAPTERS
    from hdiff.models.loading import adapter_name_for, check_steps
    from hdiff.models.schedulers import count_evaluations

    # every setting is checked before the prompts are embedded or a model loads; unset ones are the model's own
    requested = from_flags(args, height=args.size, width=args.size)
    check_present(args.device)
    check_writable_output(args.out, overwrite=args.overwrite)
    prompts = read_prompt_file(args.prompts)
    job = ImageJob.from_prompts(prompts, images_per_prompt=requested.images_per_prompt, base_seed=requested.seed)
    check_steps(args.model, requested.steps, "--steps")
    if requested.negative_prompt:
        check_negative_prompt(ADAPTERS[args.adapter or adapter_name_for(args.model)], requested.negative_prompt)
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
    config = read_build_config(args.config, args.set)  # light: no torch yet
    if args.dry_run:
        from hdiff.dataset.pipeline import describe_dry_run, prepare, preflight

        preflight(config)
        print(describe_dry_run(config, prepare(config)))
        return 0
    from flows.prefect_api import ApiStart
    from hdiff.dataset.ownership import check_output

    check_output(config.output, config.source.path_or_id)  # before any program starts
    api = ApiStart()  # a temporary Prefect server boots while torch, diffusers and the flow import
    try:
        from hdiff.dataset.pipeline import preflight

        preflight(config)  # before the flow runs; the flow checks again
        from flows.build_dataset import build_dataset_from_config
    except BaseException:
        api.close()  # refused: the server stops, nothing was written
        raise
    built = build_dataset_from_config(config, api)
    totals = built.manifest.totals
    compute = ""
    if built.run.version is not None:
        version = built.manifest.versions[-1]
        spent = version.unet_rows + (version.filtered_unet_rows or 0.0)  # images filtered out included
        standard = version.standard_rows + (version.filtered_standard_rows or 0)
        on_dropped = (f" ({version.filtered_unet_rows:.0f} on images filtered out)"
                      if version.filtered_unet_rows is not None else "")
        compute = f"; this run {spent:.0f} of {standard} UNet rows{on_dropped}, {version.wall_seconds:.1f} s"
    oracle = totals.oracle_accuracy  # the shapes world's oracle; other models have none
    accuracy = f", oracle accuracy {100 * oracle.all:.1f}%" if oracle else ""
    if oracle and oracle.not_understood:  # prompts naming what the world does not have (each warned about)
        accuracy += f", {oracle.not_understood} prompts not understood"
    filtered = "".join(f", {count} filtered by {rule}" for rule, count in (totals.filtered or {}).items())
    if totals.filtered_unet_rows is not None:
        filtered += f" (their {totals.filtered_unet_rows:.0f} UNet rows in the compute)"
    if built.run.device is not None and built.run.device.scoring_s > 0:
        compute += f", scoring {built.run.device.scoring_s:.1f} s apart from generation"
    print(f"{built.run.describe()}{compute}; the dataset: {totals.samples} images in {config.output}, "
          f"{totals.percent_saved:.1f}% of UNet rows saved{accuracy}{filtered}")
    if built.run.device is not None and (note := built.run.device.cpu_note()) is not None:
        print(note)
    return 0


def read_build_config(path: str, sets: list[str] | None, *, before_pilot: bool = False):
    """The build config at `path` with `--set KEY=VALUE` overrides, validated (`before_pilot`: see load_config)."""
    from hdiff.dataset.config import apply_overrides, load_config

    config = load_config(path, before_pilot=before_pilot)
    if sets:
        overrides = {}
        for item in sets:
            key, sep, value = item.partition("=")
            if not sep:
                raise HdiffError(f"--set expects KEY=VALUE, got {item!r}")
            overrides[key] = value
        config = apply_overrides(config, overrides)
    return config


def cmd_pilot(args) -> int:
    from hdiff.pilot import PilotOptions, main

    config = read_build_config(args.config, args.set, before_pilot=True)
    options = PilotOptions(prompts=args.prompts, budgets=tuple(args.budgets or ()), taus=tuple(args.taus or ()),
                           tolerance=args.tolerance, similarity_tolerance=args.similarity_tolerance, by=args.by,
                           similarity=args.similarity, seed=args.seed, fewer_steps=not args.no_fewer_steps)
    options.candidates()  # budgets or taus, not both: before any work
    for spec in config.scores:
        spec.require_cached()
    if args.out:
        check_writable_output(args.out)
    main(config, options, args.out)
    return 0


def cmd_verify(args) -> int:
    from hdiff.dataset.verify import run_verify

    return run_verify(args.out)


def cmd_push(args) -> int:
    from hdiff.publish import push_dataset

    url = push_dataset(args.out, args.repo, private=args.private, revision=args.revision)
    print(url)
    return 0


def cmd_pull(args) -> int:
    from hdiff.pull import pull_dataset

    out = pull_dataset(args.repo, args.out)
    print(f"{args.repo} in {out}: verified; `hdiff build {out / 'hdiff.yaml'}` extends it")
    return 0


BENCHMARKS = ("saved", "quality", "speed", "plan", "ingest", "shipped", "startup", "encode", "build",
              "scorers")  # modules of hdiff.bench


def cmd_bench(args) -> int:
    import importlib

    module = importlib.import_module(f"hdiff.bench.{args.which}")
    return module.main(args.rest)


def integer(low: int):
    """An argparse type: an integer >= low."""
    def parse(text: str) -> int:
        if not text.strip().lstrip("-").isdigit() or int(text) < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return int(text)

    return parse


def number(low: float):
    """An argparse type: a finite number >= low."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value == value and abs(value) != float("inf") and value >= low):
            raise argparse.ArgumentTypeError(f"expected a finite number >= {low:g}, got {text!r}")
        return value

    return parse


def comma_list(item):
    """An argparse type: comma-separated values, each read by `item`."""
    def parse(text: str) -> list:
        values = [item(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one comma-separated value, got {text!r}")
        return values

    return parse


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
    b.add_argument("--dry-run", action="store_true", help="print what the run would do (prompts new, kept and "
                   "removed; shards; images; the saving) without generating or loading a diffusion model")
    b.set_defaults(func=cmd_build)

    pl = sub.add_parser("pilot", help="what sharing costs on this build's model and prompts: a seeded sample of its "
                        "shards at τ = 0, candidate budgets and fewer steps, scored; recommends a budget")
    pl.add_argument("config", help="the build config, a YAML file")
    pl.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    pl.add_argument("--prompts", type=integer(1), default=64, help="prompts to sample, as whole shards (default 64)")
    pl.add_argument("--budgets", type=comma_list(number(0)), default=None,
                    help="comma-separated candidate budgets (fractions of UNet rows saved; default 0.2,0.4,0.6,0.8)")
    pl.add_argument("--taus", type=comma_list(number(0)), default=None, help="candidate τ values instead of budgets")
    pl.add_argument("--tolerance", type=number(0), default=1.0,
                    help="the largest mean score drop against τ = 0 to accept (default 1 point)")
    pl.add_argument("--similarity-tolerance", type=number(0), default=None,
                    help="the tolerance of the similarity criterion (100 × cosine to the τ = 0 image; default "
                         "--tolerance)")
    pl.add_argument("--by", default=None, help="the criterion of the recommendation: a score's name or "
                    "'similarity' (default: the first score)")
    pl.add_argument("--similarity", choices=["clip", "pixels"], default=None,
                    help="image similarity from CLIP image embeddings or pixels (default: clip where a CLIP scorer "
                         "runs, else pixels)")
    pl.add_argument("--no-fewer-steps", action="store_true",
                    help="skip plain sampling with fewer steps at each candidate's compute")
    pl.add_argument("--seed", type=integer(0), default=0, help="the sample's seed (default 0)")
    pl.add_argument("--out", default=None, help="the report's folder (default: OUTPUT-pilot beside the build's "
                    "output, where `budget: pilot` looks)")
    pl.set_defaults(func=cmd_pilot)

    v = sub.add_parser("verify", help="check a built dataset; exit 1 if anything is wrong")
    v.add_argument("out", help="the dataset folder a build wrote")
    v.set_defaults(func=cmd_verify)

    u = sub.add_parser("push", help="upload a built dataset to the Hugging Face Hub")
    u.add_argument("out", help="the dataset folder a build wrote")
    u.add_argument("--repo", required=True, help="the Hub dataset repository, OWNER/NAME (created if absent)")
    u.add_argument("--private", action="store_true", help="create the repository private")
    u.add_argument("--revision", default=None, help="the branch to commit to (default: main)")
    u.set_defaults(func=cmd_push)

    d = sub.add_parser("pull", help="fetch a pushed dataset (or one version of it) into a new folder and verify it")
    d.add_argument("repo", metavar="REPO[@REVISION]", help="the Hub dataset repository, OWNER/NAME, and optionally "
                   "a version tag (v1), branch or commit (default: main)")
    d.add_argument("out", help="the new dataset folder (written under a temporary name, renamed once verified)")
    d.set_defaults(func=cmd_pull)

    bench = sub.add_parser("bench", help=f"benchmarks that print figures: {', '.join(BENCHMARKS)}")
    bench.add_argument("which", choices=BENCHMARKS, help="the benchmark (a module of hdiff.bench)")
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
