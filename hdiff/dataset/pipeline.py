"""The dataset build's stages as plain functions; flows/build_dataset.py wraps each in a Prefect task.

    read → ingest → plan against the dataset → embed new prompts (cached) → shard them → generate each shard
    (hierarchical sampling) → write, beside the next pack's sampling (hdiff.dataset.shard_writer) → commit (finalize)

The shard is the unit of work and of resumption: its name is its members (hdiff.dataset.layout.shard_name), it is
written under a temporary name and renamed, and its stats file (written last) marks it done. A re-run skips
planned shards whose tar and stats verify and redoes the rest; hdiff.dataset.update says what a run plans.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from hdiff.dataset import layout
from hdiff.dataset.config import BuildConfig, ModelConfig
from hdiff.dataset.embed_cache import embed_into_file, embed_with_cache
from hdiff.dataset.ingest import IngestReport, SpilledToDisk, ingest_into
from hdiff.dataset.scoring_stage import carried_drops, shard_scoring
from hdiff.dataset.manifest import Corpus
from hdiff.dataset.sources import check_inputs
from hdiff.dataset.shard import semantic_shards
from hdiff.dataset.update import (Committed, Rewrite, RunPlan, ShardJob, corpus_fingerprint, new_prompts, plan_run,
                                  read_committed)
from hdiff.dataset.tars import tar_samples
from hdiff.dataset.shard_writer import ShardSink, WriterPool, writer_pool
from hdiff.dataset.writer import Sample, ShardStats, read_stats, shard_is_complete, write_shard
from hdiff.dataset.ownership import check_output
from hdiff.devices import DevicePool, check_present, visible_devices
from hdiff.files import atomic_path
from hdiff.generate import ImageJob, check_negative_prompt, generate_packed
from hdiff.models.base import ADAPTERS
from hdiff.models.loading import adapter_name_for, check_steps
from hdiff.models.schedulers import count_evaluations
from hdiff.prompts import sample_key


@dataclass
class Prepared:
    """The dataset as committed, this run's plan against it, and what ingest kept and dropped."""

    committed: Committed
    plan: RunPlan
    ingest_report: IngestReport
    source_revision: str | None = None  # the commit sha the corpus resolved to, or a hash of local files

    @property
    def shards(self) -> list[ShardJob]:
        return self.plan.shards


def preflight(config: BuildConfig) -> None:
    """What can be checked before any work: the output folder can be written, a local build's devices are on this
    machine, the model can be found, a local corpus exists. Raises HdiffError with one line."""
    check_output(config.output, config.source.path_or_id)
    if config.runner.kind == "local":  # a Ray cluster's devices are its workers'
        for device in visible_devices(config.model.device):
            check_present(device)
    check_inputs(config)
    check_steps(config.model.id, config.generation.steps, "generation.steps")
    if config.generation.negative_prompt:
        check_negative_prompt(ADAPTERS[adapter_name_for(config.model.id)], config.generation.negative_prompt)
    for spec in config.scores:  # offline, each scorer's model must be cached
        spec.require_cached()


def prepare(config: BuildConfig, progress: bool = True) -> Prepared:
    """Read and clean the corpus, and plan the run against the dataset already in the output folder: only prompts
    not yet in it are embedded and partitioned into new shards.

    The kept prompts wait in a scratch SQLite file and the new prompts' embeddings in a scratch memory map (both
    in the system's temporary folder, TMPDIR), so memory grows with the new prompts' plan, not with the corpus.
    """
    committed = read_committed(config.output)
    corpus = config.source.open()
    embed = functools.partial(embed_with_cache, cache_dir=config.embedding.cache_dir,
                              model_name=config.embedding.model, batch_size=config.embedding.batch_size,
                              progress=progress)
    with tempfile.TemporaryDirectory(prefix="hdiff-prepare-") as scratch, \
            SpilledToDisk(Path(scratch) / "prompts.sqlite") as kept:
        report = ingest_into(kept, corpus.rows(), max_chars=config.ingest.max_chars,
                             long_policy=config.ingest.long_policy, near_dedupe=config.ingest.near_dedupe,
                             embed_fn=embed, limit=config.ingest.limit, sample_seed=config.ingest.sample_seed,
                             source=corpus.label)
        config.limits.check(report.kept, config.generation.images_per_prompt)  # before any embedding
        fresh = new_prompts(committed, (p for chunk in kept.chunks() for p in chunk))
        parts = []
        if fresh:
            embeddings = embed_into_file(embed, [p.text for p in fresh], Path(scratch) / "embeddings.npy")
            parts = semantic_shards(embeddings, [p.id for p in fresh], config.sharding.min_size,
                                    config.sharding.max_size)
            del embeddings  # the memory map, before its folder goes
        corpus_ids = list(kept.sorted_ids())  # read once: the fingerprint and the plan both need them
        planned = Corpus(source=corpus.label, revision=corpus.revision, prompts=report.kept,
                         fingerprint=corpus_fingerprint(corpus_ids, ordered=True))
        plan = plan_run(committed, corpus_ids, fresh, parts, copies=config.generation.images_per_prompt,
                        base_seed=config.generation.seed, prune=config.update.prune, corpus=planned)
    by_text = {p.text: p for p in fresh}
    plan.shards = [dataclasses.replace(job, sources=tuple(corpus.source_row(by_text[t].row, by_text[t].columns)
                                                          for t in job.prompts)) for job in plan.shards]
    return Prepared(committed, plan, report, corpus.revision)


