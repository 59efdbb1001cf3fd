"""`hdiff bench speed`: wall-clock time of hdiff at several τ against standard batched sampling of the same prompts.

Baseline: the stock pipelines' denoising loop, written out as a plain loop over batches of `--max-batch` images
calling the same `adapter.predict` + `scheduler.step` (per-image noise generators, as the stock pipelines take a
generator list). hdiff: `encode_job` → `plan_job` → `sample_plan` → decode in chunks, each part timed.
UNet rows are counted by a forward hook on `adapter.denoiser`; the same hooks time the forward (with a CUDA
synchronize), and the sampler's per-evaluation callback splits the rest of sampling into its parts.

    hdiff bench speed                                   # CPU, embedded shapes model, 256 clustered prompts
    hdiff bench speed --arch flux --embeddings E.npz --prompts 256 --taus 1,2   # GPU, real-size denoiser + VAE
    hdiff bench speed --write-embeddings E.npz --from prompts.jsonl --n 256     # MiniLM, float16
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hdiff.bench.arch import ARCH_CHOICES
from hdiff.bench.common import check_output_file, comma_list, integer, number
from hdiff.devices import DEVICE_CHOICES, check_device, resolve_device
from hdiff.errors import CommandParser, run_as_command
from hdiff.files import write_atomically
from hdiff.generate import GenerationSettings, ImageJob, encode_job, plan_job
from hdiff.models.base import Adapter, denoiser_call_rows
from hdiff.prompts import read_prompt_file
from hdiff.records import NOISE_DEVICES
from hdiff.sampling import sample_plan
from hdiff.sampling.state import step_accepts_generator

OVERHEAD_TARGET = 0.05
GAP_KINDS = ("prepare", "glue", "step")  # before a step's first forward, between forwards, after the last one


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = CommandParser(prog="hdiff bench speed", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="hdiff/shapes", help="model id or folder (default: the embedded model)")
    p.add_argument("--arch", choices=ARCH_CHOICES, default=None,
                   help="a family's real-size denoiser and decoder with random weights, from its published config "
                        "(needs --embeddings or --set FILE)")
    p.add_argument("--tiny-arch", action="store_true", help="with --arch: the same blocks shrunk (CPU tests)")
    p.add_argument("--embeddings", default=None, help=".npz with 'prompts' and 'embeddings' (MiniLM, 384-d)")
    p.add_argument("--prompts", type=integer(1), default=256, help="number of prompts (default 256)")
    p.add_argument("--set", default="clustered", help="'clustered' (shapes world) or a .jsonl/.txt prompt file")
    p.add_argument("--taus", type=comma_list(number(0)), default=None,
                   help="comma-separated τ values (default 0.5, 1, 2 × the model's τ; 1, 2 with the arch)")
    p.add_argument("--steps", type=integer(1), default=None, help="scheduler steps (default: the model's)")
    p.add_argument("--guidance", type=number(0), default=None, help="guidance scale (default: the model's)")
    p.add_argument("--size", type=integer(8), default=None,
                   help="image side in pixels, a multiple of 8 (default: the model's)")
    p.add_argument("--max-batch", type=integer(1), default=64,
                   help="images (clusters) per UNet call; rows are 2× that")
    p.add_argument("--decode-chunk", type=integer(1), default=None,
                   help="latents per decoder call (default: max-batch, 16 with the arch)")
    p.add_argument("--device", type=check_device, default="auto", help=f"one of {', '.join(DEVICE_CHOICES)}")
    p.add_argument("--batch-multiples", type=comma_list(integer(1)), default=[1],
                   help="comma-separated: run hdiff with micro-batches padded to each multiple of clusters")
    p.add_argument("--probe-rows", type=comma_list(integer(1)), default=[],
                   help="comma-separated row counts: also time one denoiser call at each (e.g. 64,72,74,128)")
    p.add_argument("--noise-device", choices=NOISE_DEVICES, default="cpu",
                   help="where both methods draw their per-image (per-cluster) noise")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory for the UNet and decoder")
    p.add_argument("--decode-probe", type=comma_list(integer(1)), default=[], metavar="CHUNKS",
                   help="time the decoder at these chunk sizes (comma-separated), in both memory formats, and run "
                        "with the fastest (baseline and hdiff alike)")
    p.add_argument("--decode-probe-images", type=integer(1), default=64,
                   help="latents the decoder probe decodes at each chunk size (default 64; at least the largest chunk)")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet's forward (warm-up compiles)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="torch.backends.cudnn.benchmark (re-tunes for every new batch size hdiff meets)")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--repeat", action="store_true",
                   help="run each hdiff setting twice and report the second (kernels warm for every micro-batch size, "
                        "as in a build of many shards); the first pass is kept as first_pass")
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument("--write-embeddings", default=None, metavar="OUT.npz",
                   help="only write MiniLM embeddings (float16) of --from's first --n prompts, then exit")
    p.add_argument("--from", dest="source", default=None, help="prompt file for --write-embeddings")
    p.add_argument("--n", type=integer(1), default=256, help="prompts for --write-embeddings")
    args = p.parse_args(argv)
    if args.tiny_arch and not args.arch:
        p.error("--tiny-arch needs --arch")
    if args.write_embeddings and not args.source:
        p.error("--write-embeddings needs --from FILE")
    if args.arch and args.embeddings is None and args.set == "clustered":
        p.error("--arch needs --embeddings FILE.npz or --set FILE.jsonl")
    for flag in ("json", "write_embeddings"):
        if getattr(args, flag) is not None:
            setattr(args, flag, check_output_file(getattr(args, flag), f"--{flag.replace('_', '-')}"))
    return args


def requested_settings(args: argparse.Namespace) -> GenerationSettings:
    """The flags as generation settings, checked before any model loads; unset steps, guidance and size are the
    model's own (`for_model`), 32 px with --tiny-arch."""
    size = args.size or (32 if args.tiny_arch else None)
    return GenerationSettings.checked("flags", steps=args.steps, guidance_scale=args.guidance, height=size,
                                      width=size, max_batch=args.max_batch, noise_device=args.noise_device)


