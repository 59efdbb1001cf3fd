"""Prompts in, images and records out: conditioning → tree → plan → hierarchical sampling → decoding.

Seeds: image i of prompt p gets `hdiff.prompts.image_seed(p, i, base_seed)`, so an image never depends on the order
of the prompt list or on which other prompts share its batch. Explicit per-image seeds may be passed instead (tests
use them to compare with the stock pipelines).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from hdiff import hub
from hdiff.errors import HdiffError
from hdiff.models.base import Adapter, Conditioning
from hdiff.models.schedulers import count_evaluations
from hdiff.planning import Plan, Schedule, build_tree, join_trees, make_plan, plan_for_budget
from hdiff.prompts import image_seed, prompt_id
from hdiff.records import ClusterStep, ImageRecord
from hdiff.sampling import sample_plan
from hdiff.settings import GenerationSettings


@dataclass
class ImageJob:
    """The images to make: one row per image (a prompt repeated for several images per prompt)."""

    prompts: list[str]
    seeds: list[int]
    prompt_ids: list[str]
    copy_index: list[int]

    @classmethod
    def from_prompts(cls, prompts: list[str], *, images_per_prompt: int = 1, base_seed: int = 0,
                     seeds: list[int] | None = None) -> "ImageJob":
        if not prompts:
            raise HdiffError("the prompt list is empty")
        for i, text in enumerate(prompts):
            if not isinstance(text, str) or not text.strip():
                raise HdiffError(f"prompt {i + 1} is empty or whitespace only")
        if images_per_prompt < 1:
            raise HdiffError(f"images per prompt must be >= 1, got {images_per_prompt}")
        rows = [(text, c) for text in prompts for c in range(images_per_prompt)]
        ids = [prompt_id(text) for text, _ in rows]
        if seeds is None:
            seeds = [image_seed(pid, c, base_seed) for pid, (_, c) in zip(ids, rows)]
        if len(seeds) != len(rows):
            raise HdiffError(f"{len(seeds)} seeds for {len(rows)} images")
        return cls([t for t, _ in rows], [int(s) for s in seeds], ids, [c for _, c in rows])

    def __len__(self) -> int:
        return len(self.prompts)

    @classmethod
    def concat(cls, jobs: list["ImageJob"]) -> "ImageJob":
        return cls(*(sum((getattr(j, name) for j in jobs), []) for name in ("prompts", "seeds", "prompt_ids",
                                                                               "copy_index")))

    def sort_keys(self) -> list[str]:
        return [f"{pid}/{c:06d}/{s:020d}" for pid, c, s in zip(self.prompt_ids, self.copy_index, self.seeds)]


@dataclass
class Generation:
    """A planned and sampled job: the plan, a record per image, and the final latents to decode."""

    adapter: Adapter
    job: ImageJob
    plan: Plan
    settings: GenerationSettings
    latents: torch.Tensor  # (N, C, h, w), row i for job row i
    records: list[ImageRecord] = field(default_factory=list)

    def images(self, chunk: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(row, uint8 image (H, W, 3)), decoded `chunk` latents at a time."""
        chunk = chunk or self.settings.max_batch
        for lo in range(0, len(self.latents), chunk):
            decoded = self.adapter.decode(self.latents[lo:lo + chunk])  # (B, H, W, 3) in [0, 1]
            for offset, image in enumerate(decoded):
                yield lo + offset, to_uint8(image)

    @property
    def unet_rows(self) -> float:
        """UNet rows spent on this job's images (its share of a packed run)."""
        return float(sum(r.unet_rows for r in self.records))

    def float_images(self) -> np.ndarray:
        return torch.cat([self.adapter.decode(self.latents[lo:lo + 64])
                          for lo in range(0, len(self.latents), 64)]).numpy()


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.numpy() * 255).round().astype(np.uint8)


def encode_job(adapter: Adapter, job: ImageJob) -> Conditioning:
    """Conditioning rows for every image; a stochastic encoder (a prior) is seeded per image."""
    generators = [torch.Generator("cpu").manual_seed(s) for s in job.seeds]
    cond = adapter.encode(job.prompts, generators)
    if not np.isfinite(cond.features).all():
        bad = int(np.argmax(~np.isfinite(cond.features).all(axis=1)))
        raise HdiffError(f"the model's embedding of prompt {job.prompts[bad]!r} contains NaN or infinity")
    return cond


