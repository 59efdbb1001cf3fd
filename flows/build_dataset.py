"""The dataset build as a Prefect flow: prepare → one task per shard → commit → publish (when push.repo is set).

Parameters are typed (a BuildConfig, a config path, typed overrides), so a deployment's UI shows a form and the
server refuses a bad parameter before a run starts; a run is named after its dataset and next version ("shapes-demo
v3"); each task has the time limit of the config's runner section.

A re-run into an existing dataset works only on what changed in the corpus (hdiff.dataset.update); one run at a
time holds the output folder (its .lock).

Run in-process with `hdiff build CONFIG`, or as a deployment (prefect.yaml) with
`prefect deployment run 'build-dataset/demo' --param overrides='{"generation.tau": 0.2}'`. The config's
`runner` section picks where shard tasks run (threads here, or a Ray cluster), however the flow was started.
Shard tasks carry the tag `hdiff-gpu`: `prefect concurrency-limit create hdiff-gpu 1` keeps one shard per GPU
across all runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from tqdm import tqdm

from flows.prefect_api import ApiStart, prefect_api
from hdiff.dataset.config import BuildConfig, PushConfig, apply_overrides, load_config
from hdiff.dataset import layout, ownership, pipeline
from hdiff.dataset.card import portable, prefect_summary_markdown, shard_table_rows
from hdiff.dataset.finalize import commit_run
from hdiff.dataset.scoring_stage import dropped_rows, dropped_table, scorer_identities
from hdiff.dataset.manifest import Manifest
from hdiff.dataset.ownership import check_output_folder
from hdiff.dataset.settings import claim_output, committed_identity
from hdiff.dataset.sources import build_provenance
from hdiff.dataset.update import BuildResult, DeviceTime, RunReport
from hdiff.dataset.writer import clean_partials
from hdiff.devices import visible_devices
from hdiff.errors import HdiffError
from hdiff.files import exclusive_lock

GPU_TAG = "hdiff-gpu"
Overrides = dict[str, str | int | float | bool | list[str] | None]  # dotted key -> value, e.g. {"generation.tau": 0.2}


@task(name="prepare-shards")
def prepare_task(config: BuildConfig) -> pipeline.Prepared:
    return pipeline.prepare(config)


def _pack_run_name() -> str:
    from prefect.runtime import task_run

    names = [shard.name for shard in task_run.parameters["shards"]]
    return f"generate-{names[0]}" if len(names) == 1 else f"generate-{names[0]}..{names[-1]}"


@task(name="generate-shards", tags=[GPU_TAG], task_run_name=_pack_run_name)
def generate_shards_task(config: BuildConfig, shards: list[pipeline.ShardJob]) -> dict:
    """One shard, or a pack of shards sampled together (config generation.pack_shards); returns once they are on
    disk: their stats, the device time, the device's wait for the CPU and the scoring time (apart)."""
    label = shards[0].name if len(shards) == 1 else f"{shards[0].name}..{shards[-1].name}"
    pack = pipeline.generate_pack(config, shards, progress_label=label)
    logger = get_run_logger()
    for shard, (stats, generated) in zip(shards, pack.shards):
        logger.info("%s: %s (%d images, %.0f UNet rows)", shard.name,
                    "generated" if generated else "already complete, skipped", stats.samples, stats.unet_rows)
    return {"shards": [stats.model_dump(mode="json") for stats, _ in pack.shards], "device_s": pack.device_s,
            "device_waited_s": pack.device_waited_s, "scoring_s": pack.scoring_s}


def retry_unless_bad_input(task, task_run, state) -> bool:
    """Retry a shard after a fault, not after bad input: an HdiffError would fail the same way again."""
    try:
        state.result()
    except HdiffError:
        return False
    except Exception:  # noqa: BLE001 - any other failure is worth another try
        return True
    return True


@task(name="rewrite-shard")
def rewrite_task(config: BuildConfig, rewrite) -> None:
    pipeline.rewrite_shard(config.output, rewrite)


@task(name="publish")
def publish_task(out: str, push: PushConfig) -> str:
    """The committed dataset to the Hub, as `hdiff push` does (only what changed since the branch's last push)."""
    from hdiff.publish import push_dataset

    url = push_dataset(out, push.repo, private=push.private, revision=push.revision)
    get_run_logger().info("published %s to %s", out, url)
    return url


