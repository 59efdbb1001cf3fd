"""Encoding and writing shards beside sampling, so that a device never waits for CPU work it does not need.

    device thread   sample a pack → decode a chunk → ShardSink.add(sample) … → close()   (then the next pack)
    encoders        uint8 image → bytes (hdiff.dataset.encoding, fixed settings), in worker processes
    shard writers   a thread per open shard: bytes in sample order → tar (.partial, fsync, rename) → stats file

Processes encode, not threads: PIL holds the GIL while it encodes into memory (its encoders release it only while
writing to a file descriptor), so encoder threads would hold the GIL that the sampler's thread needs to launch the
device's work (docs/speed.md, `hdiff bench encode`). The workers run at normal priority: at a lower one, other
work on a shared machine starved them.

Memory: decoded images wait in a queue bounded in bytes (`queue_mib`), one per process and shared by every device
and task there. A thread that adds to a full queue blocks, and the time it blocked is the device's wait for the CPU
(the build's summary reports it). Images in flight take at most queue_mib, plus one image larger than the bound
alone, plus the copies pickled to and from the workers (about 2 × workers + 1 images).

The tars are those `write_shard` writes (the same function, handed the images already encoded, in sample order), so
they are byte-identical to a serial build's; the stats file, the shard's done-marker, still goes last.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import multiprocessing
import queue
import threading
import time
from pathlib import Path

import numpy as np

from hdiff.dataset.encoding import Encoding, encode
from hdiff.dataset.writer import Sample, ShardStats, write_shard
from hdiff.errors import HdiffError
from hdiff.machine import usable_cores


class ByteBudget:
    """A bound on bytes held at once: `acquire` blocks until `n` more fit (or nothing is held) and returns the
    seconds it blocked; `peak` is the most ever held."""

    def __init__(self, limit: int):
        self.limit, self.used, self.peak = limit, 0, 0
        self._changed = threading.Condition()

    def acquire(self, n: int) -> float:
        started = time.perf_counter()
        with self._changed:
            self._changed.wait_for(lambda: self.used == 0 or self.used + n <= self.limit)
            self.used += n
            self.peak = max(self.peak, self.used)
        return time.perf_counter() - started

    def release(self, n: int) -> None:
        with self._changed:
            self.used -= n
            self._changed.notify_all()


class WriterPool:
    """Encoder processes and a bounded queue of decoded images, shared by every shard written in this process."""

    def __init__(self, workers: int, queue_bytes: int):
        if workers < 1 or queue_bytes < 1:
            raise HdiffError(f"a writer pool needs workers >= 1 and a queue of >= 1 byte, got {workers}, {queue_bytes}")
        self.workers = workers
        self.budget = ByteBudget(queue_bytes)
        self._encoders: concurrent.futures.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def encoders(self) -> concurrent.futures.ProcessPoolExecutor:
        """The worker processes, started on first use (spawned: the sampler's process has threads)."""
        with self._lock:
            if self._encoders is None:
                self._encoders = concurrent.futures.ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"))
            return self._encoders

    def open_shard(self, out_dir: str | Path, shard_name: str, encoding: Encoding, **stats) -> ShardSink:
        """A shard to add samples to, in order; `stats` are write_shard's figures (unet_rows, device_seconds, …)."""
        return ShardSink(self, out_dir, shard_name, encoding, stats)

    def shutdown(self) -> None:
        with self._lock:
            if self._encoders is not None:
                self._encoders.shutdown(wait=True, cancel_futures=True)
                self._encoders = None


_END, _ABORT = object(), object()


class ShardAborted(HdiffError):
    """The producer of a shard's samples stopped before its last one."""


class ShardSink:
    """One shard being written: `add` each sample in tar order (it returns once the image is queued for
    encoding), then `close`; `result` waits until the tar and its stats are on disk and returns the stats.
    `abort` instead drops the shard (nothing is left under its final names)."""

    def __init__(self, pool: WriterPool, out_dir: str | Path, shard_name: str, encoding: Encoding, stats: dict):
        self.name = shard_name
        self.waited_s = 0.0  # time `add` blocked on the full queue
        self._pool, self._encoding = pool, encoding
        self._items: queue.SimpleQueue = queue.SimpleQueue()
        self._done: concurrent.futures.Future[ShardStats] = concurrent.futures.Future()
        self._ended = False  # the producer has closed or aborted
        self._ending_read = False  # the writer has read that
        self._thread = threading.Thread(target=self._write, args=(out_dir, stats), name=f"hdiff-write-{shard_name}",
                                        daemon=True)
        self._thread.start()

    def add(self, sample: Sample) -> None:
        if self._done.done():
            self._done.result()  # the writer stopped: raise its error here, in the producer
        if isinstance(sample.image, bytes):
            self._items.put((sample, None, 0))
            return
        image = np.ascontiguousarray(np.asarray(sample.image))
        self.waited_s += self._pool.budget.acquire(image.nbytes)
        future = self._pool.encoders().submit(encode, image, self._encoding)
        self._items.put((sample, future, image.nbytes))

    def close(self) -> None:
        self._end(_END)

    def abort(self) -> None:
        self._end(_ABORT)

    def _end(self, marker: object) -> None:
        if not self._ended:
            self._ended = True
            self._items.put(marker)

    def result(self) -> ShardStats:
        return self._done.result()

    def _samples(self):
        while True:
            item = self._items.get()
            self._ending_read = item is _END or item is _ABORT
            if item is _END:
                return
            if item is _ABORT:
                raise ShardAborted(f"shard {self.name}: stopped before its last sample")
            sample, future, nbytes = item
            if future is None:
                yield sample
                continue
            try:
                data = future.result()
            finally:
                self._pool.budget.release(nbytes)
            yield Sample(sample.key, data, sample.prompt, sample.record)

    def _write(self, out_dir: str | Path, stats: dict) -> None:
        e = self._encoding
        try:
            written = write_shard(out_dir, self.name, self._samples(), image_format=e.image_format,
                                  jpeg_quality=e.quality, png_compress_level=e.png_level, **stats)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of result()
            self._drain()
            self._done.set_exception(exc)
        else:
            self._done.set_result(written)

    def _drain(self) -> None:
        """After a failure: give back the queue's room for what is still queued, until the producer ends."""
        while not self._ending_read:
            item = self._items.get()
            self._ending_read = item is _END or item is _ABORT
            if self._ending_read:
                return
            _, future, nbytes = item
            if future is not None:
                future.cancel()
                self._pool.budget.release(nbytes)


_POOLS: dict[tuple[int, int], WriterPool] = {}
_POOLS_LOCK = threading.Lock()


def writer_pool(workers: int | None, queue_mib: int) -> WriterPool:
    """This process's writer pool (`workers` None: one per usable core), shared by its threads and devices."""
    key = (workers or usable_cores(), queue_mib)
    with _POOLS_LOCK:
        if not _POOLS:
            atexit.register(_shut_down_pools)  # before the interpreter tears down what the executor's exit uses
        if key not in _POOLS:
            _POOLS[key] = WriterPool(key[0], queue_mib * 2**20)
        return _POOLS[key]


def _shut_down_pools() -> None:
    for pool in list(_POOLS.values()):
        pool.shutdown()
