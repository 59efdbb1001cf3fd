"""Device names hdiff accepts, checked where a setting is read, and resolved to torch devices where models load."""

from __future__ import annotations

import re

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