# --- prompts ------------------------------------------------------------------------------------------------------

def distinct(prompts: list[str]) -> list[str]:
    return list(dict.fromkeys(prompts))


def prompt_set(name: str, n: int, seed: int) -> tuple[list[str], str]:
    """n prompts and a description: the shapes world's clustered set, or the first n distinct lines of a file."""
    if name == "clustered":
        from hdiff.shapes.prompts import clustered_set

        return [text for text, _ in clustered_set(n, seed=seed)], f"shapes clustered_set({n}, seed={seed})"
    prompts = distinct(read_prompt_file(name))[:n]
    return prompts, f"{name} (first {len(prompts)} distinct)"


def write_embeddings(out: Path, source: str, n: int) -> None:
    """MiniLM embeddings of the first n distinct prompts of `source`, float16: what --arch reads."""
    from hdiff.embedding import embed_texts

    prompts = distinct(read_prompt_file(source))[:n]
    vectors = embed_texts(prompts).astype(np.float16)  # (n, 384)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, prompts=np.asarray(prompts), embeddings=vectors)
    write_atomically(out, buffer.getvalue())
    print(f"wrote {out}: {len(prompts)} prompts × {vectors.shape[1]} float16 ({out.stat().st_size} bytes)")


# --- instrumentation -----------------------------------------------------------------------------------------------

@dataclass
class Profile:
    """Time inside the denoiser's forward and between forwards during sampling, from hooks and the step callback."""

    sync: bool
    rows: int = 0
    forwards: int = 0
    unet_s: float = 0.0
    gaps: dict[str, float] = field(default_factory=lambda: dict.fromkeys(GAP_KINDS, 0.0))
    last: float = 0.0
    after: str = "prepare"  # what the next gap before a forward is called

    def now(self) -> float:
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self) -> None:
        self.last, self.after = self.now(), "prepare"

    def _gap(self, kind: str) -> float:
        now = self.now()
        self.gaps[kind] += now - self.last
        self.last = now
        return now

    def before_forward(self, module, args, kwargs) -> None:
        self.rows += denoiser_call_rows(args, kwargs)
        self._gap(self.after)

    def after_forward(self, module, args, output) -> None:
        now = self.now()
        self.unet_s += now - self.last
        self.forwards += 1
        self.last, self.after = now, "glue"

    def end_evaluation(self, k: int, active: int) -> None:
        self._gap("step")
        self.after = "prepare"