_ADAPTER_LOCK = threading.Lock()
_DEVICE_POOLS: dict[tuple, DevicePool] = {}


def device_pool(model: ModelConfig, slots: int) -> DevicePool:
    """This process's pool of the devices `model.device` names, `slots` tasks per device, shared by its threads."""
    key = (tuple(visible_devices(model.device)), slots)
    with _ADAPTER_LOCK:
        return _DEVICE_POOLS.setdefault(key, DevicePool(list(key[0]), slots))


def cached_adapter(model: ModelConfig, device: str):
    """One loaded model per device and worker process, reused by every shard run there (threads wait for one load)."""
    with _ADAPTER_LOCK:
        return _load_adapter(model.id, model.prior, device, model.scheduler, model.dtype, model.allow_pickle,
                             model.channels_last, model.compile)


@functools.lru_cache(maxsize=16)
def _load_adapter(model_id: str, prior: str | None, device: str, scheduler: str | None, dtype: str,
                  allow_pickle: bool, channels_last: bool, compile: bool):
    from hdiff.models import load_adapter

    options = {"prior": prior} if prior else {}
    adapter = load_adapter(model_id, device=device, scheduler=scheduler, allow_pickle=allow_pickle,
                           dtype=None if dtype == "auto" else getattr(torch, dtype), **options)
    return adapter.accelerate(channels_last=channels_last, compile=compile)


@dataclass
class PackResult:
    """A pack's shards (stats, and whether this run wrote them) and its device time: at work (sampling, decoding),
    waiting for the CPU (idle before the pack took it, or blocked on the full writer queue), and scoring (apart from
    generation: the scorers run on the same device)."""

    shards: list[tuple[ShardStats, bool]]
    device_s: float = 0.0
    device_waited_s: float = 0.0
    scoring_s: float = 0.0


def generate_pack(config: BuildConfig, shards: list[ShardJob], progress_label: str | None = None) -> PackResult:
    """Generate a pack of shards sampled together (hdiff.generate.generate_packed) and write the incomplete ones.

    When any shard of the pack is missing, the whole pack is sampled again, so that every image is computed in the
    same batches as in an uninterrupted build; only the missing shards are written. The pack holds a device of this
    process's pool (`device_pool`) while it samples and decodes; its images are encoded and written by this
    process's writer pool (hdiff.dataset.shard_writer) while the next pack samples. Returns once every shard of the
    pack is on disk. `progress_label` shows a bar of the pack's scheduler evaluations.
    """
    if all(shard_is_complete(config.output, s.name) for s in shards):
        return PackResult([(read_stats(config.output, s.name), False) for s in shards])
    writers = writer_pool(config.runner.encode_workers, config.runner.write_queue_mib)
    with device_pool(config.model, config.runner.gpu_concurrency).claim() as held:
        started = time.perf_counter()
        sinks = _generate_pack_on(config, shards, held.device, progress_label, writers)
        device_s = time.perf_counter() - started
    # the device is free: the next pack samples while these shards are encoded and written
    results = [(sink.result(), True) if isinstance(sink, ShardSink) else sink for sink in sinks]
    blocked = sum(sink.waited_s for sink in sinks if isinstance(sink, ShardSink))  # on the full writer queue
    scoring = sum(stats.scoring_seconds or 0.0 for stats, written in results if written)
    return PackResult(results, device_s=max(0.0, device_s - blocked - scoring),
                      device_waited_s=held.idle_before_s + blocked, scoring_s=scoring)


