"""`hdiff bench encode`: what each image format costs the CPU, and whether threads or processes should encode.

1. Per format (png at several zlib levels, jpg and webp at the build's fixed settings) and size: CPU ms per image on
   one core (process time, median of the images) and bytes per image, on natural-image content
   (hdiff.bench.natural: crops of photos).
2. Threads against processes: images/s of `--workers` encoder threads and of the build's encoder processes
   (hdiff.dataset.shard_writer.WriterPool), and how much of its solo speed a pure-Python loop in the main thread
   keeps meanwhile (the sampler's thread launches kernels in Python: PIL holds the GIL while it encodes into memory).

    hdiff bench encode                               # 512 and 1024 px, 8 images each
    hdiff bench encode --sizes 64 --images 2         # the tests' size
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import threading
import time

from hdiff.bench.common import check_output_file, comma_list, integer, machine_line, markdown_table
from hdiff.bench.natural import natural_images
from hdiff.dataset.encoding import Encoding, encode
from hdiff.dataset.shard_writer import WriterPool
from hdiff.errors import CommandParser, run_as_command
from hdiff.files import write_atomically
from hdiff.machine import usable_cores

ENCODINGS = {"png1": Encoding("png", png_level=1), "png3": Encoding("png", png_level=3),
             "png6": Encoding("png", png_level=6), "jpg": Encoding("jpg"), "webp": Encoding("webp")}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = CommandParser(prog="hdiff bench encode", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=comma_list(integer(16)), default=[512, 1024], help="image sides, px")
    p.add_argument("--images", type=integer(1), default=8, help="distinct images per size (default 8)")
    p.add_argument("--workers", type=integer(1), default=None, help="threads and processes compared (default: one "
                   "per usable core)")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if args.json is not None:
        args.json = check_output_file(args.json, "--json")
    return args


def per_core(images, encoding: Encoding) -> dict:
    """CPU ms per image on one core (median over the images, each encoded twice, the second timed) and bytes."""
    ms, sizes = [], []
    for image in images:
        encoding.encode(image)
        start = time.thread_time()
        data = encoding.encode(image)
        ms.append(1000 * (time.thread_time() - start))
        sizes.append(len(data))
    return {"ms_per_image_per_core": statistics.median(ms), "bytes_per_image": statistics.mean(sizes)}


def python_loop_rate(seconds: float, stop: threading.Event | None = None) -> float:
    """Iterations per second of a pure-Python loop (the sampler's thread stands in for it)."""
    count, start = 0, time.perf_counter()
    while (time.perf_counter() - start < seconds) if stop is None else not stop.is_set():
        count += 1
    return count / (time.perf_counter() - start)


def parallel(images, encoding: Encoding, submit, rounds: int = 2) -> dict:
    """Images/s of `submit(encode, image, encoding)` over `rounds` passes of the images, and the main thread's
    Python loop rate meanwhile relative to alone."""
    alone = python_loop_rate(0.5)
    stop, rates = threading.Event(), []
    loop = threading.Thread(target=lambda: rates.append(python_loop_rate(0, stop)))
    start = time.perf_counter()
    loop.start()
    futures = [submit(encode, image, encoding) for _ in range(rounds) for image in images]
    for future in futures:
        future.result()
    seconds = time.perf_counter() - start
    stop.set()
    loop.join()
    return {"images_per_s": len(futures) / seconds, "python_loop_share": rates[0] / alone}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    workers = args.workers or usable_cores()
    pool = WriterPool(workers, 1)
    threads = concurrent.futures.ThreadPoolExecutor(workers)
    pool.encoders().submit(encode, natural_images(1, 16)[0], Encoding()).result()  # the processes started
    rows, result = [], {"workers": workers, "machine": machine_line(), "sizes": {}}
    for size in args.sizes:
        images = natural_images(args.images, size)
        result["sizes"][size] = {}
        for name, encoding in ENCODINGS.items():
            figures = per_core(images, encoding)
            figures["threads"] = parallel(images, encoding, threads.submit)
            figures["processes"] = parallel(images, encoding, pool.encoders().submit)
            result["sizes"][size][name] = figures
            rows.append([f"{size}", name, f"{figures['ms_per_image_per_core']:.1f}",
                         f"{figures['bytes_per_image'] / 1024:,.0f}",
                         f"{figures['threads']['images_per_s']:.1f}", f"{figures['processes']['images_per_s']:.1f}",
                         f"{100 * figures['threads']['python_loop_share']:.0f}%",
                         f"{100 * figures['processes']['python_loop_share']:.0f}%"])
    pool.shutdown()
    threads.shutdown()
    print(f"hdiff bench encode: natural images (crops of photos), {args.images} per size; {workers} workers")
    print(markdown_table(["px", "format", "ms / image / core", "KiB / image", f"img/s {workers} threads",
                          f"img/s {workers} processes", "Python loop beside threads",
                          "Python loop beside processes"], rows))
    print(machine_line())
    if args.json is not None:
        write_atomically(args.json, json.dumps(result, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(run_as_command(main))
