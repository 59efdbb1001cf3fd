"""`hdiff pilot CONFIG`: what sharing costs on the user's own model and prompts, before a big build.

    corpus ─ the build's ingest, embedding and sharding ─ seeded whole shards (neighbours at the build's shard size)
      └─ generate (the build's adapter and packing): τ = 0 · each candidate budget · plain fewer steps at equal compute
           └─ score every image (the build's scorers) and its similarity to its τ = 0 image
                └─ paired changes against τ = 0 (same prompts, same seeds; 95% bootstrap intervals) → table,
                   recommendation (the largest saving whose drop stays within the tolerance), two figures

The sample is whole shards because sharing depends on the neighbours a prompt has: a random subset of the corpus
would be sparser than a build's shards and share less. Every run uses the same images' seeds, so a change is paired
image by image; its interval resamples the prompts (a percentile bootstrap over the paired differences).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hdiff.dataset.config import BuildConfig
from hdiff.dataset.recommendation import pilot_folder, write_recommendation
from hdiff.dataset.update import ShardJob
from hdiff.errors import HdiffError
from hdiff.files import atomic_path, write_atomically
from hdiff.generate import ImageJob, generate_packed
from hdiff.scoring.similarity import SIMILARITIES, clip_embedder, paired_similarity, pixel_embeddings

SIMILARITY = "similarity"  # the criterion name of the paired image similarity (100 × cosine to the τ = 0 image)
CONTACT_PROMPTS = 8
THUMBNAIL = 96
SDXL_ROWS_PER_IMAGE = 80  # SDXL at its defaults: 40 steps × 2 UNet rows (classifier-free guidance)
SDXL_SECONDS_PER_IMAGE = 6.0  # an outside figure (1024 px, fp16, an A100-class GPU), not measured by hdiff


@dataclass(frozen=True)
class PilotOptions:
    """What the pilot samples and tries; `budgets` or `taus` are the candidates (default budgets 0.2 … 0.8)."""

    prompts: int = 64
    budgets: tuple[float, ...] = ()
    taus: tuple[float, ...] = ()
    tolerance: float = 1.0
    similarity_tolerance: float | None = None  # the similarity criterion's own tolerance (default: `tolerance`)
    by: str | None = None  # the recommendation's criterion: a score's name or "similarity" (default: the first score)
    similarity: str | None = None  # "clip" or "pixels" (default: clip when a CLIP scorer is loaded, else pixels)
    seed: int = 0
    resamples: int = 2000
    fewer_steps: bool = True  # also plain sampling with fewer steps at each candidate's compute

    def candidates(self) -> list[dict[str, float]]:
        """Each candidate as generation settings: {"budget": b} or {"tau": t}."""
        if self.budgets and self.taus:
            raise HdiffError("give candidate budgets or candidate τ values, not both")
        if self.taus:
            return [{"tau": t} for t in self.taus]
        return [{"budget": b} for b in (self.budgets or (0.2, 0.4, 0.6, 0.8))]


@dataclass
class Run:
    """One way of generating the sample: its settings, cost, scores and similarity to the τ = 0 images."""

    label: str
    kind: str  # "reference", "hdiff" or "fewer steps"
    setting: dict[str, float]
    steps: int
    unet_rows: float
    standard_rows: float
    taus: list[float]
    generation_seconds: float
    scoring_seconds: float = 0.0
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N,), NaN where a scorer cannot judge
    thumbnails: list[np.ndarray] = field(default_factory=list)

    @property
    def saved(self) -> float:
        """The share of the reference's UNet rows this run did not spend."""
        return 1.0 - self.unet_rows / self.standard_rows


@dataclass(frozen=True)
class Change:
    """A paired mean change against τ = 0 and its 95% bootstrap interval, over the `n` images both could judge."""

    mean: float
    low: float
    high: float
    n: int

    def text(self) -> str:
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]" if self.n else "—"


def paired_change(candidate: np.ndarray, reference: np.ndarray, rng: np.random.Generator,
                  resamples: int = 2000) -> Change:
    """Mean of candidate − reference over the pairs both judged, with a 95% percentile bootstrap interval."""
    valid = ~(np.isnan(candidate) | np.isnan(reference))
    diff = (candidate - reference)[valid]
    if not len(diff):
        return Change(math.nan, math.nan, math.nan, 0)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)  # (resamples,)
    low, high = np.percentile(means, [2.5, 97.5])
    return Change(float(diff.mean()), float(low), float(high), int(len(diff)))


