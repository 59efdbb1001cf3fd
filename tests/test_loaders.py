"""Training loaders, run through real webdataset on real tars."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from hdiff.data import collate, image_dataset, make_loader, shard_urls
from hdiff.errors import HdiffError

N_SHARDS, PER_SHARD, SIDE = 4, 5, 16

# The README's DataLoader example, verbatim; the test below runs it on a tiny build at out/demo.
README_LOADER = '''
import torch
from hdiff.data import collate, image_dataset, shard_urls

urls = shard_urls("out/demo")  # a build folder, its data/ folder, a glob or a brace pattern
dataset = image_dataset(urls, seed=0, image_size=64)  # shuffled; split by node (RANK/WORLD_SIZE) and worker
loader = torch.utils.data.DataLoader(
    dataset, batch_size=8, num_workers=2, collate_fn=collate, persistent_workers=True
)
for epoch in range(2):
    for images, prompts, records in loader:  # images: (B, 3, 64, 64) float in [0, 1]
        loss = train_step(images, prompts)  # your model here
'''


def write_shards(data_dir: Path, n_shards: int = N_SHARDS, per_shard: int = PER_SHARD) -> list[str]:
    """Tiny shards in the build's layout: __key__, png, txt and json (a record) per sample; returns all keys."""
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    keys = []
    for s in range(n_shards):
        shard = f"shard-{s:05d}"
        with wds.TarWriter(str(data_dir / f"{shard}.tar")) as sink:
            for i in range(per_shard):
                key = f"{shard}-{i:04d}"
                png = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(png, format="PNG")
                prompt = f"a photo of thing {s} {i}"
                record = {"key": key, "shard": shard, "prompt": prompt, "seed": 100 * s + i,
                          "prompt_id": f"p{s}{i}", "cluster_path": [{"node": 0, "size": 1, "from_step": 0}],
                          "unet_rows": 3.5}
                sink.write({"__key__": key, "png": png.getvalue(), "txt": prompt, "json": record})
                keys.append(key)
    return keys


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("build")
    return out, write_shards(out / "data")


@pytest.fixture(autouse=True)
def single_node(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "WORKER", "NUM_WORKERS"):
        monkeypatch.delenv(name, raising=False)


def keys_of(dataset) -> list[str]:
    return [record["key"] for _, _, record in dataset]


def test_shard_urls_accepts_folder_data_folder_glob_and_braces(tmp_path):
    out = tmp_path
    write_shards(out / "data", n_shards=3, per_shard=1)
    expected = [str(out / "data" / f"shard-{s:05d}.tar") for s in range(3)]
    (out / "data" / "shard-00009.tar.0123abcd.partial").write_bytes(b"")  # an interrupted write is no shard
    assert shard_urls(out) == expected
    assert shard_urls(out / "data") == expected
    assert shard_urls(f"{out}/data/shard-*.tar") == expected
    assert shard_urls(f"{out}/data/shard-{{00000..00001}}.tar") == expected[:2]
    with pytest.raises(HdiffError, match="no shards"):
        shard_urls(out / "stats-missing")


def test_one_pass_yields_every_sample_once_as_image_prompt_record(build):
    out, keys = build
    samples = list(image_dataset(out))
    assert sorted(record["key"] for _, _, record in samples) == sorted(keys)
    image, prompt, record = samples[0]
    assert image.shape == (3, SIDE, SIDE) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0
    assert prompt == record["prompt"] and {"seed", "prompt_id", "cluster_path", "unet_rows"} <= record.keys()


def test_image_size_resizes_and_pil_decode_keeps_images(build):
    out, _ = build
    image, _, _ = next(iter(image_dataset(out, image_size=(8, 12))))
    assert image.shape == (3, 8, 12)
    image, _, _ = next(iter(image_dataset(out, image_size=8, decode="pil")))
    assert isinstance(image, Image.Image) and image.size == (8, 8)


def test_shuffle_is_deterministic_per_seed(build):
    out, keys = build
    first = keys_of(image_dataset(out, seed=1))
    assert first == keys_of(image_dataset(out, seed=1))
    assert first != keys_of(image_dataset(out, seed=2))
    assert first != keys  # shuffled at all
    assert keys_of(image_dataset(out, shuffle_shards=False, shuffle_buffer=0)) == keys


def test_split_by_node_partitions_the_shards(build, monkeypatch):
    out, keys = build
    monkeypatch.setenv("WORLD_SIZE", "2")
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        per_rank.append(keys_of(image_dataset(out, seed=3)))
    shards = [{key.rsplit("-", 1)[0] for key in rank_keys} for rank_keys in per_rank]
    assert len(shards[0]) == len(shards[1]) == N_SHARDS // 2
    assert not shards[0] & shards[1]
    assert sorted(per_rank[0] + per_rank[1]) == sorted(keys)


def test_loader_with_two_workers_yields_every_sample_once(build):
    out, keys = build
    loader = make_loader(out, batch_size=3, num_workers=2, seed=4)
    seen = []
    for images, prompts, records in loader:
        assert images.shape == (len(prompts), 3, SIDE, SIDE) and len(records) == len(prompts)
        seen += [record["key"] for record in records]
    assert sorted(seen) == sorted(keys)


def test_resampled_epochs_have_epoch_length_samples(build):
    out, keys = build
    dataset = image_dataset(out, resampled=True, epoch_length=7, seed=5)
    epochs = [keys_of(dataset), keys_of(dataset)]
    assert [len(epoch) for epoch in epochs] == [7, 7]
    assert set(epochs[0] + epochs[1]) <= set(keys)
    assert epochs[0] != epochs[1]  # a new draw each epoch
    assert keys_of(image_dataset(out, resampled=True, epoch_length=7, seed=5)) == epochs[0]
    batches = make_loader(out, batch_size=4, num_workers=2, resampled=True, epoch_length=11, seed=5)
    assert sum(len(prompts) for _, prompts, _ in batches) == 11  # shared among the workers


def test_collate_stacks_images_and_lists_the_rest():
    batch = [(torch.zeros(3, 2, 2), "a", {"k": 1}), (torch.ones(3, 2, 2), "b", {"k": 2})]
    images, prompts, records = collate(batch)
    assert images.shape == (2, 3, 2, 2) and prompts == ["a", "b"] and records == [{"k": 1}, {"k": 2}]


def test_bad_arguments_are_one_line_errors(build):
    out, _ = build
    with pytest.raises(HdiffError, match="resampled"):
        image_dataset(out, epoch_length=5)
    with pytest.raises(HdiffError, match="decode"):
        image_dataset(out, decode="numpy")


def test_readme_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    keys = write_shards(Path("out/demo/data"))
    batches = Counter()

    def train_step(images, prompts):
        assert images.shape[1:] == (3, 64, 64) and images.dtype == torch.float32
        batches[len(prompts)] += 1
        return images.mean()

    exec(README_LOADER, {"train_step": train_step})
    assert sum(size * count for size, count in batches.items()) == 2 * len(keys)

