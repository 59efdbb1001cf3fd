"""`hdiff bench build`: end-to-end images/s of a real `hdiff build` against the sampler alone and two stock loops.

On an emulated accelerator (hdiff.bench.emulated: calls sleep for the measured H200 time of their batch, the
decoder returns photo crops), on the same shards and prompts, per image format:

- build:            `hdiff build` in a fresh process (the flow, its Prefect server, the commit), timed from launch
                    to exit; with time to the first shard on disk, and the fixed cost measured by running the same
                    build again (nothing left to generate: interpreter, imports, Prefect server, prepare, commit);
- sampler:          `bench speed`'s path, pack by pack: encode, plan, sample, decode, nothing written;
- stock_naive:      the stock pipelines' loop (hdiff.bench.speed.baseline_latents) shard by shard, decoded, then
                    written with write_shard (encoding on this thread): generate, then save;
- stock_overlapped: the same loop, each shard encoded by a process pool and written by a thread while the next
                    shard generates (one shard in flight), as a careful user would write it.

Ratios are of images/s: build_over_sampler (end to end; `_without_fixed`: the build's wall less its fixed cost),
build_over_stock_naive, build_over_stock_overlapped. Each run's packs_done_s (when each pack was on disk, or for the
sampler decoded) is kept in the JSON.

    hdiff bench build --cost sdxl-1024 --prompts 64            # docs/speed.md
    hdiff bench build --cost kandinsky-512 --prompts 256
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from hdiff.bench.common import REPO_ROOT, check_output_file, comma_list, integer, machine_line, markdown_table, number
from hdiff.bench.emulated import COSTS, write_model
from hdiff.dataset import layout
from hdiff.dataset.encoding import DEFAULT_PNG_LEVEL, IMAGE_FORMATS, encode
from hdiff.errors import CommandParser, HdiffError, run_as_command
from hdiff.files import write_atomically
from hdiff.machine import usable_cores

METHODS = ("build", "sampler", "stock_naive", "stock_overlapped")
MAX_BATCH = {"sdxl-1024": 16, "kandinsky-512": 64, "flux-1024": 8}  # images a call: the tables' largest rows


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = CommandParser(prog="hdiff bench build", description=__doc__.splitlines()[0])
    p.add_argument("--cost", choices=list(COSTS), default="sdxl-1024", help="the emulated model's H200 table")
    p.add_argument("--prompts", type=integer(1), default=64)
    p.add_argument("--set", default=str(REPO_ROOT / "data" / "prompts" / "prompt_templates.jsonl"),
                   help=".jsonl prompt file (first distinct prompts)")
    p.add_argument("--formats", type=comma_list(str), default=list(IMAGE_FORMATS))
    p.add_argument("--png-level", type=integer(0), default=DEFAULT_PNG_LEVEL)
    p.add_argument("--steps", type=integer(1), default=None, help="default: the cost's")
    p.add_argument("--tau", type=number(0), default=None, help="default: the cost's")
    p.add_argument("--shard-size", type=integer(2), default=16, help="sharding.max_size (min_size is half)")
    p.add_argument("--pack-shards", type=integer(1), default=4)
    p.add_argument("--max-batch", type=integer(1), default=None, help="images a denoiser call (default: the cost's)")
    p.add_argument("--methods", type=comma_list(str), default=list(METHODS))
    p.add_argument("--workdir", default=None, help="where the datasets go (default: a temporary folder)")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--prepare-gpu", default=None, metavar="FOLDER",
                   help="only write FOLDER/prompts_N.jsonl (--set's first --prompts) and their embedding cache "
                        "FOLDER/embeddings, for scripts/gpu_build.sh (a GPU machine without the MiniLM model)")
    args = p.parse_args(argv)
    for name in args.formats:
        if name not in IMAGE_FORMATS:
            p.error(f"--formats: {name!r} is not one of {', '.join(IMAGE_FORMATS)}")
    for name in args.methods:
        if name not in METHODS:
            p.error(f"--methods: {name!r} is not one of {', '.join(METHODS)}")
    if args.png_level > 9:
        p.error(f"--png-level must be 0-9, got {args.png_level}")
    if args.json is not None:
        args.json = check_output_file(args.json, "--json")
    return args


def first_prompts(path: str, n: int) -> list[str]:
    from hdiff.prompts import read_prompt_file

    return list(dict.fromkeys(read_prompt_file(path)))[:n]


def prepare_gpu(folder: Path, prompts: list[str]) -> None:
    """The corpus and its embedding cache that scripts/gpu_build.sh's build reads."""
    from hdiff.dataset.config import EmbeddingConfig
    from hdiff.dataset.embed_cache import embed_with_cache

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / f"prompts_{len(prompts)}.jsonl"
    corpus.write_text("".join(json.dumps({"prompt": text}) + "\n" for text in prompts))
    embed_with_cache(prompts, cache_dir=str(folder / "embeddings"), model_name=EmbeddingConfig().model)
    print(f"wrote {corpus} and its embeddings under {folder / 'embeddings'}")


