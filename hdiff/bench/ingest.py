"""`hdiff bench ingest`: read and ingest large prompt corpora whole (datasets' Arrow cache) or streamed, with time
and peak memory, at several corpus sizes.

Each corpus is a synthetic parquet file: N distinct prompts of about 60 characters and three other columns (a
category, a URL and a ~300-character description, so a row is about half a kilobyte, as in scraped corpora), in row
groups of WRITE_CHUNK rows. Each measurement runs in a fresh process, so its peak RSS (getrusage ru_maxrss) is its
own: reading only (every row's prompt and kept columns visited, nothing kept), ingest into a list in memory
(`ingest_rows`), and ingest as a build does it, the kept prompts spilled to an SQLite file (`SpilledToDisk`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hdiff.bench.common import comma_list, integer, machine_line, markdown_table, peak_rss_mib
from hdiff.errors import CommandParser

WORDS = ("red", "blue", "small", "large", "circle", "square", "castle", "forest", "river", "portrait", "city",
         "night", "golden", "ancient", "robot", "garden")
MODES = {"read": "rows read, nothing kept", "memory": "ingest, kept prompts in memory",
         "spilled": "ingest, kept prompts spilled to disk (a build)"}
WRITE_CHUNK = 100_000


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = CommandParser(prog="hdiff bench ingest", description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=comma_list(integer(1)), default=[100_000, 1_000_000],
                   help="comma-separated corpus sizes (default: 100000,1000000)")
    p.add_argument("--dir", default=None, help="where the synthetic corpus is written (default: a temporary folder)")
    p.add_argument("--worker", nargs=3, metavar=("MODE", "STREAMING", "FILE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def write_corpus(path: Path, n: int) -> None:
    """N distinct prompts with three other columns, written WRITE_CHUNK rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    for lo in range(0, n, WRITE_CHUNK):
        rows = range(lo, min(n, lo + WRITE_CHUNK))
        prompts = [" ".join(WORDS[(i >> shift) % len(WORDS)] for shift in (0, 4, 8, 12)) + f" scene number {i}"
                   for i in rows]
        table = pa.table({"prompt": prompts, "category": [WORDS[i % 16] for i in rows],
                          "url": [f"https://example.invalid/images/{i}.jpg" for i in rows],
                          "description": [f"{p}. " * 5 for p in prompts]})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def measure(mode: str, streaming: bool, corpus: str) -> dict:
    """One measurement in this process: seconds, rows, prompts kept, peak RSS."""
    from hdiff.dataset.ingest import SpilledToDisk, ingest_into, ingest_rows
    from hdiff.dataset.sources import open_corpus

    started = time.perf_counter()
    opened = open_corpus(corpus, streaming=streaming, keep_columns=["category", "url"])
    if mode == "read":
        rows = sum(1 for _ in opened.rows())
        kept = 0
    elif mode == "memory":
        prompts, report = ingest_rows(opened.rows(), source=corpus)
        rows, kept = report.read, len(prompts)
    else:
        with tempfile.TemporaryDirectory() as scratch, SpilledToDisk(Path(scratch) / "kept.sqlite") as store:
            report = ingest_into(store, opened.rows(), source=corpus)
            rows, kept = report.read, report.kept
    return {"seconds": time.perf_counter() - started, "rows": rows, "kept": kept, "peak_rss_mib": peak_rss_mib()}


def run_worker(mode: str, streaming: bool, corpus: str, cache: Path) -> dict:
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache)}  # the whole read's Arrow copy goes beside the corpus
    result = subprocess.run([sys.executable, "-m", "hdiff.bench.ingest", "--worker", mode, str(streaming), corpus],
                            capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.worker:
        mode, streaming, corpus = args.worker
        print(json.dumps(measure(mode, streaming == "True", corpus)))
        return 0
    table = []
    for n in args.prompts:
        with tempfile.TemporaryDirectory(dir=args.dir) as folder:
            corpus = Path(folder) / "corpus.parquet"
            write_corpus(corpus, n)
            size_mib = corpus.stat().st_size / 2**20
            for mode in MODES:
                for streaming in (False, True):
                    r = run_worker(mode, streaming, str(corpus), Path(folder) / f"cache-{mode}-{streaming}")
                    table.append([f"{n:,}", f"{size_mib:,.0f}", MODES[mode],
                                  "streamed" if streaming else "whole (Arrow cache)", f"{r['rows']:,}",
                                  f"{r['kept']:,}", f"{r['seconds']:.1f}", f"{r['peak_rss_mib']:,.0f}"])
    print(f"hdiff bench ingest: parquet corpora of prompt + 3 columns (2 kept), row groups of {WRITE_CHUNK:,} rows")
    print(markdown_table(["prompts", "parquet MiB", "what", "read", "rows", "prompts kept", "wall s",
                          "peak RSS (MiB)"], table))
    print(machine_line())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
