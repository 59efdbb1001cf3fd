"""The writer pool (hdiff.dataset.shard_writer): shards encoded in worker processes and written beside sampling are
byte for byte those write_shard writes serially; its queue stays within its bound; a failure leaves nothing under a
final name and gives the queue's room back."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from hdiff.dataset import layout
from hdiff.dataset.encoding import Encoding
from hdiff.dataset.shard_writer import ByteBudget, WriterPool
from hdiff.dataset.update import DeviceTime
from hdiff.dataset.writer import Sample, shard_is_complete, write_shard
from hdiff.devices import DevicePool
from hdiff.errors import HdiffError
from hdiff.records import ImageRecord

SIZE = 48


@pytest.fixture(scope="module")
def pool():
    pool = WriterPool(workers=2, queue_bytes=3 * SIZE * SIZE * 3)  # room for three images
    yield pool
    pool.shutdown()


def samples(n: int, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image = (rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
        record = ImageRecord(prompt=f"prompt {i}", prompt_id=f"p{i:04d}", copy_index=0, seed=i, model="m",
                             scheduler="s", steps=2, evaluations=2, guidance_scale=1.0, tau=1.0, schedule="linear",
                             height=SIZE, width=SIZE, noise_device="cpu", node_condition="mean", cluster_path=[],
                             split_evaluation=0, shared_evaluations=0, unet_rows=1.0, standard_unet_rows=2)
        out.append(Sample(f"key{i:03d}", image, f"prompt {i}", record.model_dump(mode="json")))
    return out


@pytest.mark.parametrize("encoding", [Encoding("png", png_level=1), Encoding("png", png_level=6),
                                      Encoding("jpg", quality=90), Encoding("webp")], ids=str)
def test_pool_writes_the_serial_tar_and_stats_last(pool, tmp_path, encoding):
    serial, pooled = tmp_path / "serial", tmp_path / "pooled"
    items = samples(8)
    write_shard(serial, "shard-00", items, image_format=encoding.image_format, jpeg_quality=encoding.quality,
                png_compress_level=encoding.png_level)
    sink = pool.open_shard(pooled, "shard-00", encoding, device_seconds=1.5, device="cuda:0")
    for sample in items:
        sink.add(sample)
    assert not layout.stats_path(pooled, "shard-00").exists() or sink.result()  # no done-marker before the end
    sink.close()
    stats = sink.result()
    assert layout.tar_path(pooled, "shard-00").read_bytes() == layout.tar_path(serial, "shard-00").read_bytes()
    assert shard_is_complete(pooled, "shard-00") and stats.keys == [s.key for s in items]
    assert stats.device == "cuda:0" and stats.device_seconds == 1.5 and stats.image_format == encoding.image_format
    assert pool.budget.used == 0


def test_the_queue_never_holds_more_than_its_bound(pool, tmp_path):
    """Three shards fed at once from three threads: the images queued never exceed the bound (three images)."""
    pool.budget.peak = 0
    sinks = [pool.open_shard(tmp_path, f"shard-{i:02d}", Encoding("png", png_level=9)) for i in range(3)]

    def feed(sink, seed):
        for sample in samples(10, seed):
            sink.add(sample)
        sink.close()

    threads = [threading.Thread(target=feed, args=(sink, i)) for i, sink in enumerate(sinks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [sink.result().samples for sink in sinks] == [10, 10, 10]
    assert 0 < pool.budget.peak <= pool.budget.limit and pool.budget.used == 0


def test_a_bad_sample_fails_its_shard_alone_and_gives_the_room_back(pool, tmp_path):
    items = samples(6)
    bad = Sample("key002", items[2].image, "another prompt", items[2].record)  # the prompt differs from the record
    sink = pool.open_shard(tmp_path, "shard-bad", Encoding())
    with pytest.raises(HdiffError, match="prompt differs"):
        for sample in [*items[:2], bad, *items[3:]]:
            sink.add(sample)
            time.sleep(0.05)  # the writer meets the bad sample before the producer ends
        sink.close()
        sink.result()
    sink.abort()
    assert list(tmp_path.rglob("*")) == [] or not any(p.is_file() for p in tmp_path.rglob("*"))
    deadline = time.monotonic() + 10
    while pool.budget.used and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.budget.used == 0


def test_an_aborted_shard_leaves_nothing(pool, tmp_path):
    sink = pool.open_shard(tmp_path, "shard-aborted", Encoding())
    for sample in samples(3):
        sink.add(sample)
    sink.abort()
    with pytest.raises(HdiffError, match="stopped before its last sample"):
        sink.result()
    assert not any(path.is_file() for path in tmp_path.rglob("*"))
    assert pool.budget.used == 0


def test_byte_budget_lets_one_oversized_item_through_alone():
    budget = ByteBudget(10)
    assert budget.acquire(25) < 0.1  # nothing held: it passes
    released = threading.Timer(0.2, budget.release, args=(25,))
    released.start()
    assert budget.acquire(5) >= 0.15  # waited for the room
    assert budget.peak == 25


def test_device_pool_claims_say_how_long_the_device_stood_idle():
    pool = DevicePool(["cuda:0"])
    with pool.claim() as first:
        assert first.idle_before_s == 0.0
    time.sleep(0.2)
    with pool.claim() as second:
        assert second.device == "cuda:0" and second.idle_before_s >= 0.15


def test_the_summary_notes_a_device_that_waited_for_the_cpu():
    assert DeviceTime("png", 6, held_s=100.0, waited_s=1.0).cpu_note() is None  # 1%: not worth a line
    note = DeviceTime("png", 6, held_s=90.0, waited_s=10.0).cpu_note()
    assert note.startswith("the device waited 10.0 s of 100.0 s (10%)") and "png_compress_level (now 6)" in note
    assert DeviceTime("jpg", 6, held_s=1.0, waited_s=1.0).cpu_note().endswith("jpg images: more CPU cores (runner.encode_workers) would help")