def plan_jobs(adapter: Adapter, jobs: list[ImageJob], conds: list[Conditioning],
              settings: GenerationSettings) -> Plan:
    """One plan over every job's own tree, joined into a forest (packing); one job is its tree alone."""
    settings = settings.for_model(adapter)
    tree = join_trees([build_tree(c.features, keys=j.sort_keys()) for j, c in zip(jobs, conds)])
    job = ImageJob.concat(jobs)
    groups = np.asarray(job.prompt_ids)[np.argsort(tree.leaf_of_row)]  # leaf id -> prompt id
    evaluations = count_evaluations(adapter.scheduler, settings.steps)
    guided = adapter.rows_per_cluster(settings.guidance_scale) == 2  # an unconditional row per cluster
    common = dict(guidance=guided, groups=groups, copy_max_shared=settings.copy_max_shared)
    if settings.budget is not None:
        return plan_for_budget(tree, settings.budget, evaluations, kind=settings.schedule, **common)
    return make_plan(tree, Schedule(settings.schedule, settings.tau), evaluations, **common)


def records_for(adapter: Adapter, job: ImageJob, plan: Plan, settings: GenerationSettings) -> list[ImageRecord]:
    records = []
    for row in range(len(job)):
        leaf = int(plan.tree.leaf_of_row[row])
        records.append(ImageRecord(
            prompt=job.prompts[row], prompt_id=job.prompt_ids[row], copy_index=job.copy_index[row],
            seed=job.seeds[row], model=hub.portable_name(adapter.model_id), **adapter.provenance, scheduler=adapter.scheduler_name,
            steps=settings.steps,
            evaluations=plan.num_evaluations, guidance_scale=settings.guidance_scale,
            negative_prompt=settings.negative_prompt, tau=plan.schedule.tau,
            schedule=plan.schedule.kind, height=settings.height, width=settings.width,
            noise_device=settings.noise_device, node_condition=settings.node_condition,
            cluster_path=[ClusterStep(node=n, size=s, from_step=k) for n, s, k in plan.leaf_path(leaf)],
            split_evaluation=int(plan.start[leaf]), shared_evaluations=plan.leaf_shared_evaluations(leaf),
            unet_rows=float(plan.leaf_unet_rows(leaf)),
            standard_unet_rows=plan.num_evaluations * plan.rows_per_cluster))
    return records


def generate(adapter: Adapter, job: ImageJob, settings: GenerationSettings,
             on_evaluation: Callable[[int, int], None] | None = None) -> Generation:
    """Plan and sample `job`; decode lazily with `Generation.images()`."""
    return generate_packed(adapter, [job], settings, on_evaluation)[0]


def generate_packed(adapter: Adapter, jobs: list[ImageJob], settings: GenerationSettings,
                    on_evaluation: Callable[[int, int], None] | None = None) -> list[Generation]:
    """Several jobs (shards) sampled together, each clustered in its own tree, their active clusters batched
    together at every evaluation so that the UNet's batches stay full while clusters are few."""
    settings = settings.for_model(adapter)
    check_negative_prompt(type(adapter), settings.negative_prompt)
    conds = [encode_job(adapter, job) for job in jobs]
    plan = plan_jobs(adapter, jobs, conds, settings)
    job = ImageJob.concat(jobs)
    latents = sample_plan(plan, adapter, Conditioning.concat(conds), np.asarray(job.seeds), settings,
                          on_evaluation=on_evaluation)
    records = records_for(adapter, job, plan, settings)
    out, lo = [], 0
    for part in jobs:
        hi = lo + len(part)
        out.append(Generation(adapter, part, plan, settings, latents[lo:hi], records[lo:hi]))
        lo = hi
    return out


def check_negative_prompt(adapter: type[Adapter], negative_prompt: str) -> None:
    """HdiffError (one line) for a negative prompt given to a family whose stock pipeline takes none."""
    if negative_prompt and not adapter.takes_negative_prompt:
        raise HdiffError(f"the {adapter.name} adapter takes no negative prompt (its stock pipeline has none, or hdiff "
                         "does not drive it); leave negative_prompt empty")


def plan_job(adapter: Adapter, job: ImageJob, cond: Conditioning, settings: GenerationSettings) -> Plan:
    return plan_jobs(adapter, [job], [cond], settings)
