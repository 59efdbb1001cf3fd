"""Small helpers the benchmarks share: a markdown table, the machine in words, peak memory, stage timing, and
reading their command lines (argparse types that refuse non-finite and out-of-range values when read)."""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from hdiff.errors import HdiffError
from hdiff.files import check_writable_output
from hdiff.machine import cpu_model

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line() -> str:
    """`machine: 2 CPU cores (Intel Xeon), 23.4 GiB RAM, load 2.1/1.8/1.5, Linux, Python 3.11`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        ram_text = f", {ram:.1f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        ram_text = ""
    load = "/".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"machine: {cores} CPU cores ({cpu_model()}){ram_text}, load average {load} (1/5/15 min), "
            f"{platform.system()}, Python {platform.python_version()}")


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (getrusage ru_maxrss), MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


@contextmanager
def stage(timings: dict[str, list[float]], name: str) -> Iterator[None]:
    """Adds the block's [wall, CPU] seconds to timings[name]; CPU counts all threads of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        spent = timings.setdefault(name, [0.0, 0.0])
        spent[0] += time.perf_counter() - wall
        spent[1] += time.process_time() - cpu


# --- reading the command line: every value checked when read --------------------------------------------------------

def integer(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value

    return parse


def number(low: float) -> Callable[[str], float]:
    """An argparse type: a finite number >= low (no inf, no nan)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= low):
            raise argparse.ArgumentTypeError(f"expected a finite number >= {low:g}, got {text!r}")
        return value

    return parse


def comma_list(item: Callable[[str], T], *, allow_empty: bool = False) -> Callable[[str], list[T]]:
    """An argparse type: comma-separated values, each read by `item` (`integer(1)`, `number(0)`)."""
    def parse(text: str) -> list[T]:
        values = [item(part.strip()) for part in text.split(",") if part.strip()]
        if not values and not allow_empty:
            raise argparse.ArgumentTypeError(f"expected at least one comma-separated value, got {text!r}")
        return values

    return parse


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """`path` as a Path if a file can be written there: not a folder, its folder creatable and writable."""
    path = Path(path)
    if path.is_dir():
        raise HdiffError(f"{flag} {path} is a folder, not a file")
    try:
        check_writable_output(path.parent)
    except HdiffError as exc:
        raise HdiffError(f"{flag} {path}: {exc}") from None
    return path
