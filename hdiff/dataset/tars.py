"""Reading WebDataset tars as hdiff writes them (hdiff.dataset.writer): samples as runs of members sharing a key."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def tar_samples(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) for each run of consecutive members sharing a key; raises on a damaged tar."""
    key, files = None, {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            member_key, _, extension = base.partition(".")
            if member_key != key and key is not None:
                yield key, files
                files = {}
            key = member_key
            files[extension] = tar.extractfile(member).read()
    if key is not None:
        yield key, files


def tar_keys(path: Path) -> list[str]:
    """Sample keys in a tar, in order, without reading member data. Raises tarfile.TarError or OSError if damaged."""
    keys: list[str] = []
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            key = member.name.rsplit("/", 1)[-1].split(".", 1)[0]
            if not keys or keys[-1] != key:
                keys.append(key)
    return keys


def tar_records(path: Path) -> list[dict[str, Any]]:
    """The json record of every sample in a tar, in order."""
    with tarfile.open(path, "r:") as tar:
        return [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith(".json")]