class Hooked:
    """Context manager: the denoiser's forward hooks feed a fresh Profile."""

    def __init__(self, adapter: Adapter, sync: bool):
        self.adapter, self.profile = adapter, Profile(sync=sync)

    def __enter__(self) -> Profile:
        net = self.adapter.denoiser
        self.handles = [net.register_forward_pre_hook(self.profile.before_forward, with_kwargs=True),
                        net.register_forward_hook(self.profile.after_forward)]
        return self.profile

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"kind": "torch.cuda.max_memory_allocated", "GiB": torch.cuda.max_memory_allocated() / 2**30}
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; process-wide, never decreases
    return {"kind": "peak RSS of the process so far", "GiB": kib / 2**20}


# --- the two ways of sampling -------------------------------------------------------------------------------------

def decode_all(adapter: Adapter, latents: torch.Tensor, chunk: int) -> float:
    """Decode every latent in chunks, keeping nothing but a checksum; returns the checksum (forces the copy)."""
    total = 0.0
    for lo in range(0, len(latents), chunk):
        images = adapter.decode(latents[lo:lo + chunk])  # (B, H, W, 3) on the CPU
        total += float(images[:, 0, 0, 0].sum())
    return total


def baseline_latents(adapter: Adapter, job: ImageJob, cond, settings: GenerationSettings,
                     on_evaluation) -> torch.Tensor:
    """Standard sampling in batches of `max_batch` images: the stock pipelines' loop (predict, then step)."""
    negative = {name: value.to(adapter.device) for name, value in adapter.negative().items()}
    shape = adapter.latent_shape(settings.height, settings.width)
    outputs = []
    for lo in range(0, len(job), settings.max_batch):
        seeds = job.seeds[lo:lo + settings.max_batch]
        noise_device = adapter.noise_generator_device(settings.noise_device == "device")
        generators = [torch.Generator(noise_device).manual_seed(s) for s in seeds]
        scheduler = copy.deepcopy(adapter.scheduler)
        adapter.set_timesteps(scheduler, settings.steps, settings.height, settings.width)
        extra = {"generator": generators} if step_accepts_generator(scheduler) else {}
        batch_cond = {name: value[lo:lo + settings.max_batch].to(adapter.device, adapter.dtype)
                      for name, value in cond.tensors.items()}
        latents = adapter.initial_latents(scheduler, (len(seeds), *shape), generators)
        for k, t in enumerate(scheduler.timesteps):
            output = adapter.predict(scheduler, latents, t, batch_cond, negative, settings.guidance_scale)
            latents = scheduler.step(output, t, latents, **extra, return_dict=False)[0]
            on_evaluation(k, len(seeds))
        outputs.append(latents)
    return torch.cat(outputs)