def sample_shards(config: BuildConfig, prompts: int, seed: int) -> list[ShardJob]:
    """Whole shards of the build's partition of the corpus (its ingest, embedding cache and sharding), drawn in a
    seeded order until they hold at least `prompts` prompts."""
    from hdiff.dataset.pipeline import prepare

    with tempfile.TemporaryDirectory(prefix="hdiff-pilot-") as empty:  # plan as a first build: every prompt is new
        shards = prepare(config.model_copy(update={"output": str(Path(empty) / "dataset")}), progress=False).shards
    if not shards:
        raise HdiffError(f"{config.source.path_or_id}: ingest kept no prompts to sample")
    chosen, total = [], 0
    for index in np.random.default_rng(seed).permutation(len(shards)):
        if total >= prompts:
            break
        chosen.append(shards[index])
        total += len(shards[index].prompts)
    return chosen


def generate_run(adapter, config: BuildConfig, jobs: list[ImageJob], setting: dict[str, float], steps: int,
                 label: str, kind: str) -> tuple[Run, list[np.ndarray]]:
    """The sample generated as the build generates it (packs of generation.pack_shards shards), with `setting`
    (tau or budget) at `steps`: the run and its uint8 images in sample order."""
    settings = config.generation_settings().model_copy(update={"tau": None, "budget": None, **setting,
                                                               "steps": steps}).for_model(adapter)
    pack = config.generation.pack_shards
    images, rows, standard, taus = [], 0.0, 0.0, []
    started = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(jobs), pack):
            for generation in generate_packed(adapter, jobs[lo:lo + pack], settings):
                images += [image for _, image in generation.images()]
                rows += generation.unet_rows
                standard += sum(r.standard_unet_rows for r in generation.records)
                taus.append(float(generation.plan.schedule.tau))
    run = Run(label, kind, setting, steps, rows, standard, sorted(set(taus)), time.perf_counter() - started)
    return run, images


def thumbnails(images: list[np.ndarray], count: int = CONTACT_PROMPTS) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.fromarray(image).resize((THUMBNAIL, THUMBNAIL), Image.NEAREST if image.shape[0] <= 64
                                                     else Image.BICUBIC)) for image in images[:count]]


def equal_compute_steps(steps: int, saved: float) -> int:
    """The fewest standard steps that cost at least what a run saving `saved` of `steps` steps spends per image."""
    return max(1, math.ceil(steps * (1.0 - saved) - 1e-9))


@dataclass
class PilotResult:
    runs: list[Run]
    changes: dict[str, dict[str, Change]]  # run label -> criterion -> change against τ = 0
    criteria: list[str]
    by: str
    tolerance: dict[str, float]
    recommended: dict[str, Run | None]  # criterion -> the run it recommends (None: no candidate within tolerance)
    prompts: list[str]
    shards: int
    scorer_ids: dict[str, dict]
    similarity: str