def _generate_pack_on(config: BuildConfig, shards: list[ShardJob], device: str, progress_label: str | None,
                      writers: WriterPool) -> list[ShardSink | tuple[ShardStats, bool]]:
    """Sample the pack and decode its missing shards into the writer pool: a sink per shard written, the stats of
    those already complete."""
    adapter = cached_adapter(config.model, device)
    settings = config.generation_settings().for_model(adapter)
    jobs = [ImageJob.from_prompts(list(s.prompts), images_per_prompt=config.generation.images_per_prompt,
                                  base_seed=config.generation.seed) for s in shards]
    started = time.perf_counter()
    total = count_evaluations(adapter.scheduler, settings.steps)
    with torch.inference_mode(), tqdm(desc=progress_label, total=total, unit="eval", leave=False,
                                      disable=progress_label is None) as bar:
        generations = generate_packed(adapter, jobs, settings, on_evaluation=lambda k, active: bar.update(1))
        if adapter.device.type == "cuda":
            torch.cuda.synchronize(adapter.device)
    device_seconds = (time.perf_counter() - started) / len(shards)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    out: list[ShardSink | tuple[ShardStats, bool]] = []
    try:
        for shard, job, generation in zip(shards, jobs, generations):
            if shard_is_complete(config.output, shard.name):
                out.append((read_stats(config.output, shard.name), False))
                continue
            if shard.dendrogram:
                write_dendrogram(config, generation)  # before the stats file: a resumed build skips a finished shard
            scoring = shard_scoring(config, device)  # scores into the records, filtered images left out
            sink = writers.open_shard(config.output, shard.name, config.output_format.encoding(),
                                      unet_rows=None if config.filter else generation.unet_rows,  # filtered: the
                                      wall_before=device_seconds, device_seconds=device_seconds,  # written images'
                                      device=device, worker=worker,
                                      scored=scoring.stats if scoring is not None else None)
            out.append(sink)

            def samples(job=job, generation=generation, sources=dict(zip(shard.prompts, shard.sources))):
                for row, image in generation.images():  # decoded on the device, a chunk at a time
                    record = generation.records[row].model_dump(mode="json")
                    if sources:
                        record["source"] = sources[job.prompts[row]]
                    yield Sample(sample_key(job.prompt_ids[row], job.copy_index[row]), image, job.prompts[row], record)

            with torch.inference_mode():
                for sample in samples() if scoring is None else scoring(samples()):
                    sink.add(sample)
            sink.close()
    except BaseException:
        for sink in out:
            if isinstance(sink, ShardSink):
                sink.abort()  # a closed sink finishes its shard; an open one leaves nothing under a final name
        raise
    return out


def write_dendrogram(config: BuildConfig, generation) -> None:
    """OUT/dendrogram.png of the generation's tree, drawn under a partial name and renamed."""
    from hdiff.figures import save_dendrogram

    with atomic_path(layout.dendrogram_path(config.output)) as tmp:
        save_dendrogram(generation.plan, tmp, labels=generation.job.prompts)


def rewrite_shard(out_dir, rewrite: Rewrite) -> ShardStats | None:
    """Write a dataset shard again without the images `rewrite.drop` (the written ones' bytes copied, records
    re-pointed at the new shard; the filtered ones' entries carried over); the old one stays until the run commits.
    None when no image remains."""
    if rewrite.new is None:
        return None
    if shard_is_complete(out_dir, rewrite.new):  # written by a run that was killed before its commit
        return read_stats(out_dir, rewrite.new)
    old = read_stats(out_dir, rewrite.old)

    def samples():
        if not old.has_tar:  # every image of the old shard was filtered out
            return
        for key, files in tar_samples(layout.tar_path(out_dir, rewrite.old)):
            if key not in rewrite.drop:
                record = {**json.loads(files["json"]), "shard": rewrite.new}
                yield Sample(key, files[old.image_format], files["txt"].decode("utf-8"), record)

    images = old.samples + len(old.dropped or ())
    kept = (images - len(rewrite.drop)) / images
    carried = carried_drops(old, rewrite.drop, kept)
    return write_shard(out_dir, rewrite.new, samples(), image_format=old.image_format,
                       wall_seconds=old.wall_seconds * kept, device_seconds=old.device_seconds * kept,
                       scored=(lambda: carried) if carried is not None else None)


def describe_dry_run(config: BuildConfig, prepared: Prepared) -> str:
    """What a run of `config` would do, as `prepare` planned it: the prompts new, kept and removed, the shards, the
    images and the compute, in a few lines. Nothing is generated and no diffusion model is loaded."""
    plan, report, g = prepared.plan, prepared.ingest_report, config.generation
    new = sum(len(shard.prompts) for shard in plan.shards)
    sizes = sorted(len(shard.prompts) for shard in plan.shards)
    shard_sizes = f" of {sizes[0]}–{sizes[-1]} prompts" if sizes else ""
    if g.budget is not None:
        saving = f"generation.budget asks for {g.budget:.0%} of UNet rows saved"
    elif g.tau == 0:
        saving = "τ = 0: standard sampling, nothing saved"
    else:
        saving = ("the saving at τ is known once the model encodes the prompts; generation.budget fixes it in "
                  "advance")
    return "\n".join([
        f"dry run: {config.name} into {config.output} (nothing generated, no diffusion model loaded)",
        f"corpus: {report.read} read, {report.kept} kept ({report.summary()})",
        f"prompts: {new} new, {len(prepared.committed.prompt_ids)} already in the dataset, {plan.removed} to "
        f"remove, {plan.not_in_corpus} no longer in the corpus and kept",
        f"shards: {len(plan.shards)} to generate{shard_sizes}, {len(plan.rewrites)} to rewrite",
        f"images: {new * g.images_per_prompt} to generate ({g.images_per_prompt} a prompt); {saving}",
    ])