def write_config(work: Path, model: Path, corpus: Path, args, image_format: str) -> Path:
    cost = COSTS[args.cost]
    config = {
        "name": f"bench-{args.cost}-{image_format}", "output": str(work / f"build-{image_format}"),
        "source": {"path_or_id": str(corpus)}, "embedding": {"cache_dir": str(work / "embeddings")},
        "sharding": {"min_size": max(1, args.shard_size // 2), "max_size": args.shard_size},
        "model": {"id": str(model), "device": "cpu"},
        "generation": {"steps": args.steps or cost.steps, "tau": cost.tau if args.tau is None else args.tau,
                       "max_batch": args.max_batch or MAX_BATCH[args.cost], "pack_shards": args.pack_shards},
        "output_format": {"image_format": image_format, "png_compress_level": args.png_level},
    }
    path = work / f"build-{image_format}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_build(config: Path, out: Path, packs=()) -> dict:
    """`hdiff build` in a fresh process, as the emulated model needs (python -m hdiff.bench.emulated_build build); with
    when each pack's last shard was on disk (its stats file's time), from launch."""
    log = out.parent / f"{out.name}.log"
    env = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # a loaded machine starts it slowly
           **os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    started, launched, first = time.perf_counter(), time.time(), None
    with open(log, "ab") as sink:
        process = subprocess.Popen([sys.executable, "-m", "hdiff.bench.emulated_build", "build", str(config)],
                                   stdout=sink, stderr=subprocess.STDOUT, env=env)
        while process.poll() is None:
            if first is None and out.is_dir() and layout.stats_shards(out):
                first = time.perf_counter() - started
            time.sleep(0.05)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise HdiffError(f"hdiff build exited with {process.returncode}; its log: {log}")
    packs_done = [max(layout.stats_path(out, shard.name).stat().st_mtime for shard in pack) - launched
                  for pack in packs]
    return {"wall_s": wall, "first_shard_s": first, "packs_done_s": packs_done}


def pipeline_parts(config_path: Path):
    """The build's own shards (prepare, without Prefect) in packs, the loaded adapter and its settings."""
    from hdiff.dataset.config import load_config
    from hdiff.dataset.pipeline import cached_adapter, prepare

    config = load_config(config_path)
    prepared = prepare(config, progress=False)
    size = config.generation.pack_shards
    packs = [prepared.shards[i:i + size] for i in range(0, len(prepared.shards), size)]
    adapter = cached_adapter(config.model, "cpu")
    return config, packs, adapter, config.generation_settings().for_model(adapter)


def jobs_of(config, shards):
    from hdiff.generate import ImageJob

    return [ImageJob.from_prompts(list(s.prompts), images_per_prompt=config.generation.images_per_prompt,
                                  base_seed=config.generation.seed) for s in shards]


def run_sampler(config, packs, adapter, settings) -> dict:
    """bench speed's path, pack by pack: sample and decode every image, write nothing."""
    from hdiff.generate import generate_packed

    started, images, packs_done = time.perf_counter(), 0, []
    with torch.inference_mode():
        for pack in packs:
            for generation in generate_packed(adapter, jobs_of(config, pack), settings):
                images += sum(1 for _ in generation.images())
            packs_done.append(time.perf_counter() - started)
    return {"wall_s": time.perf_counter() - started, "images": images, "packs_done_s": packs_done}



def stock_shards(config, packs, adapter, settings):
    """(shard, samples) of the stock loop, shard after shard: all-batch sampling, decoded (a generator)."""
    from hdiff.bench.speed import baseline_latents
    from hdiff.dataset.writer import Sample
    from hdiff.generate import encode_job, plan_job, records_for, to_uint8
    from hdiff.prompts import sample_key

    stock = settings.model_copy(update={"tau": 0.0})
    for shard, job in ((s, j) for pack in packs for s, j in zip(pack, jobs_of(config, pack))):
        cond = encode_job(adapter, job)
        with torch.inference_mode():
            latents = baseline_latents(adapter, job, cond, stock, lambda k, active: None)
            images = [to_uint8(image) for lo in range(0, len(latents), stock.max_batch)
                      for image in adapter.decode(latents[lo:lo + stock.max_batch])]
        records = records_for(adapter, job, plan_job(adapter, job, cond, stock), stock)
        yield shard, [Sample(sample_key(job.prompt_ids[i], job.copy_index[i]), images[i], job.prompts[i],
                             records[i].model_dump(mode="json")) for i in range(len(job))]


def run_stock(config, packs, adapter, settings, out: Path, overlapped: bool) -> dict:
    from hdiff.dataset.writer import Sample, write_shard

    encoding = config.output_format.encoding()
    options = dict(image_format=encoding.image_format, jpeg_quality=encoding.quality,
                   png_compress_level=encoding.png_level)
    started, images, pending = time.perf_counter(), 0, None
    encoders = concurrent.futures.ProcessPoolExecutor(usable_cores()) if overlapped else None
    writer = concurrent.futures.ThreadPoolExecutor(1) if overlapped else None

    def encoded_write(shard, samples):
        data = encoders.map(encode, [s.image for s in samples], itertools.repeat(encoding))
        write_shard(out, shard.name, [Sample(s.key, d, s.prompt, s.record) for s, d in zip(samples, data)],
                    **options)

    try:
        for shard, samples in stock_shards(config, packs, adapter, settings):
            images += len(samples)
            if not overlapped:
                write_shard(out, shard.name, samples, **options)
                continue
            if pending is not None:
                pending.result()  # one shard in flight: memory stays at two shards' images
            pending = writer.submit(encoded_write, shard, samples)
        if pending is not None:
            pending.result()
    finally:
        if overlapped:
            writer.shutdown()
            encoders.shutdown()
    return {"wall_s": time.perf_counter() - started, "images": images}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.prepare_gpu:
        prepare_gpu(Path(args.prepare_gpu), first_prompts(args.set, args.prompts))
        return 0
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hdiff-bench-build-"))
    work.mkdir(parents=True, exist_ok=True)
    model = write_model(work / "model", args.cost)
    prompts = first_prompts(args.set, args.prompts)
    corpus = work / "prompts.jsonl"
    corpus.write_text("".join(json.dumps({"prompt": text}) + "\n" for text in prompts))
    result = {"cost": args.cost, "table": vars(COSTS[args.cost]), "prompts": len(prompts), "set": args.set,
              "png_level": args.png_level, "shard_size": args.shard_size, "pack_shards": args.pack_shards,
              "workers": usable_cores(), "machine": machine_line(), "formats": {}}
    sampler = fixed = None
    for image_format in args.formats:
        config_path = write_config(work, model, corpus, args, image_format)
        config, packs, adapter, settings = pipeline_parts(config_path)
        runs: dict[str, dict] = {}
        if "build" in args.methods:
            runs["build"] = run_build(config_path, Path(config.output), packs)
            if fixed is None:
                fixed = run_build(config_path, Path(config.output))["wall_s"]  # nothing left to generate
            runs["build"]["fixed_s"] = fixed
        if "sampler" in args.methods:
            sampler = sampler or run_sampler(config, packs, adapter, settings)
            runs["sampler"] = sampler
        for method in ("stock_naive", "stock_overlapped"):
            if method in args.methods:
                runs[method] = run_stock(config, packs, adapter, settings, work / f"{method}-{image_format}",
                                         overlapped=method == "stock_overlapped")
        images = sum(len(s.prompts) for pack in packs for s in pack) * config.generation.images_per_prompt
        for run in runs.values():
            run["images_per_s"] = images / run["wall_s"]
        ratios = {}
        if "build" in runs:
            build = runs["build"]
            for other in ("sampler", "stock_naive", "stock_overlapped"):
                if other in runs:
                    ratios[f"build_over_{other}"] = runs[other]["wall_s"] / build["wall_s"]
            if "sampler" in runs:
                ratios["build_over_sampler_without_fixed"] = runs["sampler"]["wall_s"] / max(build["wall_s"] - fixed,
                                                                                               1e-9)
        result["formats"][image_format] = {"images": images, "runs": runs, **ratios}
        print(f"{image_format}: " + ", ".join(f"{name} {run['wall_s']:.1f} s" for name, run in runs.items()),
              file=sys.stderr)
    print_report(result)
    if args.json is not None:
        write_atomically(args.json, json.dumps(result, indent=1).encode())
    return 0


def print_report(result: dict) -> None:
    cost = COSTS[result["cost"]]
    print(f"hdiff bench build — emulated {result['cost']} (one H200's times: forward {cost.forward_ms} ms by rows, "
          f"decode {cost.decode_ms} ms an image), {result['prompts']} prompts, shards of ≤ {result['shard_size']}, "
          f"packs of {result['pack_shards']}, png level {result['png_level']}, {result['workers']} encoder processes")
    rows = []
    for image_format, figures in result["formats"].items():
        runs = figures["runs"]
        cell = lambda name: f"{runs[name]['images_per_s']:.2f}" if name in runs else "—"  # noqa: E731
        ratio = lambda name: f"{figures[name]:.2f}" if name in figures else "—"  # noqa: E731
        build = runs.get("build", {})
        rows.append([image_format, cell("build"), cell("sampler"), cell("stock_naive"), cell("stock_overlapped"),
                     ratio("build_over_sampler"), ratio("build_over_sampler_without_fixed"),
                     ratio("build_over_stock_naive"), ratio("build_over_stock_overlapped"),
                     f"{build['first_shard_s']:.1f}" if build.get("first_shard_s") else "—",
                     f"{build['fixed_s']:.1f}" if "fixed_s" in build else "—"])
    print(markdown_table(["format", "build img/s", "sampler img/s", "stock naive img/s", "stock overlapped img/s",
                          "build / sampler", "build / sampler without fixed cost", "build / stock naive",
                          "build / stock overlapped", "first shard s", "fixed cost s"], rows))
    print("fixed cost: a re-run with nothing to generate (interpreter, imports, the temporary Prefect server, prepare, "
          "commit), taken off the build's wall for the ratio without it")
    print(machine_line())


if __name__ == "__main__":
    sys.exit(run_as_command(main))