def run_pilot(config: BuildConfig, options: PilotOptions, *, adapter=None, scorers: dict | None = None,
              progress=print) -> PilotResult:
    """Sample, generate every variant, score, compare (see the module's docstring)."""
    from hdiff.dataset.pipeline import cached_adapter
    from hdiff.devices import visible_devices

    device = visible_devices(config.model.device)[0]
    scorers = scorers if scorers is not None else load_scorers(config, device)
    criteria = [name for name, s in scorers.items() if s.kind == "score"] + [SIMILARITY]
    by = options.by or criteria[0]
    if by not in criteria:
        raise HdiffError(f"--by {by!r} is not a computed score; choose one of {', '.join(criteria)}")
    similarity = options.similarity or ("clip" if any(hasattr(s, "image_embeddings") for s in scorers.values())
                                        else "pixels")
    if similarity not in SIMILARITIES:
        raise HdiffError(f"--similarity {similarity!r}: choose one of {', '.join(SIMILARITIES)}")
    embed = pixel_embeddings if similarity == "pixels" else clip_embedder(similarity_clip(scorers, device))
    shards = sample_shards(config, options.prompts, options.seed)
    adapter = adapter or cached_adapter(config.model, device)
    steps = config.generation_settings().for_model(adapter).steps
    jobs = [ImageJob.from_prompts(list(s.prompts), base_seed=config.generation.seed) for s in shards]
    prompts = [p for job in jobs for p in job.prompts]
    progress(f"pilot: {len(prompts)} prompts in {len(shards)} shard(s) of the build's partition, {steps} steps")

    def measured(run: Run, images: list[np.ndarray], reference: list[np.ndarray]) -> Run:
        started = time.perf_counter()
        for name, scorer in scorers.items():
            run.scores[name] = scorer(images, prompts)
        run.scores[SIMILARITY] = 100.0 * paired_similarity(embed, images, reference)
        run.scoring_seconds = time.perf_counter() - started
        run.thumbnails = thumbnails(images)
        progress(f"  {run.label}: {100 * run.saved:.1f}% of UNet rows saved, {run.generation_seconds:.1f} s "
                 f"generating, {run.scoring_seconds:.1f} s scoring")
        return run

    reference_run, reference = generate_run(adapter, config, jobs, {"tau": 0.0}, steps, "τ = 0", "reference")
    runs = [measured(reference_run, reference, reference)]
    fewer: dict[int, Run] = {}
    for setting in options.candidates():
        name, value = next(iter(setting.items()))
        run, images = generate_run(adapter, config, jobs, setting, steps, f"{name} {value:g}", "hdiff")
        runs.append(measured(run, images, reference))
        k = equal_compute_steps(steps, run.saved)
        if options.fewer_steps and k < steps and k not in fewer:
            plain, images = generate_run(adapter, config, jobs, {"tau": 0.0}, k, f"{k} steps", "fewer steps")
            plain.standard_rows = reference_run.standard_rows  # saved against the reference's steps
            fewer[k] = measured(plain, images, reference)
    runs += [fewer[k] for k in sorted(fewer, reverse=True)]

    rng = np.random.default_rng(options.seed)
    changes = {run.label: {c: paired_change(run.scores[c], reference_run.scores[c], rng, options.resamples)
                           for c in [*scorers, SIMILARITY]} for run in runs}
    tolerance = {c: options.tolerance for c in criteria}
    if options.similarity_tolerance is not None:
        tolerance[SIMILARITY] = options.similarity_tolerance
    recommended = {c: recommend([r for r in runs if r.kind == "hdiff"], changes, c, tolerance[c]) for c in criteria}
    scorer_ids = {name: s.identity() for name, s in scorers.items()}
    return PilotResult(runs, changes, criteria, by, tolerance, recommended, prompts, len(shards), scorer_ids,
                       similarity)


def recommend(candidates: list[Run], changes: dict, criterion: str, tolerance: float) -> Run | None:
    """The candidate saving the most UNet rows whose mean drop in `criterion` against τ = 0 is at most `tolerance`."""
    within = [r for r in candidates if changes[r.label][criterion].n and -changes[r.label][criterion].mean <= tolerance]
    return max(within, key=lambda r: r.saved, default=None)


def similarity_clip(scorers: dict, device: str):
    """A loaded scorer with CLIP image embeddings, else the default CLIP model (it must be cached when offline)."""
    for scorer in scorers.values():
        if hasattr(scorer, "image_embeddings"):
            return scorer
    from hdiff.scoring import load_scorer

    return load_scorer("clip", device=device)


def load_scorers(config: BuildConfig, device: str) -> dict:
    """The config's scorers (`scores:`), or the oracle for a shapes-world model, else CLIP score."""
    from hdiff.scoring import load_scorer
    from hdiff.shapes.built import has_oracle

    if config.scores:
        return {spec.name: spec.load(device) for spec in config.scores}
    name = "oracle" if has_oracle(config.model.id) else "clip"
    return {name: load_scorer(name, device=device)}


# ---------------------------------------------------------------------------------------------------- reporting


