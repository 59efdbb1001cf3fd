"""Natural-image content of any square size, deterministic and offline: crops of scikit-learn's two sample photos.

Encoding time and size depend on what is encoded, and random-weight decoders give noise, so the encoder and build
benchmarks encode photos. A 512-px image is a 427-px crop scaled by 1.2; a 1024-px image is four such 512-px tiles
(different crops, some mirrored), so that detail per pixel stays near the photos' own at both sizes.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

CROP = 427  # the photos' height
OFFSETS = (0, 71, 142, 213)  # horizontal crop offsets (the photos are 640 wide)


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[Image.Image, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(Image.fromarray(array) for array in load_sample_images().images)  # china.jpg, flower.jpg


def _tile(index: int, size: int) -> np.ndarray:
    """Tile `index` (any int): photo, crop offset and mirroring from its bits; (size, size, 3) uint8."""
    photos = _photos()
    photo = photos[index % len(photos)]
    x = OFFSETS[(index // len(photos)) % len(OFFSETS)]
    tile = photo.crop((x, 0, x + CROP, CROP)).resize((size, size), Image.LANCZOS)
    if (index // (len(photos) * len(OFFSETS))) % 2:
        tile = tile.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(tile)


def natural_image(index: int, size: int) -> np.ndarray:
    """Image `index` of side `size` px (a multiple of 2), uint8 (size, size, 3); 16 distinct images, then repeats."""
    if size <= 512:
        return _tile(index, size)
    half = size // 2
    tiles = [_tile(index + 5 * k, half) for k in range(4)]
    return np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)


def natural_images(count: int, size: int) -> list[np.ndarray]:
    return [natural_image(i, size) for i in range(count)]
