"""`hdiff bench startup`: how long a small `hdiff build` takes to start, with and without a running Prefect API.

Each run is `hdiff build` in a fresh process, as a user runs it, on the first `--prompts` prompts of the demo corpus
(the embedded shapes model, one shard), into a new folder. Timed from the process's start: the first image on disk
(the first shard's stats file: its images are written), the process's exit, and the flow's own wall time (the
manifest's). Two ways to reach Prefect: `temporary` (no PREFECT_API_URL: the build starts a temporary server and
stops it) and `running` (PREFECT_API_URL names a server started once beforehand, as `prefect server start` would
be). The start-up of the server alone and the import of the build's modules are timed apart.

    hdiff bench startup                           # 16 prompts, 2 runs of each
    hdiff bench startup --out docs/bench/startup_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from hdiff.bench.common import REPO_ROOT, check_output_file, integer, machine_line, markdown_table
from hdiff.errors import CommandParser, HdiffError, run_as_command
from hdiff.files import write_atomically

MODES = ("temporary", "running")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = CommandParser(prog="hdiff bench startup", description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=integer(1), default=16, help="prompts of the demo corpus built (default 16)")
    p.add_argument("--repeats", type=integer(1), default=2, help="runs of each way to reach Prefect (default 2)")
    p.add_argument("--config", default=str(REPO_ROOT / "configs" / "demo.yaml"), help="the build config to shrink "
                   "(default: configs/demo.yaml)")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    if args.out:
        check_output_file(args.out, "--out")
    return args


def small_config(base: Path, prompts: int, folder: Path, name: str) -> Path:
    """`base` cut to its first `prompts` prompts in one shard, built into `folder`/`name`."""
    config = yaml.safe_load(base.read_text(encoding="utf-8"))
    source = Path(config["source"]["path_or_id"])
    source = source if source.is_absolute() else REPO_ROOT / source
    cache = Path(config.get("embedding", {}).get("cache_dir", ".cache/hdiff/embeddings"))
    config.update(name=name, output=str(folder / name))
    config["source"]["path_or_id"] = str(source)
    config["ingest"] = {**config.get("ingest", {}), "limit": prompts, "sample_seed": None}
    config["embedding"] = {**config.get("embedding", {}),
                           "cache_dir": str(cache if cache.is_absolute() else REPO_ROOT / cache)}
    config["sharding"] = {"min_size": max(1, prompts // 2), "max_size": max(2, prompts)}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def timed_build(config: Path, out: Path, environment: dict[str, str]) -> dict[str, float]:
    """Seconds from the start of `hdiff build` to its first image on disk and to its exit, and the flow's own."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "hdiff.cli", "build", str(config)], env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first_image = None
    while process.poll() is None:
        if first_image is None and any((out / "stats").glob("shard-*.json")):
            first_image = time.perf_counter() - started
        time.sleep(0.02)
    finished = time.perf_counter() - started
    if process.returncode != 0:
        raise HdiffError(f"hdiff build {config} failed: {process.stderr.read()[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    return {"first_image_s": first_image if first_image is not None else finished, "exit_s": finished,
            "flow_s": manifest["versions"][-1]["wall_seconds"]}


def import_seconds(environment: dict[str, str]) -> float:
    """Seconds for a fresh process to import the build's modules (the CLI's, the flow's, torch)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import flows.build_dataset, hdiff.dataset.pipeline"], env=environment,
                   check=True)
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> dict:
    from flows.prefect_api import temporary_server

    base = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    figures: dict = {"machine": machine_line(), "prompts": args.prompts, "runs": {mode: [] for mode in MODES}}
    with tempfile.TemporaryDirectory(prefix="hdiff-bench-startup-") as scratch:
        folder = Path(scratch)
        base["PREFECT_HOME"] = str(folder / "prefect")  # a throwaway database, as a first build would have
        figures["import_s"] = import_seconds(base)
        started = time.perf_counter()
        with temporary_server() as url:
            figures["server_start_s"] = time.perf_counter() - started
            for repeat in range(args.repeats):
                for mode in MODES:
                    name = f"{mode}-{repeat}"
                    config = small_config(Path(args.config), args.prompts, folder, name)
                    environment = {**base, "PREFECT_API_URL": url} if mode == "running" else base
                    figures["runs"][mode].append(timed_build(config, folder / name, environment))
                    print(f"{name}: {figures['runs'][mode][-1]}", file=sys.stderr)
    return figures


def summary(figures: dict) -> str:
    rows = [[mode, f"{statistics.median([r['first_image_s'] for r in runs]):.1f}", f"{statistics.median([r['exit_s'] for r in runs]):.1f}",
             f"{statistics.median([r['flow_s'] for r in runs]):.1f}", str(len(runs))]
            for mode, runs in figures["runs"].items()]
    return "\n".join([figures["machine"],
                      f"{figures['prompts']} prompts; importing the build's modules {figures['import_s']:.1f} s, "
                      f"a temporary Prefect server's start {figures['server_start_s']:.1f} s",
                      markdown_table(["Prefect API", "first image (s)", "exit (s)", "flow (s)", "runs"], rows)])


def main(argv: list[str] | None = None) -> int:
    def command() -> int:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        figures = run(args)
        print(summary(figures))
        if args.out:
            write_atomically(args.out, (json.dumps(figures, indent=1) + "\n").encode())
        return 0

    return run_as_command(command)


if __name__ == "__main__":
    sys.exit(main())