def snippet(result: PilotResult, criterion: str | None = None) -> str:
    """The recommendation as a build config snippet (YAML), its evidence in a comment."""
    criterion = criterion or result.by
    run = result.recommended[criterion]
    if run is None:
        return (f"generation:\n  tau: 0.0   # hdiff pilot: no candidate kept {criterion} within "
                f"{result.tolerance[criterion]:g} of τ = 0 on {len(result.prompts)} prompts\n")
    name, value = next(iter(run.setting.items()))
    change = result.changes[run.label][criterion]
    return (f"generation:\n  {name}: {value:g}   # hdiff pilot: {100 * run.saved:.1f}% of UNet rows saved, "
            f"{criterion} {change.text()} against τ = 0 on {len(result.prompts)} prompts (tolerance "
            f"{result.tolerance[criterion]:g})\n")


def table(result: PilotResult) -> str:
    columns = [*result.scorer_ids, SIMILARITY]
    headers = ["run", "τ", "steps", "UNet rows saved", *(f"{c} change [95% CI]" for c in columns),
               *(f"{c} mean" for c in columns), "generation s", "scoring s"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for run in result.runs:
        marks = [c for c, r in result.recommended.items() if r is run]
        label = run.label + (f" ← recommended by {', '.join(marks)}" if marks else "")
        cells = [label, ", ".join(f"{t:.3g}" for t in run.taus), str(run.steps), f"{100 * run.saved:.1f}%",
                 *(result.changes[run.label][c].text() if run.kind != "reference" else "—" for c in columns),
                 *(f"{np.nanmean(run.scores[c]):.2f}" if np.isfinite(run.scores[c]).any() else "—"
                   for c in columns), f"{run.generation_seconds:.1f}", f"{run.scoring_seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def equal_compute_lines(result: PilotResult) -> list[str]:
    """Each candidate against plain sampling with the fewest steps that cost at least as much, on the criterion."""
    fewer = {r.steps: r for r in result.runs if r.kind == "fewer steps"}
    steps = result.runs[0].steps
    lines = []
    for run in (r for r in result.runs if r.kind == "hdiff"):
        plain = fewer.get(equal_compute_steps(steps, run.saved))
        if plain is None:
            continue
        ours, theirs = (result.changes[r.label][result.by].mean for r in (run, plain))
        verdict = "hdiff loses less" if ours > theirs else "fewer steps lose less" if theirs > ours else "a tie"
        lines.append(f"at equal compute: {run.label} ({100 * run.saved:.1f}% saved) {result.by} {ours:+.2f}, "
                     f"plain {plain.steps} steps ({100 * plain.saved:.1f}% saved) {theirs:+.2f}: {verdict}")
    return lines


def cost_line(result: PilotResult) -> str:
    """The pilot's compute, in images of standard sampling and for an SDXL-size model."""
    per_image = result.runs[0].standard_rows / max(len(result.prompts), 1)
    images = sum(run.unet_rows for run in result.runs) / per_image
    hours = images * SDXL_SECONDS_PER_IMAGE / 3600
    return (f"cost: {sum(r.unet_rows for r in result.runs):,.0f} UNet rows, as many as {images:,.0f} images of "
            f"standard sampling; for an SDXL-size model (40 steps, guidance: {SDXL_ROWS_PER_IMAGE} UNet rows an "
            f"image) that is {images * SDXL_ROWS_PER_IMAGE:,.0f} rows, about {hours:.2f} GPU-hours at "
            f"{SDXL_SECONDS_PER_IMAGE:g} s an image (an outside figure for 1024 px fp16 on an A100-class GPU)")


def summary(result: PilotResult) -> dict:
    """pilot.json: the sample, the runs (without their images) and the recommendations."""
    def run_entry(run: Run) -> dict:
        return {"label": run.label, "kind": run.kind, "setting": run.setting, "steps": run.steps, "taus": run.taus,
                "saved": run.saved, "unet_rows": run.unet_rows, "generation_seconds": run.generation_seconds,
                "scoring_seconds": run.scoring_seconds,
                "means": {c: float(np.nanmean(v)) if np.isfinite(v).any() else None for c, v in run.scores.items()},
                "changes": {c: dataclasses.asdict(ch) for c, ch in result.changes[run.label].items()}}

    return {"prompts": len(result.prompts), "shards": result.shards, "scorers": result.scorer_ids,
            "similarity": result.similarity, "by": result.by, "tolerance": result.tolerance,
            "recommended": {c: (dict(r.setting) if r else {"tau": 0.0}) for c, r in result.recommended.items()},
            "runs": [run_entry(r) for r in result.runs]}


def write_report(result: PilotResult, config: BuildConfig, out: Path) -> None:
    """OUT/pilot.json, pilot.md (the table), recommendation.yaml, score_vs_saved.png, contact_sheet.png."""
    out.mkdir(parents=True, exist_ok=True)
    steps = result.runs[0].steps
    data = {**summary(result), "model": config.model.id, "steps": steps, "config": config.name}
    write_atomically(out / "pilot.json", (json.dumps(data, indent=1, default=float) + "\n").encode())
    write_atomically(out / "recommendation.yaml", snippet(result).encode())
    chosen = result.recommended[result.by]
    write_recommendation(out, config.model.id, steps, dict(chosen.setting) if chosen else {"tau": 0.0},
                         {"criterion": result.by, "tolerance": result.tolerance[result.by],
                          "prompts": len(result.prompts),
                          "saved": chosen.saved if chosen else 0.0,
                          "change": dataclasses.asdict(result.changes[chosen.label][result.by]) if chosen else None})
    notes = "\n".join(f"- {line}" for line in [*equal_compute_lines(result), cost_line(result)])
    markdown = f"{table(result)}\n\n{notes}\n\nRecommended:\n\n```yaml\n{snippet(result)}```\n"
    write_atomically(out / "pilot.md", markdown.encode())
    plot_changes(result, out / "score_vs_saved.png")
    contact_sheet(result, out / "contact_sheet.png")


def main(config: BuildConfig, options: PilotOptions, out: str | Path | None = None) -> PilotResult:
    """Run the pilot for a build config and write its report into `out` (default: beside the build's output)."""
    out = Path(out) if out is not None else pilot_folder(config.output)
    result = run_pilot(config, options)
    write_report(result, config, out)
    print(table(result))
    for line in [*equal_compute_lines(result), cost_line(result)]:
        print(line)
    print(f"recommended (written to {out / 'recommendation.yaml'}; `budget: pilot` in the config reads it):")
    print(snippet(result), end="")
    return result


def plot_changes(result: PilotResult, path: Path) -> None:
    """Each criterion's mean change against τ = 0 (95% intervals) over the UNet rows saved: hdiff's candidates and
    plain fewer-step sampling, the tolerance drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result.criteria), figsize=(5 * len(result.criteria), 4), squeeze=False)
    for ax, criterion in zip(axes[0], result.criteria):
        for kind, style in (("hdiff", "o-"), ("fewer steps", "s--")):
            runs = sorted([r for r in result.runs if r.kind in (kind, "reference")], key=lambda r: r.saved)
            changes = [result.changes[r.label][criterion] for r in runs]
            x = [100 * r.saved for r in runs]
            y = [c.mean for c in changes]
            err = [[c.mean - c.low for c in changes], [c.high - c.mean for c in changes]]
            ax.errorbar(x, y, yerr=err, fmt=style, capsize=3, label=kind if kind == "hdiff" else "standard, fewer steps")
        ax.axhline(-result.tolerance[criterion], color="tab:red", linestyle=":", label="tolerance")
        if (chosen := result.recommended[criterion]) is not None:
            ax.axvline(100 * chosen.saved, color="tab:green", alpha=0.4, label="recommended")
        ax.set_xlabel("UNet rows saved (%)")
        ax.set_ylabel(f"{criterion}: change against τ = 0")
        ax.set_title(f"{criterion} ({len(result.prompts)} prompts)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def contact_sheet(result: PilotResult, path: Path) -> None:
    """The first prompts' images: τ = 0 beside each candidate (rows: prompts; columns: runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in result.runs if r.kind in ("reference", "hdiff")]
    count = len(runs[0].thumbnails)
    fig, axes = plt.subplots(count, len(runs), figsize=(1.6 * len(runs) + 2.5, 1.6 * count), squeeze=False)
    for col, run in enumerate(runs):
        for row in range(count):
            ax = axes[row][col]
            ax.imshow(run.thumbnails[row])
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{run.label}\n{100 * run.saved:.0f}% saved", fontsize=8)
            if col == 0:
                ax.set_ylabel(textwrap.fill(result.prompts[row], 24, max_lines=3), fontsize=6, rotation=0,
                              ha="right", va="center")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
