"""Train the shapes world's model: `python -m hdiff.shapes_training.train --out DIR [--minutes M | --steps S]`.

Stages: training pairs (train split only) → rendered images and prompt embeddings, held as tensors on the device →
v-prediction (or ε) training with embedding dropout (classifier-free guidance), AdamW, linear warmup then cosine
decay, and an EMA of the weights → a diffusers folder (EMA weights) → an evaluation of held-out one- and two-object
prompts by the oracle, which also picks the default guidance scale.

A time box (`--minutes`) is turned into a step count once, after a short timing probe that ends before the warmup
does, so the run equals the `--steps` run of the recorded count: `train_config` in `hdiff_shapes.json` reproduces
the weights (bit for bit on CPU; up to GPU non-determinism on CUDA).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from hdiff.embedding import embed_texts
from hdiff.errors import HdiffError, run_as_command
from hdiff.models.base import guided_batch
from hdiff.models.image_embeds import guided_with_learned_variance, image_embeds_forward
from hdiff.models.schedulers import check_scheduler, make_scheduler
from hdiff.shapes.model import (
    EMBED_DIM,
    IMAGE_SIZE,
    SENTENCE_MODEL,
    TINY_SPEC,
    UNetSpec,
    apply_whitening,
    build_unet,
    count_parameters,
    fit_whitening,
    save_shapes_model,
    spec_from_dict,
    training_scheduler,
)
from hdiff.shapes.oracle import ATTRIBUTES, all_correct, score
from hdiff.shapes.prior import fit_prior_on_pairs
from hdiff.shapes.prompts import diverse_set, training_pairs
from hdiff.shapes.world import Scene, render, split_of

DEFAULT_STEPS = 40  # DDPM, as the paper samples Kandinsky 2.2
DEFAULT_SCHEDULER = check_scheduler("ddpm")  # deterministic solvers left visible noise on the 2-minute model
DEFAULT_GUIDANCE = 4.0  # used until an evaluation picks one
GUIDANCE_CANDIDATES = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
SELECT_SEED, REPORT_SEED, TWO_OBJECT_SEED = 1001, 1002, 1003
PROBE_START, PROBE_STEPS = 10, 40  # timing probe for --minutes (steps 10–40); must end before the warmup does
Device = Literal["auto", "cpu", "cuda"]  # --device
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the weights; recorded in hdiff_shapes.json as `train_config`."""

    seed: int = 0
    steps: int = 2000
    batch_size: int = 64
    lr: float = 6e-4
    warmup_steps: int = 250
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    cond_dropout: float = 0.1
    beta_schedule: str = "squaredcos_cap_v2"
    num_train_timesteps: int = 1000
    prediction_type: str = "v_prediction"  # or "epsilon" (configs recorded before this field: epsilon)
    pairs_limit: int | None = None  # train on a seeded subset of the pairs (tests, CPU sanity runs)
    spec: UNetSpec = UNetSpec()

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise HdiffError("steps and batch_size must be positive")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise HdiffError("cond_dropout must be in [0, 1)")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise HdiffError("warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
        if self.prediction_type not in PREDICTION_TYPES:
            raise HdiffError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        values = dict(values)
        values.setdefault("prediction_type", "epsilon")  # recorded before the field existed
        values["spec"] = spec_from_dict(values.get("spec", {}))
        return cls(**values)


# ---------------------------------------------------------------------------------------------------- data


def training_prompts(seed: int, pairs_limit: int | None = None) -> list[tuple[str, Scene]]:
    """The world's training pairs (train split only), optionally a seeded subset of `pairs_limit`."""
    pairs = list(training_pairs(seed=seed))
    leaked = [prompt for prompt, scene in pairs if split_of(scene) != "train"]
    if leaked:
        raise HdiffError(f"{len(leaked)} training pairs are held-out combinations, e.g. {leaked[0]!r}")
    if pairs_limit is not None and pairs_limit < len(pairs):
        order = np.random.default_rng(seed).permutation(len(pairs))[:pairs_limit]
        pairs = [pairs[i] for i in sorted(order)]
    return pairs


def evaluation_sets(n: int) -> dict[str, list[tuple[str, Scene]]]:
    """Held-out prompts (the benchmark's diverse sets): one set picks the guidance scale, another reports, and
    two-object prompts are reported beside."""
    return {
        "select": diverse_set(n, SELECT_SEED, "heldout"),
        "one_object": diverse_set(n, REPORT_SEED, "heldout"),
        "two_object": diverse_set(max(n // 2, 1), TWO_OBJECT_SEED, "heldout", n_objects=2),
    }


def render_images(scenes: list[Scene]) -> torch.Tensor:
    """(N, 3, 32, 32) uint8 renders."""
    stacked = np.stack([render(scene) for scene in scenes])  # (N, H, W, 3)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def embeddings_for(prompts: list[str], embeddings_file: str | Path | None) -> torch.Tensor:
    """(N, 384) float32 prompt embeddings: looked up in a precomputed .npz, else computed with MiniLM."""
    if embeddings_file is None:
        return torch.from_numpy(embed_texts(prompts, SENTENCE_MODEL))
    with np.load(embeddings_file, allow_pickle=False) as data:
        table = dict(zip(data["prompts"].tolist(), data["embeddings"]))
    missing = [p for p in prompts if p not in table]
    if missing:
        raise HdiffError(f"{len(missing)} prompts are not in {embeddings_file}, e.g. {missing[0]!r}; rewrite it "
                         "with `python -m hdiff.shapes_training.embed_prompts` at the same --seed")
    vectors = np.stack([table[p] for p in prompts]).astype(np.float32)
    if vectors.shape[1] != EMBED_DIM:
        raise HdiffError(f"embeddings in {embeddings_file} have {vectors.shape[1]} dimensions, not {EMBED_DIM}")
    return torch.from_numpy(vectors)


# ---------------------------------------------------------------------------------------------------- training


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.lr · min_lr_ratio at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay with a short warmup, so the average is not dominated by the random initial weights."""
    return min(decay, (1 + step) / (10 + step))


def resolve_device(device: Device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise HdiffError("--device cuda, but torch sees no CUDA device")
    return torch.device(device)


@dataclass
class TrainResult:
    unet: torch.nn.Module  # with the EMA weights loaded
    steps_done: int
    seconds: float
    final_loss: float
    config: TrainConfig


def train(cfg: TrainConfig, images: torch.Tensor, embeds: torch.Tensor, device: torch.device, *,
          minutes: float | None = None, log_every: int = 100, log=print) -> TrainResult:
    """Train on (N, 3, 32, 32) uint8 images and (N, 384) embeddings; `minutes` sets cfg.steps after a probe.

    The initial weights come from cfg.seed on a forked RNG and CUDA's math flags are restored after: the caller's
    process is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        unet = build_unet(cfg.spec).to(device).train()
    with fast_cuda_math(device):
        return training_loop(cfg, unet, images, embeds, device, minutes=minutes, log_every=log_every, log=log)


@contextlib.contextmanager
def fast_cuda_math(device: torch.device):
    """TF32 matmuls and cuDNN autotuning on CUDA for the block, then the process's own settings again."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


def training_loop(cfg: TrainConfig, unet, images: torch.Tensor, embeds: torch.Tensor, device: torch.device, *,
                  minutes: float | None, log_every: int, log) -> TrainResult:
    """The training loop from the initial weights `unet`.

    Legend: x0 clean image in [-1, 1]; ε noise; t timestep; ᾱ_t cumulative signal fraction;
    x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε (DDPM, Ho et al. 2020, eq. 4); the loss is ‖ε − ε_θ(x_t, t, c)‖² (eq. 14), or with
    v-prediction ‖v − v_θ‖², v = √ᾱ_t·ε − √(1−ᾱ_t)·x0 (Salimans & Ho 2022). With ε the first sampling step's
    estimate of x0 = (x_t − √(1−ᾱ)·ε_θ)/√ᾱ multiplies ε_θ's error by 1/√ᾱ ≈ 27 at t = 975, where the image's
    flat colours are decided; v-prediction has no such factor.
    """
    params = [p for p in unet.parameters() if p.requires_grad]
    ema = [p.detach().clone().float() for p in params]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999),
                                  **({"fused": True} if device.type == "cuda" else {}))
    alpha_bar = training_scheduler(cfg.beta_schedule, cfg.num_train_timesteps).alphas_cumprod.to(device)  # (T,)
    images = images.to(device)  # (N, 3, H, W) uint8
    embeds = embeds.to(device=device, dtype=torch.float32)  # (N, D)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    n, batch = images.shape[0], cfg.batch_size
    start = time.perf_counter()
    window_start, window_loss, loss = start, torch.zeros((), device=device), torch.zeros((), device=device)
    step, probe_start = 0, start
    while step < cfg.steps:
        if minutes is not None and step <= PROBE_STEPS:
            if step in (PROBE_START, PROBE_STEPS):
                _synchronize(device)
            if step == PROBE_START:
                probe_start = time.perf_counter()
            elif step == PROBE_STEPS:
                cfg = _steps_for_time_box(cfg, start, probe_start, minutes, log)
            elif step > 0 and time.perf_counter() - start >= minutes * 60:  # too slow to finish the probe
                cfg = dataclasses.replace(cfg, steps=step)
                break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)

        # 1. a batch: clean images, embeddings with classifier-free dropout to zeros
        index = torch.randint(n, (batch,), generator=generator, device=device)  # (B,)
        x0 = images[index].float() / 127.5 - 1.0  # (B, 3, H, W)
        keep = torch.rand(batch, generator=generator, device=device) >= cfg.cond_dropout  # (B,)
        cond = embeds[index] * keep[:, None]  # (B, D)
        # 2. forward diffusion
        noise = torch.randn(x0.shape, generator=generator, device=device)  # ε, (B, 3, H, W)
        t = torch.randint(cfg.num_train_timesteps, (batch,), generator=generator, device=device)  # (B,)
        a = alpha_bar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        # 3. ε- or v-prediction loss, update, EMA
        target = training_target(x0, noise, a, cfg.prediction_type)
        with autocast:
            out = unet(x_t, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": cond}).sample
        loss = F.mse_loss(out.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1.0 - ema_decay_at(step, cfg.ema_decay))
        window_loss += loss.detach()
        step += 1

        if step % log_every == 0 or step == cfg.steps:
            now = time.perf_counter()
            steps_in_window = (step - 1) % log_every + 1
            log(f"step {step}/{cfg.steps}  loss {window_loss.item() / steps_in_window:.4f}  "
                f"lr {learning_rate(step - 1, cfg):.2e}  {steps_in_window / (now - window_start):.2f} steps/s")
            window_start, window_loss = now, torch.zeros((), device=device)

    seconds = time.perf_counter() - start
    with torch.no_grad():
        for p, averaged in zip(params, ema):
            p.copy_(averaged.to(p.dtype))
    return TrainResult(unet.eval(), step, seconds, float(loss.item()), cfg)


def training_target(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str):
    """What the UNet learns to output: ε, or v = √ᾱ·ε − √(1−ᾱ)·x0. `alpha_bar` broadcasts against x0."""
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    return noise


def _steps_for_time_box(cfg: TrainConfig, start: float, probe_start: float, minutes: float, log) -> TrainConfig:
    """The step count that fills `minutes` from `start`, at the rate of the probe (steps PROBE_START–PROBE_STEPS)."""
    now = time.perf_counter()
    rate = (PROBE_STEPS - PROBE_START) / (now - probe_start)
    steps = max(PROBE_STEPS + 1, PROBE_STEPS + int((minutes * 60 - (now - start)) * rate))
    log(f"time box {minutes} min at {rate:.2f} steps/s (steps {PROBE_START}–{PROBE_STEPS}) → {steps} steps")
    return dataclasses.replace(cfg, steps=steps)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------------- evaluation


def accuracy(images: np.ndarray, scenes: list[Scene]) -> dict[str, float]:
    """Oracle accuracy: `all` (every attribute right) and each attribute's fraction right."""
    results = [score(image, scene) for image, scene in zip(images, scenes)]
    figures = {"all": float(np.mean([all_correct(r) for r in results]))}
    figures.update({a: float(np.mean([r[a] for r in results])) for a in ATTRIBUTES})
    return figures


@torch.no_grad()
def sample_images(unet, scheduler, embeds: torch.Tensor, generators: list[torch.Generator], *, steps: int,
                  guidance_scale: float) -> np.ndarray:
    """Standard classifier-free-guided sampling: (B, 384) conditioning vectors → (B, 32, 32, 3) uint8.

    Each step is the shapes adapter's guided evaluation (hdiff.models.image_embeds: unconditional rows first, the
    unconditional embedding zeros); image i's starting noise and step noise come from generators[i].
    """
    device, dtype = unet.device, unet.dtype
    embeds = embeds.to(device=device, dtype=dtype)  # (B, D)
    negative = torch.zeros_like(embeds[:1])  # (1, D)
    shape = (len(embeds), 3, IMAGE_SIZE, IMAGE_SIZE)
    x = randn_tensor(shape, generator=generators, device=device) * scheduler.init_noise_sigma  # (B, 3, H, W)
    scheduler.set_timesteps(steps, device=device)
    guided = guidance_scale > 1.0  # as ShapesAdapter.rows_per_cluster
    for t in scheduler.timesteps:
        x_in, rows = guided_batch(x.to(dtype), {"image_embeds": embeds}, {"image_embeds": negative}, guided)
        output = image_embeds_forward(unet, scheduler.scale_model_input(x_in, t), t, rows["image_embeds"])
        out = guided_with_learned_variance(output, scheduler, guided, guidance_scale, channels=3)  # (B, 3, H, W)
        x = scheduler.step(out.float(), t, x, generator=generators).prev_sample
    images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (B, 3, H, W)
    return images.permute(0, 2, 3, 1).cpu().numpy()


def generate(unet, embeds: torch.Tensor, *, steps: int, guidance_scale: float, scheduler_config: dict,
             seed: int, max_batch: int = 256) -> np.ndarray:
    """(N, 32, 32, 3) uint8 images with the default sampler; image i's noise comes from its own generator."""
    chunks = []
    for lo in range(0, len(embeds), max_batch):
        rows = range(lo, min(lo + max_batch, len(embeds)))
        chunks.append(sample_images(unet, make_scheduler(DEFAULT_SCHEDULER, scheduler_config), embeds[lo:rows.stop],
                                    [torch.Generator().manual_seed(seed + i) for i in rows], steps=steps,
                                    guidance_scale=guidance_scale))
    return np.concatenate(chunks)


def evaluate(unet, sets: dict[str, tuple[list, torch.Tensor]], scheduler_config: dict, *, steps: int = DEFAULT_STEPS,
             candidates=GUIDANCE_CANDIDATES, log=print) -> dict:
    """Pick the guidance scale on the `select` set, then report held-out one- and two-object accuracy at it."""
    def measure(name: str, scale: float) -> dict[str, float]:
        scenes, embeds = sets[name]
        images = generate(unet, embeds, steps=steps, guidance_scale=scale, scheduler_config=scheduler_config,
                          seed=10_000)
        return accuracy(images, scenes)

    sweep = {}
    for scale in candidates:
        sweep[scale] = measure("select", scale)
        log(f"guidance {scale}: held-out one-object all-attribute accuracy {sweep[scale]['all']:.3f} (selection set)")
    best = max(candidates, key=lambda s: (sweep[s]["all"], -abs(s - DEFAULT_GUIDANCE)))
    report = {"guidance_scale": best, "steps": steps, "scheduler": DEFAULT_SCHEDULER,
              "guidance_sweep_selection_set": {str(s): sweep[s]["all"] for s in candidates}}
    for name in ("one_object", "two_object"):
        figures = measure(name, best)
        report[name] = {"n": len(sets[name][0]), **figures}
        log(f"{name} held-out (n={len(sets[name][0])}, guidance {best}): all {figures['all']:.3f}  "
            + "  ".join(f"{k} {v:.3f}" for k, v in figures.items() if k != "all"))
    return report


# ---------------------------------------------------------------------------------------------------- entry point


def run(cfg: TrainConfig, out: Path, *, device: torch.device, minutes: float | None = None,
        embeddings_file: str | Path | None = None, eval_prompts_n: int = 200, log_every: int = 100,
        log=print) -> dict:
    """Data → training → saved folder → evaluation; returns the metadata written to hdiff_shapes.json."""
    t0 = time.perf_counter()
    pairs = training_prompts(cfg.seed, cfg.pairs_limit)
    prompts = [prompt for prompt, _ in pairs]
    sets = evaluation_sets(eval_prompts_n) if eval_prompts_n > 0 else {}
    all_prompts = prompts + [p for pairs_ in sets.values() for p, _ in pairs_]
    raw = embeddings_for(all_prompts, embeddings_file)  # (N_train + N_eval, D)
    whitening = fit_whitening(raw[:len(prompts)].numpy())  # fitted on training prompts only
    vectors = apply_whitening(whitening, raw)
    images = render_images([scene for _, scene in pairs])
    log(f"{len(pairs)} training pairs rendered and embedded in {time.perf_counter() - t0:.1f} s; "
        f"device {device}; {count_parameters(cfg.spec) / 1e6:.2f} M parameters")

    prior = fit_prior_on_pairs(vectors[:len(prompts)], pairs)  # what prompts are clustered by

    result = train(cfg, images, vectors[:len(prompts)], device, minutes=minutes, log_every=log_every, log=log)
    scheduler = training_scheduler(cfg.beta_schedule, cfg.num_train_timesteps, cfg.prediction_type)
    metadata = {
        "sentence_model": SENTENCE_MODEL,
        "unconditional_embedding": "zeros (after whitening)",
        "conditioning": "PCA-whitened sentence embedding (conditioning.safetensors)",
        "default_steps": DEFAULT_STEPS,
        "default_guidance_scale": DEFAULT_GUIDANCE,
        "default_scheduler": DEFAULT_SCHEDULER,
        "image_size": IMAGE_SIZE,
        "train_config": result.config.to_dict(),
        "training": {
            "steps": result.steps_done,
            "seconds": round(result.seconds, 1),
            "steps_per_second": round(result.steps_done / result.seconds, 3),
            "final_loss": result.final_loss,
            "training_pairs": len(pairs),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "versions": _versions(),
        },
    }
    unet = result.unet
    # saved before evaluating: nothing lost on failure
    save_shapes_model(out, unet, scheduler, metadata, whitening, prior)
    log(f"saved {out} after {result.steps_done} steps in {result.seconds:.0f} s")
    if sets:
        offset, eval_sets = len(prompts), {}
        for name, set_pairs in sets.items():
            eval_sets[name] = ([scene for _, scene in set_pairs], vectors[offset:offset + len(set_pairs)])
            offset += len(set_pairs)
        report = evaluate(unet, eval_sets, dict(scheduler.config), log=log)
        metadata["default_guidance_scale"] = report["guidance_scale"]
        metadata["evaluation"] = report
        save_shapes_model(out, unet, scheduler, metadata, whitening, prior)
    return metadata


def _versions() -> dict[str, str]:
    import diffusers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hdiff.shapes_training.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write (replaced if it exists)")
    parser.add_argument("--seed", type=int, help="default 0")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="time box: train about this long (the step count is recorded)")
    budget.add_argument("--steps", type=int, help="train exactly this many steps (default 2000)")
    parser.add_argument("--batch-size", type=int, help="default 512 on CUDA, 64 on CPU")
    parser.add_argument("--prediction-type", choices=PREDICTION_TYPES,
                        help=f"what the UNet predicts (default {TrainConfig.prediction_type})")
    parser.add_argument("--lr", type=float, help=f"peak learning rate (default {TrainConfig.lr})")
    parser.add_argument("--embeddings", type=Path, help=".npz from `python -m hdiff.shapes_training.embed_prompts`")
    parser.add_argument("--device", choices=get_args(Device), default="auto")
    parser.add_argument("--eval-prompts", type=int, default=200, help="held-out prompts per evaluation set; 0 skips")
    parser.add_argument("--pairs-limit", type=int, help="train on a seeded subset of the training pairs")
    parser.add_argument("--config", type=Path, help="hdiff_shapes.json (or train_config JSON) to reproduce")
    parser.add_argument("--tiny", action="store_true", help="a tiny UNet, for tests")
    parser.add_argument("--log-every", type=int, default=100)
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace, device: torch.device) -> TrainConfig:
    """The run's TrainConfig: a recorded config if given, else defaults, then the flags given explicitly."""
    if args.config is not None:
        recorded = json.loads(args.config.read_text())
        cfg = TrainConfig.from_dict(recorded.get("train_config", recorded))
    else:
        cfg = TrainConfig(batch_size=512 if device.type == "cuda" else 64)
    flags = {"seed": args.seed, "lr": args.lr, "steps": args.steps, "batch_size": args.batch_size,
             "pairs_limit": args.pairs_limit, "prediction_type": args.prediction_type}
    overrides = {name: value for name, value in flags.items() if value is not None}
    if args.tiny:
        overrides["spec"] = TINY_SPEC
    return dataclasses.replace(cfg, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        device = resolve_device(args.device)
        cfg = config_from_args(args, device)
        if args.minutes is not None and cfg.warmup_steps < PROBE_STEPS:
            raise HdiffError(f"--minutes needs warmup_steps >= {PROBE_STEPS} (the timing probe)")
        run(cfg, args.out, device=device, minutes=args.minutes, embeddings_file=args.embeddings,
            eval_prompts_n=args.eval_prompts, log_every=args.log_every,
            log=lambda message: print(message, flush=True))

    return run_as_command(body)


if __name__ == "__main__":
    sys.exit(main())
