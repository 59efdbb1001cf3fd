"""The dataset build as a Prefect flow: prepare → one task per shard → finalize.

Run in-process with `hdiff build CONFIG`, or as a deployment (prefect.yaml) with
`prefect deployment run 'build-dataset/demo' --param config=...`. Shard tasks carry the tag `hdiff-gpu`:
`prefect concurrency-limit create hdiff-gpu 1` keeps one shard per GPU across all runs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.task_runners import ThreadPoolTaskRunner

from hdiff.build import pipeline
from hdiff.build.config import BuildConfig, load_config
from hdiff.build.finalize import (hardware_info, prefect_summary_markdown, shard_table_rows, write_dataset_card,
                                  write_manifest)
from hdiff.build.writer import clean_partials, read_all_stats
from hdiff.errors import HdiffError

GPU_TAG = "hdiff-gpu"


@task(name="prepare-shards")
def prepare_task(config: BuildConfig) -> pipeline.Prepared:
    return pipeline.prepare(config)


@task(name="generate-shard", tags=[GPU_TAG], task_run_name="generate-{shard.name}")
def generate_shard_task(config: BuildConfig, shard: pipeline.ShardJob) -> dict:
    from tqdm import tqdm

    with tqdm(desc=shard.name, unit="eval", leave=False) as bar:
        stats, generated = pipeline.generate_shard(config, shard, progress=lambda k, active: bar.update(1))
    get_run_logger().info("%s: %s (%d images, %.0f UNet rows)", shard.name,
                          "generated" if generated else "already complete, skipped", stats.samples, stats.unet_rows)
    return stats.model_dump(mode="json")


@task(name="finalize")
def finalize_task(config: BuildConfig, ingest_report: dict, wall_seconds: float) -> dict:
    from hdiff.build.layout import grid_path
    from hdiff.figures import save_grid

    manifest = write_manifest(config.output, config=config.to_flow_parameters(), ingest_report=ingest_report,
                              shard_stats=read_all_stats(config.output), wall_seconds=wall_seconds,
                              hardware=hardware_info())
    save_grid(pipeline.sample_grid_images(config.output), grid_path(config.output))
    write_dataset_card(config.output, manifest)
    create_markdown_artifact(prefect_summary_markdown(manifest), key="hdiff-build-summary",
                             description=f"{config.name}: compute summary")
    create_table_artifact(shard_table_rows(manifest), key="hdiff-build-shards", description="per-shard table")
    return manifest


def task_runner_for(config: BuildConfig):
    """Threads on one machine (one shard per GPU slot), or Ray: a given cluster address or a local instance."""
    if config.runner.kind == "ray":
        from prefect_ray import RayTaskRunner

        init = {"include_dashboard": False, "num_cpus": None}
        return RayTaskRunner(address=config.runner.ray_address, init_kwargs={k: v for k, v in init.items()
                                                                             if v is not None})
    return ThreadPoolTaskRunner(max_workers=config.runner.gpu_concurrency)


def submit_shards(config: BuildConfig, shards: list[pipeline.ShardJob]):
    task_with_retries = generate_shard_task.with_options(retries=config.runner.retries, retry_delay_seconds=1)
    if config.runner.kind == "ray":
        import torch
        from prefect_ray.context import remote_options

        gpus = 1 if torch.cuda.is_available() else 0
        with remote_options(num_gpus=gpus):
            return [task_with_retries.submit(config, shard) for shard in shards]
    return [task_with_retries.submit(config, shard) for shard in shards]


@flow(name="build-dataset", log_prints=True)
def build_dataset(config: dict[str, Any]) -> dict:
    """Build the WebDataset image dataset described by `config` (a BuildConfig as a dict)."""
    started = time.perf_counter()
    cfg = BuildConfig.from_flow_parameters(config)
    Path(cfg.output).mkdir(parents=True, exist_ok=True)
    clean_partials(cfg.output)
    prepared = prepare_task(cfg)
    progress = create_progress_artifact(0.0, key="hdiff-build-progress", description=f"{cfg.name}: shards done")
    futures = submit_shards(cfg, prepared.shards)
    for done, future in enumerate(futures, 1):
        future.result()
        update_progress_artifact(progress, 100.0 * done / len(futures))
    report = {"read": prepared.ingest_report.read, "kept": prepared.ingest_report.kept,
              "dropped": prepared.ingest_report.dropped, "truncated": prepared.ingest_report.truncated}
    return finalize_task(cfg, report, time.perf_counter() - started)


class _BadInputWithoutTraceback(logging.Filter):
    """Bad input (HdiffError) is logged as its one-line message: a traceback is for bugs, not for the user's data."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], HdiffError):
            record.exc_info, record.exc_text = None, None
        return True


@contextlib.contextmanager
def bad_input_without_tracebacks():
    """While open, Prefect's flow and task run loggers print an HdiffError without its traceback."""
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    quiet = _BadInputWithoutTraceback()
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def build_dataset_from_config(config: BuildConfig) -> dict:
    """Run the flow in this process (Prefect starts a temporary local API if no server is configured)."""
    with bad_input_without_tracebacks():
        return build_dataset.with_options(task_runner=task_runner_for(config))(config.to_flow_parameters())


if __name__ == "__main__":
    import sys

    build_dataset_from_config(load_config(sys.argv[1]))
