"""Training loaders: webdataset pipelines over a build's shards yielding (image, prompt, record).

Stages, each a plain webdataset stage:

    shard list ── seeded shard shuffle (same order on every node) ── split by node ── split by worker
      └─ tar samples ── seeded sample shuffle ── decode ── (image, prompt, record)

Resampled mode draws shards with replacement instead, seeded per (seed, epoch, rank, worker), so no splitting is
needed; `epoch_length` cuts its endless stream into epochs of that many samples per node.

Nodes are told apart by webdataset: RANK/WORLD_SIZE from the environment (as torchrun sets them), else
torch.distributed's rank and world size when it is initialized; workers by torch's DataLoader worker info.
Shuffles advance an epoch counter on each pass, so keep DataLoader workers persistent for a new order each epoch.
"""

from __future__ import annotations

import glob
import json
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import webdataset as wds
from braceexpand import braceexpand
from PIL import Image
from torch.utils.data import DataLoader
from webdataset.utils import make_seed, pytorch_worker_info

from hdiff.dataset import layout
from hdiff.errors import HdiffError

IMAGE_KEYS = "png;jpg;jpeg;webp"
Decode = Literal["torch", "pil"]


def shard_urls(source: str | os.PathLike) -> list[str]:
    """Shard paths or URLs, sorted: from a build folder, its data/ folder, a glob, or a brace pattern / URL. A build's
    shard whose every image a filter dropped has no tar, so none is listed; a build with no tar at all is refused."""
    text = os.fspath(source)
    if Path(text).is_dir():
        data = Path(text) / layout.DATA_DIR if (Path(text) / layout.DATA_DIR).is_dir() else Path(text)
        urls = sorted(str(p) for p in data.glob("*.tar") if p.is_file())
        build = data.parent if data == Path(text) and data.name == layout.DATA_DIR else Path(text)  # given data/
        if not urls and (dropped := filtered_everything(build)):
            raise HdiffError(f"{text}: no images to load, a filter dropped every image of the dataset ({dropped}; "
                             f"see {layout.MANIFEST_NAME})")
    elif "://" in text or text.startswith("pipe:"):
        urls = list(braceexpand(text))
    else:
        urls = sorted({path for pattern in braceexpand(text) for path in glob.glob(os.path.expanduser(pattern))})
    if not urls:
        raise HdiffError(f"no shards found at {text}")
    return urls