@task(name="commit")
def commit_task(config: BuildConfig, prepared: pipeline.Prepared, identity: dict[str, Any],
                wall_seconds: float) -> BuildResult:
    """Commit the run with its dataset's identity (as claimed, the models' revisions as loaded); returns the
    manifest and what this run changed."""
    provenance = build_provenance(config, prepared.source_revision)
    manifest = commit_run(config.output, config=portable(config.to_flow_parameters()), committed=prepared.committed,
                          plan=prepared.plan, wall_seconds=wall_seconds, keep_extra=not config.update.prune,
                          ingest=prepared.ingest_report, provenance=portable(provenance), model_id=config.model.id,
                          identity=committed_identity(identity, provenance), scorers=scorer_identities(config))
    run = RunReport.of(prepared.committed, prepared.plan, manifest)
    get_run_logger().info("%s: %s", config.output, run.describe())
    if run.version is not None:
        drops = dropped_table(dropped_rows(config.output, (s.name for s in prepared.plan.shards)))
        create_markdown_artifact(prefect_summary_markdown(manifest) + drops, key="hdiff-build-summary",
                                 description=f"{config.name}: compute summary")
        create_table_artifact(shard_table_rows(manifest), key="hdiff-build-shards", description="per-shard table")
    return BuildResult(manifest, run)


def task_runner_for(config: BuildConfig):
    """Threads on one machine (per device of model.device and slot of runner.gpu_concurrency: a pack sampling, one
    whose shards are being written, and one started and waiting for the device, so that Prefect's start of a task
    never keeps a device idle), or Ray: a given cluster address or a local instance."""
    if config.runner.kind == "ray":
        from prefect_ray import RayTaskRunner

        address = config.runner.ray_address
        if address == "auto":  # prefect-ray drops "auto" and starts a local instance when it finds no cluster
            return RayTaskRunner(init_kwargs={"address": "auto"})  # ray.init(address="auto") fails instead
        return RayTaskRunner(address=address, init_kwargs={} if address else {"include_dashboard": False})
    devices = visible_devices(config.model.device)
    return ThreadPoolTaskRunner(max_workers=3 * config.runner.gpu_concurrency * len(devices))


@contextlib.contextmanager
def shard_submission(config: BuildConfig):
    """Around submitting shard tasks to Ray: one GPU per shard when the cluster has GPUs, and the API to report to.

    Ray workers get the run's settings, but a temporary local API (no server configured) is in none of them.
    """
    if config.runner.kind != "ray":
        yield
        return
    import ray
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_ray.context import remote_options

    api_url = PREFECT_API_URL.value() or str(FlowRunContext.get().client.api_url)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    with remote_options(num_gpus=gpus), temporary_settings({PREFECT_API_URL: api_url}):
        yield


def resolved_config(config: BuildConfig | dict[str, Any] | None, config_path: str | None,
                    overrides: Overrides | None) -> BuildConfig:
    """The build config from exactly one of a config and a YAML file, with dotted-key overrides applied."""
    if (config is None) == (config_path is None):
        raise HdiffError("give exactly one of config (a BuildConfig or a dict of sections) and config_path "
                         "(a YAML file)")
    if config_path is not None:
        base = load_config(config_path)
    else:
        base = config if isinstance(config, BuildConfig) else BuildConfig.from_flow_parameters(config)
    return apply_overrides(base, overrides) if overrides else base


def next_version(out: str | Path) -> int:
    """The version a run into `out` would commit: one more than its manifest's last (1 for a new folder)."""
    try:
        return len(Manifest.read(out).versions) + 1
    except (OSError, ValueError, HdiffError):
        return 1


def run_name() -> str:
    """'shapes-demo v3': the dataset and the version this run would commit ('build-dataset' for a config that does
    not resolve: the run then fails with the reason)."""
    from prefect.runtime import flow_run

    try:
        cfg = resolved_config(**flow_run.parameters)
    except Exception:  # noqa: BLE001 - the flow itself reports a bad config
        return "build-dataset"
    return f"{cfg.name} v{next_version(cfg.output)}"


@flow(name="build-dataset", log_prints=True, flow_run_name=run_name)
def build_dataset(config: BuildConfig | None = None, config_path: str | None = None,
                  overrides: Overrides | None = None) -> BuildResult:
    """Build the WebDataset image dataset of `config` (a BuildConfig: a form in the UI) or `config_path` (a YAML
    file), then publish it to the Hub when the config's push.repo is set.

    `overrides` replaces dotted keys, e.g. {"generation.tau": 0.2, "ingest.limit": 100}.
    """
    started = time.perf_counter()
    cfg = resolved_config(config, config_path, overrides)
    result = build_into_output(cfg, started)
    if cfg.push.repo is not None:  # after the lock is released: a push waits for no run to be changing the folder
        publish_task.with_options(timeout_seconds=cfg.runner.publish_timeout)(cfg.output, cfg.push)
    return result