def timed_run(adapter: Adapter, job: ImageJob, settings: GenerationSettings, *, baseline: bool,
              decode_chunk: int) -> dict:
    """One timed generation (encode, plan, sample, decode) with its row count, profile and peak memory."""
    device = adapter.device
    sync = device.type == "cuda"
    reset_peak(device)
    with Hooked(adapter, sync) as profile:
        synchronize(device)
        t0 = time.perf_counter()
        cond = encode_job(adapter, job)
        synchronize(device)
        t1 = time.perf_counter()
        plan = None if baseline else plan_job(adapter, job, cond, settings)
        t2 = time.perf_counter()
        profile.start()
        with torch.inference_mode():
            if baseline:
                latents = baseline_latents(adapter, job, cond, settings, profile.end_evaluation)
            else:
                latents = sample_plan(plan, adapter, cond, np.asarray(job.seeds), settings,
                                      on_evaluation=profile.end_evaluation)
        synchronize(device)
        t3 = time.perf_counter()
    with torch.inference_mode():
        decode_all(adapter, latents, decode_chunk)
    synchronize(device)
    t4 = time.perf_counter()
    wall = t4 - t0
    parts = {"encode": t1 - t0, "plan": t2 - t1, "sample": t3 - t2, "decode": t4 - t3}
    outside = wall - profile.unet_s - parts["decode"]
    run = {
        "tau": None if baseline else plan.schedule.tau,
        "method": "baseline" if baseline else "hdiff",
        "wall_s": wall,
        "parts_s": parts,
        "images_per_s": len(job) / wall,
        "unet_rows": profile.rows,
        "unet_forwards": profile.forwards,
        "unet_s": profile.unet_s,
        "rows_per_s_wall": profile.rows / wall,
        "rows_per_s_unet": profile.rows / profile.unet_s if profile.unet_s else float("nan"),
        "rows_per_forward": profile.rows / max(profile.forwards, 1),
        "peak_memory": peak_memory(device),
        "overhead": {
            "outside_unet_and_decoder_s": outside,
            "fraction": outside / wall,
            "encode_s": parts["encode"],
            "plan_s": parts["plan"],
            "prepare_s": profile.gaps["prepare"],  # noise, parent gather, cluster conditioning means
            "glue_s": profile.gaps["glue"],  # between micro-batch forwards: guidance combine, slicing
            "step_s": profile.gaps["step"],  # last guidance combine, concatenation, scheduler.step
            "other_s": outside - parts["encode"] - parts["plan"] - sum(profile.gaps.values()),
        },
    }
    if plan is not None:
        run["batch_multiple"] = settings.batch_multiple
        run["plan_unet_rows"] = plan.unet_rows
        run["standard_unet_rows"] = plan.standard_unet_rows
        run["step_saving"] = plan.saved_fraction
    return run


def compare(run: dict, baseline: dict | None) -> None:
    """Adds wall saving against the baseline and the ratio wall saving / step saving."""
    if baseline is None or run["method"] == "baseline":
        return
    run["wall_saving"] = 1.0 - run["wall_s"] / baseline["wall_s"]
    run["sample_saving"] = 1.0 - run["parts_s"]["sample"] / baseline["parts_s"]["sample"]
    run["wall_over_step_saving"] = run["wall_saving"] / run["step_saving"] if run["step_saving"] else float("nan")


# --- set-up -------------------------------------------------------------------------------------------------------

def build_adapter(args, device: torch.device, prompts: list[str],
                  embeddings: dict[str, np.ndarray] | None) -> Adapter:
    """--model's adapter, or with --arch the random-weight arch on `embeddings` (MiniLM embeddings of `prompts`
    when --embeddings gave none)."""
    if not args.arch:
        from hdiff.models import load_adapter

        return load_adapter(args.model, device=str(device))
    if embeddings is None:
        from hdiff.embedding import embed_texts

        embeddings = dict(zip(prompts, embed_texts(prompts)))
    if args.arch == "kandinsky22":
        from hdiff.bench.kandinsky_arch import KandinskyArchAdapter

        return KandinskyArchAdapter.build(embeddings, device=str(device), tiny=args.tiny_arch)
    from hdiff.bench.arch import build_arch

    return build_arch(args.arch, embeddings, device=str(device), tiny=args.tiny_arch)