def filtered_everything(folder: Path) -> str | None:
    """The drops by rule (`oracle_min: 8`) of a build folder whose manifest says a filter dropped every image, else
    None."""
    try:
        totals = json.loads(layout.manifest_path(folder).read_text())["totals"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if totals.get("samples") != 0 or not totals.get("filtered"):
        return None
    return ", ".join(f"{rule}: {count}" for rule, count in totals["filtered"].items())


def image_dataset(
    urls: str | os.PathLike | Sequence[str],
    *,
    shuffle_shards: bool = True,
    shuffle_buffer: int = 1000,
    seed: int = 0,
    resampled: bool = False,
    epoch_length: int | None = None,
    split_by_node: bool = True,
    split_by_worker: bool = True,
    image_size: int | tuple[int, int] | None = None,
    decode: Decode = "torch",
    where: Callable[[dict], bool] | None = None,
) -> wds.DataPipeline:
    """Samples as (image, prompt, record): image a (3, H, W) float tensor in [0, 1] (or a PIL image, decode="pil").

    `urls` is a list of shards or anything shard_urls accepts. Not resampled, one pass yields each sample of this
    node's shards once. Resampled, shards are drawn with replacement forever, or for `epoch_length` samples per
    pass (on each node, shared among DataLoader workers); splitting is then not needed and not done.
    `image_size` (H, W) or a side resizes (bicubic); `shuffle_buffer=0` keeps tar order within a shard.
    `where`, a predicate over the json record, keeps only the samples it accepts, e.g.
    `where=lambda r: r["scores"]["clip"] > 25` (checked before the image is decoded).
    """
    urls = list(urls) if isinstance(urls, (list, tuple)) else shard_urls(urls)
    if decode not in ("torch", "pil"):
        raise HdiffError(f"decode must be 'torch' or 'pil', not {decode!r}")
    if epoch_length is not None and not resampled:
        raise HdiffError("epoch_length needs resampled=True (a plain pass yields each sample once)")
    stages: list[Any] = list(_shard_stages(urls, resampled, shuffle_shards, seed, split_by_node, split_by_worker))
    stages.append(wds.tarfile_to_samples())
    if shuffle_buffer > 0:
        stages.append(SeededShuffle(shuffle_buffer, seed))
    if where is not None:
        stages.append(wds.select(partial(_record_accepted, where)))
    stages += [
        wds.decode("pilrgb"),
        wds.to_tuple(IMAGE_KEYS, "txt", "json"),
        wds.map_tuple(partial(_convert_image, size=image_size, decode=decode), None, None),
    ]
    if epoch_length is not None:
        stages.append(worker_share(epoch_length))
    return wds.DataPipeline(*stages)


def collate(batch: list[tuple[Any, str, dict]]) -> tuple[torch.Tensor | list, list[str], list[dict]]:
    """Stack the images (B, 3, H, W) and keep prompts and records as lists (PIL images stay a list)."""
    images, prompts, records = zip(*batch)
    stacked = torch.stack(images) if isinstance(images[0], torch.Tensor) else list(images)
    return stacked, list(prompts), list(records)


def make_loader(urls: str | os.PathLike | Sequence[str], batch_size: int, num_workers: int = 0, **kw) -> DataLoader:
    """A DataLoader over image_dataset(urls, **kw) yielding (images (B, 3, H, W), prompts, records) batches."""
    dataset = image_dataset(urls, **kw)
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate,
                      persistent_workers=num_workers > 0)


def _shard_stages(urls, resampled, shuffle_shards, seed, split_by_node, split_by_worker) -> Iterator[Any]:
    if resampled:
        yield wds.ResampledShards(urls, seed=seed, deterministic=True)
        return
    yield wds.SimpleShardList(urls)
    if shuffle_shards:  # a full permutation, seeded alike on every node and worker, so the splits below partition it
        yield wds.detshuffle(bufsize=len(urls), initial=len(urls), seed=seed)
    if split_by_node:
        yield wds.split_by_node
    if split_by_worker:
        yield wds.split_by_worker


class SeededShuffle(wds.PipelineStage):
    """Buffered sample shuffle seeded by (seed, epoch, rank, worker): reproducible, and distinct per worker."""

    def __init__(self, bufsize: int, seed: int):
        self.bufsize = bufsize
        self.seed = seed
        self.epoch = -1  # advanced on each pass, as wds.detshuffle does

    def run(self, src: Iterable) -> Iterator:
        self.epoch += 1
        rank, _, worker, _ = pytorch_worker_info()
        rng = random.Random(make_seed(self.seed, self.epoch, rank, worker))
        return wds.shuffle(self.bufsize, initial=min(100, self.bufsize), rng=rng)(iter(src))


def _record_accepted(where: Callable[[dict], bool], sample: dict) -> bool:
    """`where` over a raw sample's json record."""
    return bool(where(json.loads(sample["json"])))


def _worker_share(src: Iterable, total: int) -> Iterator:
    """This DataLoader worker's share of `total` samples, so that all workers together yield exactly `total`."""
    _, _, worker, num_workers = pytorch_worker_info()
    yield from islice(src, total // num_workers + (worker < total % num_workers))


worker_share = wds.pipelinefilter(_worker_share)


def _convert_image(
    image: Image.Image, size: int | tuple[int, int] | None, decode: Decode
) -> torch.Tensor | Image.Image:
    """PIL RGB image -> resized to (H, W) if asked -> (3, H, W) float tensor in [0, 1], or left a PIL image."""
    height, width = (size, size) if isinstance(size, int) else size or (image.height, image.width)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    if decode == "pil":
        return image
    array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)