def build_into_output(cfg: BuildConfig, started: float) -> BuildResult:
    """prepare → rewrites → shards → commit, holding the output folder's lock."""
    pipeline.preflight(cfg)  # one line now, rather than a failure after ingest and embedding
    created = not Path(cfg.output).exists()
    Path(cfg.output).mkdir(parents=True, exist_ok=True)
    with exclusive_lock(layout.lock_path(cfg.output), f"output folder {cfg.output}"):
        check_output_folder(cfg.output, cfg.source.path_or_id)  # again, now that no other run can write it
        try:
            ownership.claim(cfg.output)
            clean_partials(cfg.output)
            prepared = prepare_task.with_options(timeout_seconds=cfg.runner.prepare_timeout)(cfg)
            identity = claim_output(cfg, prepared.committed.manifest)  # a re-run must match its finished shards
            for rewrite in prepared.plan.rewrites:
                rewrite_task(cfg, rewrite)
            device = generate_shards(cfg, prepared.shards)
            commit = commit_task.with_options(timeout_seconds=cfg.runner.commit_timeout)
            result = commit(cfg, prepared, identity, time.perf_counter() - started)
            return BuildResult(result.manifest, dataclasses.replace(result.run, device=device))
        except BaseException:
            ownership.release_unused(cfg.output, created)  # refused before any shard: nothing left behind
            raise


def generate_shards(cfg: BuildConfig, shards: list[pipeline.ShardJob]) -> DeviceTime:
    """Every shard of the plan, in packs of generation.pack_shards, on the config's runner, with progress; returns
    the devices' time and their wait for the CPU."""
    device = DeviceTime(format=cfg.output_format.image_format, png_level=cfg.output_format.png_compress_level)
    if not shards:
        return device
    progress = create_progress_artifact(0.0, key="hdiff-build-progress", description=f"{cfg.name}: shards done")
    shard_task = generate_shards_task.with_options(retries=cfg.runner.retries, retry_delay_seconds=1,
                                                   retry_condition_fn=retry_unless_bad_input,
                                                   timeout_seconds=cfg.runner.shard_timeout)
    size = cfg.generation.pack_shards
    packs = [shards[i:i + size] for i in range(0, len(shards), size)]
    images = sum(len(shard.prompts) for shard in shards) * cfg.generation.images_per_prompt
    with task_runner_for(cfg) as runner, shard_submission(cfg), \
            tqdm(desc=f"{cfg.name}: shards", total=len(shards), unit="shard") as overall:
        futures = [runner.submit(shard_task, {"config": cfg, "shards": pack}) for pack in packs]
        done_images = 0
        for done, future in enumerate(as_completed(futures), 1):
            pack = future.result()
            done_images += sum(s["samples"] for s in pack["shards"])
            device = device.plus(pack["device_s"], pack["device_waited_s"], pack["scoring_s"])
            overall.set_postfix_str(f"{done_images:,} of {images:,} images")
            overall.update(len(pack["shards"]))
            update_progress_artifact(progress, 100.0 * done / len(futures))
    if (note := device.cpu_note()) is not None:
        get_run_logger().warning(note)
    return device


class _BadInputLogged(logging.Filter):
    """Drops Prefect's run-log lines about bad input (HdiffError): the command line prints that line itself, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        bad_input = bool(record.exc_info) and isinstance(record.exc_info[1], HdiffError)
        return not (bad_input or "HdiffError" in record.getMessage())


@contextlib.contextmanager
def bad_input_reported_by_caller():
    """While open, Prefect's flow and task run loggers leave an HdiffError to the caller to report."""
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    quiet = _BadInputLogged()
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def build_dataset_from_config(config: BuildConfig, api: ApiStart | None = None) -> BuildResult:
    """Run the flow in this process, reporting to the configured Prefect API or to a temporary local server that
    dies with this process (flows.prefect_api; `api`: one already starting)."""
    with bad_input_reported_by_caller(), prefect_api(api):  # `hdiff build` prints the HdiffError's line
        return build_dataset(config=config)


if __name__ == "__main__":
    import sys

    build_dataset_from_config(load_config(sys.argv[1]))