def warm_up(adapter: Adapter, settings: GenerationSettings, prompts: list[str], decode_chunk: int) -> None:
    """One small batch and one full batch through the UNet, one decoder chunk: kernels and allocator ready."""
    small = settings.model_copy(update={"steps": 1, "tau": 0.0, "budget": None})
    for n in sorted({2, min(settings.max_batch, len(prompts))}):
        job = ImageJob.from_prompts(prompts[:n], base_seed=12345)
        cond = encode_job(adapter, job)
        with torch.inference_mode():
            latents = baseline_latents(adapter, job, cond, small, lambda k, a: None)
            decode_all(adapter, latents[:decode_chunk], decode_chunk)
    synchronize(adapter.device)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def probe_forwards(adapter: Adapter, settings: GenerationSettings, prompts: list[str], sizes: list[int],
                   repeats: int = 3) -> list[dict]:
    """Time one guided denoiser call at each row count (2 rows a cluster with guidance): the best of `repeats`."""
    if not sizes:
        return []
    clusters = max(1, max(sizes) // adapter.rows_per_cluster(settings.guidance_scale))
    job = ImageJob.from_prompts((prompts * clusters)[:clusters], base_seed=7)
    cond = {name: value.to(adapter.device, adapter.dtype) for name, value in encode_job(adapter, job).tensors.items()}
    negative = {name: value.to(adapter.device) for name, value in adapter.negative().items()}
    scheduler = copy.deepcopy(adapter.scheduler)
    adapter.set_timesteps(scheduler, settings.steps, settings.height, settings.width)
    t = scheduler.timesteps[0]
    generator = torch.Generator("cpu").manual_seed(0)
    latents = torch.randn((clusters, *adapter.latent_shape(settings.height, settings.width)), generator=generator)
    latents = latents.to(adapter.device, adapter.dtype)
    probe = []
    for size in sizes:
        n = max(1, size // adapter.rows_per_cluster(settings.guidance_scale))
        chunk = {name: value[:n] for name, value in cond.items()}
        times = []
        with torch.inference_mode():
            for _ in range(repeats + 1):  # the first call tunes and is not counted
                synchronize(adapter.device)
                start = time.perf_counter()
                adapter.predict(scheduler, latents[:n], t, chunk, negative, settings.guidance_scale)
                synchronize(adapter.device)
                times.append(time.perf_counter() - start)
        best = min(times[1:])
        rows = n * adapter.rows_per_cluster(settings.guidance_scale)
        probe.append({"rows": rows, "ms": 1000 * best, "rows_per_s": rows / best})
    return probe


def probe_decoder(adapter: Adapter, settings: GenerationSettings, chunks: list[int], images: int) -> dict:
    """Time decoding `images` latents at each chunk size, in the decoder's current memory format and channels_last;
    leave the decoder in the fastest format. Returns the timings and the choice."""
    decoder = adapter.decoder

    def use_format(channels_last: bool) -> None:
        if decoder is not None:
            decoder.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    formats = [False, True] if decoder is not None else [False]
    generator = torch.Generator("cpu").manual_seed(0)
    latents = torch.randn((images, *adapter.latent_shape(settings.height, settings.width)), generator=generator)
    latents = latents.to(adapter.device, adapter.dtype)
    timings = []
    for channels_last in formats:
        use_format(channels_last)
        for chunk in chunks:
            with torch.inference_mode():
                decode_all(adapter, latents[:chunk], chunk)  # first call at this size tunes; not counted
                synchronize(adapter.device)
                start = time.perf_counter()
                decode_all(adapter, latents, chunk)
                synchronize(adapter.device)
            seconds = time.perf_counter() - start
            timings.append({"chunk": chunk, "channels_last": channels_last, "s": seconds,
                            "ms_per_image": 1000 * seconds / images})
    best = min(timings, key=lambda row: row["s"])
    use_format(best["channels_last"])
    return {"images": images, "timings": timings, "chunk": best["chunk"], "channels_last": best["channels_last"]}


def run_name(run: dict) -> str:
    if run["method"] == "baseline":
        return "baseline"
    multiple = run.get("batch_multiple", 1)
    return f"τ={run['tau']:g}" + (f" ×{multiple}" if multiple > 1 else "")


# --- report -------------------------------------------------------------------------------------------------------

def print_report(result: dict) -> None:
    runs = result["runs"]
    print(f"\nhdiff bench speed — {result['model']} on {result['device']}")
    print(f"{result['n_prompts']} prompts ({result['prompt_set']}), {result['steps']} steps, guidance "
          f"{result['guidance_scale']}, {result['height']}×{result['width']} px, max batch {result['max_batch']} "
          f"images, noise on {result['noise_device']}; baseline: {result['baseline_method']}")
    header = (f"{'run':>10} {'wall s':>8} {'encode':>7} {'plan':>6} {'sample':>8} {'decode':>7} {'img/s':>7} "
              f"{'rows':>7} {'rows/s':>7} {'UNet r/s':>8} {'r/fwd':>6} {'step sv':>7} {'wall sv':>7} "
              f"{'ratio':>6} {'peak GiB':>8}")
    print(header)
    print("-" * len(header))
    for run in runs:
        name = run_name(run)
        p = run["parts_s"]
        pct = lambda key: f"{100 * run[key]:6.1f}%" if key in run else f"{'':>7}"  # noqa: E731
        ratio = f"{run['wall_over_step_saving']:6.2f}" if "wall_over_step_saving" in run else f"{'':>6}"
        print(f"{name:>10} {run['wall_s']:8.2f} {p['encode']:7.2f} {p['plan']:6.2f} {p['sample']:8.2f} "
              f"{p['decode']:7.2f} {run['images_per_s']:7.2f} {run['unet_rows']:7d} {run['rows_per_s_wall']:7.1f} "
              f"{run['rows_per_s_unet']:8.1f} {run['rows_per_forward']:6.1f} {pct('step_saving')} "
              f"{pct('wall_saving')} {ratio} {run['peak_memory']['GiB']:8.2f}")
    print("\noverhead: time outside the UNet forward and the decoder, as a share of generation time "
          f"(target ≤ {100 * OVERHEAD_TARGET:.0f}%)")
    print(f"{'run':>10} {'outside':>8} {'share':>7} {'encode':>7} {'plan':>7} {'prepare':>8} {'glue':>7} "
          f"{'step':>7} {'other':>7}  ok")
    for run in runs:
        name = run_name(run)
        o = run["overhead"]
        print(f"{name:>10} {o['outside_unet_and_decoder_s']:8.3f} {100 * o['fraction']:6.2f}% {o['encode_s']:7.3f} "
              f"{o['plan_s']:7.3f} {o['prepare_s']:8.3f} {o['glue_s']:7.3f} {o['step_s']:7.3f} {o['other_s']:7.3f}"
              f"  {'yes' if o['fraction'] <= OVERHEAD_TARGET else 'NO'}")
    print("  prepare: initial noise, parent gather, cluster conditioning means (before a step's first forward);"
          " glue: between micro-batch forwards (guidance combine, slicing); step: last guidance combine,"
          " concatenation, scheduler.step with per-cluster noise; other: the rest (final reorder, hooks).")
    first = [(run_name(run), run["first_pass"]) for run in runs if "first_pass" in run]
    if first:
        print("\nfirst pass (cold kernels for new micro-batch sizes): " + ", ".join(
            f"{name} {p['wall_s']:.2f} s (wall / step {p.get('wall_over_step_saving', float('nan')):.2f})"
            for name, p in first))
    if result.get("forward_probe"):
        print("\nforward probe (one guided denoiser call, best of 3): "
              + ", ".join(f"{p['rows']} rows {p['ms']:.1f} ms ({p['rows_per_s']:.0f}/s)"
                          for p in result["forward_probe"]))
    if result.get("decode_probe"):
        probe = result["decode_probe"]
        print(f"\ndecode probe ({probe['images']} latents; ms per image): " + ", ".join(
            f"chunk {t['chunk']}{' NHWC' if t['channels_last'] else ''} {t['ms_per_image']:.1f}"
            for t in probe["timings"])
            + f"; runs used chunk {probe['chunk']}{', channels_last' if probe['channels_last'] else ''}")
    base = next((r for r in runs if r["method"] == "baseline"), None)
    if base is not None:
        print(f"\nbaseline UNet rows/s: {base['rows_per_s_unet']:.1f} inside the forward, "
              f"{base['rows_per_s_wall']:.1f} over the whole run, at {base['rows_per_forward']:.0f} rows a forward"
              " (for reference, one H200, Kandinsky 2.2 decoder arch fp16: 16 rows 290/s, 32 rows 314/s,"
              " 64 rows 351/s, 128 rows 357/s)")


# --- entry point --------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.write_embeddings:
        write_embeddings(args.write_embeddings, args.source, args.n)
        return 0
    requested = requested_settings(args)
    embeddings = None
    if args.arch and args.embeddings is not None:
        from hdiff.bench.kandinsky_arch import load_embeddings

        embeddings = load_embeddings(args.embeddings)
        prompts, set_name = list(embeddings)[:args.prompts], args.embeddings
    else:
        prompts, set_name = prompt_set(args.set, args.prompts, args.seed)
    device = resolve_device(args.device)
    if device.type == "cuda":  # this command's own process: kernels tuned for its batch sizes
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True

    t_load = time.perf_counter()
    adapter = build_adapter(args, device, prompts, embeddings)
    adapter.accelerate(channels_last=args.channels_last, compile=args.compile)
    load_s = time.perf_counter() - t_load
    taus = args.taus or [m * adapter.default_tau for m in ((1, 2) if args.arch else (0.5, 1, 2))]
    if len(prompts) < args.prompts:
        print(f"note: only {len(prompts)} prompts available", file=sys.stderr)
    base = requested.for_model(adapter)
    decode_chunk = args.decode_chunk or (16 if args.arch else args.max_batch)

    def settings(tau: float, batch_multiple: int = 1) -> GenerationSettings:
        return base.model_copy(update={"tau": tau, "batch_multiple": batch_multiple})

    job = ImageJob.from_prompts(prompts, base_seed=args.seed)
    t_warm = time.perf_counter()
    warm_up(adapter, settings(0.0), prompts, decode_chunk)
    warm_s = time.perf_counter() - t_warm
    print(f"model ready in {load_s:.1f} s, warm-up {warm_s:.1f} s; {len(job)} images, τ = {taus}", file=sys.stderr)
    decode_probe = None
    if args.decode_probe:
        images = max(args.decode_probe + [args.decode_probe_images])
        decode_probe = probe_decoder(adapter, settings(0.0), args.decode_probe, images=images)
        decode_chunk = decode_probe["chunk"]
        print(f"decoder: fastest at chunk {decode_chunk}, channels_last {decode_probe['channels_last']}",
              file=sys.stderr)

    runs = []
    if not args.skip_baseline:
        runs.append(timed_run(adapter, job, settings(0.0), baseline=True, decode_chunk=decode_chunk))
        print(f"baseline: {runs[-1]['wall_s']:.1f} s", file=sys.stderr)
    baseline = runs[0] if runs else None
    for multiple in args.batch_multiples:
        for tau in taus:
            cold = None
            if args.repeat:  # the first pass meets each micro-batch size for the first time; time the second
                cold = timed_run(adapter, job, settings(tau, multiple), baseline=False, decode_chunk=decode_chunk)
            run = timed_run(adapter, job, settings(tau, multiple), baseline=False, decode_chunk=decode_chunk)
            compare(run, baseline)
            if cold is not None:
                compare(cold, baseline)
                run["first_pass"] = {key: cold[key] for key in ("wall_s", "unet_s", "wall_over_step_saving")
                                     if key in cold}
            runs.append(run)
            print(f"{run_name(run)}: {run['wall_s']:.1f} s", file=sys.stderr)
    forward_probe = probe_forwards(adapter, settings(0.0), prompts, args.probe_rows)

    result = {
        "model": adapter.model_id, "device": describe_device(device), "dtype": str(adapter.dtype).replace("torch.", ""),
        "n_prompts": len(job), "prompt_set": set_name, "steps": base.steps, "guidance_scale": base.guidance_scale,
        "height": base.height, "width": base.width, "max_batch": args.max_batch, "decode_chunk": decode_chunk,
        "scheduler": adapter.scheduler_name, "noise_device": args.noise_device,
        "channels_last": args.channels_last, "compile": args.compile,
        "decoder_channels_last": decode_probe["channels_last"] if decode_probe else args.channels_last,
        "cudnn_benchmark": bool(args.cudnn_benchmark and device.type == "cuda"),
        "baseline_method": "plain batch loop of adapter.predict + scheduler.step (the stock pipelines' loop)",
        "arch": args.arch, "node_condition": base.node_condition,
        "decoder": (f"random-weight decoder, the real {args.arch} config" if args.arch and not args.tiny_arch
                    else "the adapter's decode"),
        "load_s": load_s, "warm_up_s": warm_s, "torch": torch.__version__, "runs": runs,
        "forward_probe": forward_probe, "decode_probe": decode_probe,
    }
    print_report(result)
    if args.json:
        write_atomically(args.json, json.dumps(result, indent=2).encode())
    return 0


if __name__ == "__main__":
    sys.exit(run_as_command(main))
