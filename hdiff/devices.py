"""Device names hdiff accepts, checked where a setting is read, and resolved to torch devices where models load.

The names mean the same in every command: "auto" is the first GPU of the machine, else the CPU (one model copy);
"all" is every GPU of the machine, one model copy each, else the CPU (a build spreads its shards over them;
`hdiff generate`, which runs one model copy, refuses it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import time
from collections.abc import Iterator

from hdiff.errors import HdiffError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")  # one device
POOL_CHOICES = ("all", *DEVICE_CHOICES)  # a build's devices: also "all", or a list
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device: str) -> str:
    """`device` if it names one device hdiff can run on; HdiffError listing the choices otherwise."""
    if device == "all":
        raise HdiffError("'all' (every GPU) needs a build, which runs one model copy per device; give one device: "
                         f"{', '.join(DEVICE_CHOICES)}")
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise HdiffError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    return device


def resolve_device(device: str = "auto"):
    """The torch device for a device name: "auto" is the first GPU if there is one, else the CPU."""
    import torch

    if check_device(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_present(device: str) -> str:
    """`device` if this machine has it (a device name: "auto" always); HdiffError naming what it has otherwise."""
    import torch

    kind, _, index = check_device(device).partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count <= int(index or 0):
            has = f"GPUs cuda:0..cuda:{count - 1}" if count else "no GPU"
            raise HdiffError(f"device {device!r} is not on this machine, which has {has}")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise HdiffError("device 'mps' is not on this machine")
    return device


def check_devices(setting: str | list[str]) -> str | list[str]:
    """`setting` if it is "all", a device name or a list of distinct ones; HdiffError otherwise."""
    names = [setting] if isinstance(setting, str) else setting
    if not isinstance(names, list) or not names:
        raise HdiffError(f"give a device or a list of devices ({', '.join(POOL_CHOICES)}), got {setting!r}")
    if names == ["all"]:
        return setting
    if "all" in names or ("auto" in names and len(names) > 1):
        raise HdiffError("'all' and 'auto' stand alone; list devices without them")
    for name in names:
        check_device(name)
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise HdiffError(f"device {repeated[0]!r} is listed twice; a device runs one model copy")
    return setting


def visible_devices(setting: str | list[str]) -> list[str]:
    """The devices a setting names: "all" is every visible GPU (cuda:0, cuda:1, ...), "auto" the first, each the
    CPU without one."""
    import torch

    names = [setting] if isinstance(setting, str) else list(setting)
    if names in (["all"], ["auto"]):
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return ([f"cuda:{i}" for i in range(gpus)] or ["cpu"])[:None if names == ["all"] else 1]
    return names


@dataclasses.dataclass(frozen=True)
class Claim:
    """A device held by a task, and how long that device stood idle before this task took it (0.0 for its first
    task): time it waited for a task that was busy elsewhere, e.g. on the CPU."""

    device: str
    idle_before_s: float


class DevicePool:
    """Hands devices to concurrent tasks: a task holds a device for as long as it runs, and a device is held by at
    most `slots` tasks at once (1: no two tasks share a device). A task waits while every device is taken."""

    def __init__(self, devices: list[str], slots: int = 1):
        if not devices or slots < 1:
            raise HdiffError(f"a device pool needs devices and slots >= 1, got {devices!r} × {slots}")
        self.devices = list(devices)
        self._free = dict.fromkeys(self.devices, slots)
        self._released: dict[str, list[float]] = {name: [] for name in self.devices}  # when a slot was given back
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def device(self) -> Iterator[str]:
        """Hold the least busy free device (the first listed on ties) for the block."""
        with self.claim() as held:
            yield held.device

    @contextlib.contextmanager
    def claim(self) -> Iterator[Claim]:
        """`device()`, and how long the slot taken had been free."""
        with self._changed:
            self._changed.wait_for(lambda: any(self._free.values()))
            name = max(self.devices, key=self._free.__getitem__)
            self._free[name] -= 1
            released = self._released[name]
            idle = time.perf_counter() - released.pop(0) if released else 0.0
        try:
            yield Claim(name, idle)
        finally:
            with self._changed:
                self._free[name] += 1
                self._released[name].append(time.perf_counter())
                self._changed.notify()
