"""Image bytes from pixels: one fixed set of encoder settings per format, so the same pixels give the same bytes.

Light on purpose (PIL and numpy only): the writer pool's encoder processes import this module and nothing else of
hdiff's dataset code. Measured costs per format and PNG level are in docs/speed.md (`hdiff bench encode`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from hdiff.errors import HdiffError

ImageFormat = Literal["png", "jpg", "webp"]
IMAGE_FORMATS: tuple[str, ...] = ("png", "jpg", "webp")
DEFAULT_PNG_LEVEL = 1  # docs/speed.md: a third of level 6's time for 6-10% more bytes, the same pixels
LEGACY_PNG_LEVEL = 6  # what hdiff wrote before the level was a setting


@dataclass(frozen=True)
class Encoding:
    """How a shard's images become bytes: the format, the lossy formats' quality, and PNG's zlib level (0-9;
    lossless at every level: the level trades time for size, never pixels)."""

    image_format: ImageFormat = "png"
    quality: int = 95  # jpg and webp
    png_level: int = DEFAULT_PNG_LEVEL

    def __post_init__(self) -> None:
        if self.image_format not in IMAGE_FORMATS:
            raise HdiffError(f"image format {self.image_format!r} is not one of {', '.join(IMAGE_FORMATS)}")
        if not 1 <= self.quality <= 100:
            raise HdiffError(f"image quality must be 1-100, got {self.quality}")
        if not 0 <= self.png_level <= 9:
            raise HdiffError(f"png compress level must be 0-9, got {self.png_level}")

    def encode(self, image: np.ndarray | Image.Image) -> bytes:
        """Deterministic encoded bytes of `image` (uint8 (H, W, 3) or a PIL image; no metadata carried over)."""
        rgb = as_rgb_image(image)
        if self.image_format == "png":
            return _save(rgb, format="PNG", compress_level=self.png_level, optimize=False)
        if self.image_format == "jpg":
            return _save(rgb, format="JPEG", quality=self.quality, subsampling=0, optimize=False, progressive=False)
        return _save(rgb, format="WEBP", quality=self.quality, method=4, lossless=False)


def encode(image: np.ndarray | Image.Image, encoding: Encoding) -> bytes:
    """`encoding.encode(image)` as a module-level function (what a process pool pickles by name)."""
    return encoding.encode(image)


def as_rgb_image(image: np.ndarray | Image.Image) -> Image.Image:
    """A fresh RGB PIL image with no metadata (EXIF, ICC, text chunks) carried over."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise HdiffError(f"an image must be uint8 (H, W, 3); got {array.dtype} {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def _save(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()
