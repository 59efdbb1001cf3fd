"""The dataset build's stages as plain functions; flows/build_dataset.py wraps each in a Prefect task.

    read → ingest → embed (cached) → shard → generate each shard (hierarchical sampling) → write → finalize

The shard is the unit of work and of resumption: its name and members are a pure function of the input, it is
written under a temporary name and renamed, and its stats file (written last) marks it done. A re-run skips
shards whose tar and stats verify and redoes the rest.
"""

from __future__ import annotations

import functools
import io
import tarfile
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from hdiff.dataset import layout
from hdiff.dataset.config import BuildConfig, ModelConfig
from hdiff.dataset.embed_cache import embed_with_cache
from hdiff.dataset.ingest import IngestReport, ingest_rows
from hdiff.dataset.sources import check_inputs
from hdiff.dataset.shard import semantic_shards
from hdiff.dataset.writer import Sample, ShardStats, read_stats, shard_is_complete, write_shard
from hdiff.files import atomic_path, check_writable_output
from hdiff.generate import ImageJob, generate_packed
from hdiff.models.schedulers import count_evaluations
from hdiff.prompts import sample_key


@dataclass(frozen=True)
class ShardJob:
    """One shard to generate: its stable name and its prompts (id order)."""

    name: str
    prompts: tuple[str, ...]
    sources: tuple[dict, ...] = ()  # each prompt's source row (hdiff.records.SourceRow), in the same order


@dataclass
class Prepared:
    shards: list[ShardJob]
    ingest_report: IngestReport
    source_revision: str | None = None  # the commit sha the corpus resolved to, or a hash of local files


def preflight(config: BuildConfig) -> None:
    """What can be checked before any work: the output folder can be written, the model can be found, a local
    corpus exists. Raises HdiffError with one line."""
    check_writable_output(config.output)
    check_inputs(config)


def prepare(config: BuildConfig, progress: bool = True) -> Prepared:
    """Read, clean, embed and partition the corpus into shards."""
    corpus = config.source.open()
    embed = functools.partial(embed_with_cache, cache_dir=config.embedding.cache_dir,
                              model_name=config.embedding.model, batch_size=config.embedding.batch_size,
                              progress=progress)
    prompts, report = ingest_rows(corpus.rows(), max_chars=config.ingest.max_chars,
                                  long_policy=config.ingest.long_policy, near_dedupe=config.ingest.near_dedupe,
                                  embed_fn=embed, limit=config.ingest.limit, sample_seed=config.ingest.sample_seed,
                                  source=corpus.label)
    vectors = embed([p.text for p in prompts])
    parts = semantic_shards(vectors, [p.id for p in prompts], config.sharding.min_size, config.sharding.max_size)
    shards = [ShardJob(layout.shard_name(i), tuple(prompts[r].text for r in rows),
                       tuple(corpus.source_row(prompts[r].row, prompts[r].columns) for r in rows))
              for i, rows in enumerate(parts)]
    return Prepared(shards, report, corpus.revision)


_ADAPTER_LOCK = threading.Lock()


def cached_adapter(model: ModelConfig):
    """One loaded model per worker process, reused by every shard it generates (threads wait for one load)."""
    with _ADAPTER_LOCK:
        return _load_adapter(model.id, model.prior, model.device, model.scheduler, model.dtype, model.allow_pickle,
                             model.channels_last, model.compile)


@functools.lru_cache(maxsize=2)
def _load_adapter(model_id: str, prior: str | None, device: str, scheduler: str | None, dtype: str,
                  allow_pickle: bool, channels_last: bool, compile: bool):
    from hdiff.models import load_adapter

    options = {"prior": prior} if prior else {}
    adapter = load_adapter(model_id, device=device, scheduler=scheduler, allow_pickle=allow_pickle,
                           dtype=None if dtype == "auto" else getattr(torch, dtype), **options)
    return adapter.accelerate(channels_last=channels_last, compile=compile)


def generate_pack(config: BuildConfig, shards: list[ShardJob],
                  progress_label: str | None = None) -> list[tuple[ShardStats, bool]]:
    """Generate a pack of shards sampled together (hdiff.generate.generate_packed) and write the incomplete ones.

    When any shard of the pack is missing, the whole pack is sampled again, so that every image is computed in the
    same batches as in an uninterrupted build; only the missing shards are written. `progress_label` shows a bar of
    the pack's scheduler evaluations.
    """
    if all(shard_is_complete(config.output, s.name) for s in shards):
        return [(read_stats(config.output, s.name), False) for s in shards]
    adapter = cached_adapter(config.model)
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
    results = []
    for shard, job, generation in zip(shards, jobs, generations):
        if shard_is_complete(config.output, shard.name):
            results.append((read_stats(config.output, shard.name), False))
            continue
        shard_started = time.perf_counter()

        def samples(job=job, generation=generation, sources=dict(zip(shard.prompts, shard.sources))):
            for row, image in generation.images():
                record = generation.records[row].model_dump(mode="json")
                if sources:
                    record["source"] = sources[job.prompts[row]]
                yield Sample(sample_key(job.prompt_ids[row], job.copy_index[row]), image, job.prompts[row], record)

        if shard.name == layout.shard_name(0):
            write_dendrogram(config, generation)  # before the stats file: a resumed build skips a finished shard
        stats = write_shard(config.output, shard.name, samples(), image_format=config.output_format.image_format,
                            jpeg_quality=config.output_format.jpeg_quality, unet_rows=generation.unet_rows,
                            wall_seconds=device_seconds + time.perf_counter() - shard_started,
                            device_seconds=device_seconds)
        results.append((stats, True))
    return results


def write_dendrogram(config: BuildConfig, generation) -> None:
    """OUT/dendrogram.png of the generation's tree, drawn under a partial name and renamed."""
    from hdiff.figures import save_dendrogram

    with atomic_path(layout.dendrogram_path(config.output)) as tmp:
        save_dendrogram(generation.plan, tmp, labels=generation.job.prompts)


def sample_grid_images(out_dir, limit: int = 64) -> list[np.ndarray]:
    """The first `limit` images of the dataset, read back from the tars."""
    from PIL import Image

    images = []
    for shard in layout.tar_shards(out_dir):
        with tarfile.open(layout.tar_path(out_dir, shard)) as tar:
            for member in tar:
                if member.name.rsplit(".", 1)[-1] in ("png", "jpg", "webp"):
                    data = tar.extractfile(member).read()
                    images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
                    if len(images) >= limit:
                        return images
    return images
