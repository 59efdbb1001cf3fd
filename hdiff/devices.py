"""Device names hdiff accepts, checked where a setting is read, and resolved to torch devices where models load."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator

from hdiff.errors import HdiffError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device: str) -> str:
    """`device` if it names a device hdiff can run on; HdiffError listing the choices otherwise."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise HdiffError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    return device


def resolve_device(device: str = "auto"):
    """The torch device for a device name: "auto" is the first GPU if there is one, else the CPU."""
    import torch

    if check_device(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_devices(setting: str | list[str]) -> str | list[str]:
    """`setting` if it is a device name or a list of distinct ones ("auto" alone); HdiffError otherwise."""
    names = [setting] if isinstance(setting, str) else setting
    if not isinstance(names, list) or not names:
        raise HdiffError(f"give a device or a list of devices ({', '.join(DEVICE_CHOICES)}), got {setting!r}")
    for name in names:
        check_device(name)
    if len(names) > 1 and "auto" in names:
        raise HdiffError("'auto' means every GPU of the machine; list devices without it")
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise HdiffError(f"device {repeated[0]!r} is listed twice; a device runs one model copy")
    return setting


def visible_devices(setting: str | list[str]) -> list[str]:
    """The devices a setting names: "auto" is every visible GPU (cuda:0, cuda:1, ...), or the CPU without one."""
    import torch

    names = [setting] if isinstance(setting, str) else list(setting)
    if names == ["auto"]:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(gpus)] or ["cpu"]
    return names


class DevicePool:
    """Hands devices to concurrent tasks: a task holds a device for as long as it runs, and a device is held by at
    most `slots` tasks at once (1: no two tasks share a device). A task waits while every device is taken."""

    def __init__(self, devices: list[str], slots: int = 1):
        if not devices or slots < 1:
            raise HdiffError(f"a device pool needs devices and slots >= 1, got {devices!r} × {slots}")
        self.devices = list(devices)
        self._free = dict.fromkeys(self.devices, slots)
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def device(self) -> Iterator[str]:
        """Hold the least busy free device (the first listed on ties) for the block."""
        with self._changed:
            self._changed.wait_for(lambda: any(self._free.values()))
            name = max(self.devices, key=self._free.__getitem__)
            self._free[name] -= 1
        try:
            yield name
        finally:
            with self._changed:
                self._free[name] += 1
                self._changed.notify()
