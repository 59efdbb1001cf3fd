"""Device settings and the local runner's device pool: every device used, never two tasks on one device at once."""

from __future__ import annotations

import threading
import time

import pytest

from hdiff.devices import DevicePool, check_devices, visible_devices
from hdiff.errors import HdiffError


def run_tasks(pool: DevicePool, tasks: int, workers: int) -> list[tuple[str, float, float]]:
    """`tasks` tasks on `workers` threads, each holding a device for a moment; (device, start, end) of each."""
    ran: list[tuple[str, float, float]] = []
    lock = threading.Lock()
    queue = list(range(tasks))

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                queue.pop()
            with pool.device() as device:
                start = time.monotonic()
                time.sleep(0.01)
                end = time.monotonic()
            with lock:
                ran.append((device, start, end))

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return ran


def overlaps(ran: list[tuple[str, float, float]], device: str) -> int:
    """The most tasks that held `device` at the same moment."""
    spans = [(start, end) for d, start, end in ran if d == device]
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = held = 0
    for _, change in events:
        held += change
        most = max(most, held)
    return most


def test_every_device_works_and_none_is_shared():
    devices = ["cuda:0", "cuda:1", "cuda:2"]
    ran = run_tasks(DevicePool(devices), tasks=24, workers=5)  # more workers than devices: some wait
    assert len(ran) == 24
    assert {device for device, _, _ in ran} == set(devices)
    assert all(overlaps(ran, device) == 1 for device in devices)


def test_slots_let_tasks_share_a_device_up_to_the_limit():
    ran = run_tasks(DevicePool(["cuda:0", "cuda:1"], slots=2), tasks=16, workers=4)
    assert all(1 <= overlaps(ran, device) <= 2 for device in ("cuda:0", "cuda:1"))


def test_auto_is_the_first_gpu_and_all_is_every_gpu_else_the_cpu(monkeypatch):
    import torch

    from hdiff.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert visible_devices("auto") == visible_devices("all") == ["cpu"] and str(resolve_device("auto")) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert visible_devices("auto") == ["cuda:0"] and str(resolve_device("auto")) == "cuda"
    assert visible_devices("all") == ["cuda:0", "cuda:1", "cuda:2"]
    assert visible_devices(["cuda:0", "cuda:3"]) == ["cuda:0", "cuda:3"]
    assert visible_devices("cpu") == ["cpu"]


def test_a_device_the_machine_lacks_is_named_before_work(monkeypatch):
    import torch

    from hdiff.devices import check_present

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_present("cuda:1") == "cuda:1" and check_present("auto") == "auto"
    with pytest.raises(HdiffError, match=r"'cuda:7' is not on this machine, which has GPUs cuda:0..cuda:1"):
        check_present("cuda:7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HdiffError, match="'cuda' is not on this machine, which has no GPU"):
        check_present("cuda")


def test_one_model_copy_cannot_take_every_gpu():
    from hdiff.devices import check_device

    with pytest.raises(HdiffError, match="'all' .* give one device: auto, cpu"):
        check_device("all")


@pytest.mark.parametrize(("setting", "message"), [
    ([], "give a device or a list of devices"),
    (["cuda:0", "gpu1"], "unknown device 'gpu1'; choose one of auto, cpu, cuda, cuda:N, mps"),
    (["auto", "cuda:0"], "'all' and 'auto' stand alone"),
    (["all", "cuda:0"], "'all' and 'auto' stand alone"),
    (["cuda:1", "cuda:1"], "'cuda:1' is listed twice"),
])
def test_bad_device_settings_are_one_line(setting, message):
    with pytest.raises(HdiffError, match=message) as caught:
        check_devices(setting)
    assert "\n" not in str(caught.value)
