"""The exact oracle: reads a shapes-world image back into attributes and checks them against a scene.

Steps of `detect`:
1. background = per-channel median of the border pixels, named by the nearest colour;
2. each pixel is put on the blend line bg → c of the named colour c whose line passes closest, with opacity
   α = ((p − bg)·(c − bg)) / |c − bg|² (the renderer's blend, inverted); object pixels are those with α > ½,
   so a blur that spreads an object's edge by a pixel neither joins neighbours nor changes sizes, whatever the
   contrast; connected same-colour groups smaller than MIN_AREA are noise;
3. each object's colour = mean of its opaque pixels, named by the nearest colour; its α map along that measured
   colour feeds step 4;
4. per blob: size from the longer bounding-box side, position from the box centre (nearest named place), shape
   from template matching: the blob's α map against each shape's coverage at sides 7–16 px, clean and lightly
   blurred, shifted up to two pixels around the box centre; the smallest squared difference names the shape.
`score` then matches the scene's objects to blobs, choosing the assignment that gets most attributes right.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from hdiff.shapes.phrasings import read
from hdiff.shapes.world import COLORS, IMAGE_SIZE, POSITIONS, SHAPES, SIZE_PX, Obj, Request, Scene, shape_coverage

ATTRIBUTES = ("background", "color", "shape", "size", "position", "count")
OBJECT_ATTRIBUTES = ("shape", "color", "size", "position")
MIN_AREA = 12  # pixels; the smallest object (a small triangle) covers 32
WINDOW = 20  # template side, pixels: the largest template (16 px) and its blurred rim, with a margin
TEMPLATE_SIDES = tuple(range(7, 17))
MAX_SHIFT = 2
SIZE_THRESHOLD_PX = (SIZE_PX["small"] + SIZE_PX["large"]) / 2
_PALETTE_NAMES = tuple(COLORS)
_PALETTE = np.array([COLORS[name] for name in _PALETTE_NAMES], dtype=np.float64)  # (K, 3)
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class Blob:
    """One detected object: its attributes as names, and where it is in pixels."""

    shape: str
    color: str
    size: str
    position: str
    centre: tuple[float, float]  # (x, y) of the bounding-box centre, pixels
    area: int


@dataclass(frozen=True)
class Detection:
    """What an image shows: the background's name and its objects, largest first."""

    background: str
    blobs: tuple[Blob, ...]


def score(image: np.ndarray, scene: Scene | Request) -> dict[str, bool]:
    """Per-attribute correctness of `image` against `scene`; an object attribute is right only if every object's is.

    Against a Request (a one-object prompt that names some attributes) only what it names is scored, and the count
    (one object)."""
    if isinstance(scene, Request):
        named = scene.named
        wanted = tuple(a for a in ATTRIBUTES if a in named or a == "count")
        background, objects = named.get("background"), (_Wanted(**{a: named.get(a) for a in OBJECT_ATTRIBUTES}),)
    else:
        wanted, background, objects = ATTRIBUTES, scene.background, scene.objects
    detection = detect(image)
    matched = _best_match(objects, detection.blobs)
    result = {"background": detection.background == background}
    for attribute in OBJECT_ATTRIBUTES:
        result[attribute] = all(
            blob is not None and getattr(blob, attribute) == getattr(obj, attribute)
            for obj, blob in zip(objects, matched)
        )
    result["count"] = len(detection.blobs) == len(objects)
    return {attribute: result[attribute] for attribute in wanted}


@dataclass(frozen=True)
class _Wanted:
    """A requested object: an attribute the prompt leaves open is None and matches no blob."""

    shape: str | None
    color: str | None
    size: str | None
    position: str | None


def score_prompt(image: np.ndarray, prompt: str) -> dict[str, bool] | None:
    """`score` against what the prompt names (hdiff.shapes.phrasings.read), or None when it names nothing the
    oracle can check (no attribute of the world, or two objects outside the template grammar)."""
    target = read(prompt)
    return None if target is None else score(image, target)


def all_correct(result: dict[str, bool]) -> bool:
    """True when every scored attribute is right."""
    return all(result.values())


def _best_match(objects: tuple[Obj | _Wanted, ...], blobs: tuple[Blob, ...]) -> tuple[Blob | None, ...]:
    """The blob for each object (None where blobs ran out), maximizing the number of matching attributes."""
    slots: list[Blob | None] = list(blobs) + [None] * len(objects)

    def agreement(assignment: tuple[Blob | None, ...]) -> int:
        return sum(
            blob is not None and getattr(blob, attribute) == getattr(obj, attribute)
            for obj, blob in zip(objects, assignment)
            for attribute in OBJECT_ATTRIBUTES
        )

    candidates = itertools.permutations(slots, len(objects))
    return max(candidates, key=agreement)


def detect(image: np.ndarray) -> Detection:
    """The background and objects in a (32, 32, 3) image, uint8 or float in [0, 1]."""
    background, regions = _segment(image)
    blobs = sorted((_classify(region) for region in regions), key=lambda blob: -blob.area)
    return Detection(background, tuple(blobs))


@dataclass(frozen=True)
class _Region:
    """One object's pixels, measured but not yet named: box (top, bottom, left, right), half-open."""

    color: str
    box: tuple[int, int, int, int]
    area: int
    alpha: np.ndarray  # (H, W) the object's opacity, zero away from it


def _segment(image: np.ndarray) -> tuple[str, list[_Region]]:
    """Steps 1–3: the background's name and each object's region."""
    pixels = _as_float255(image)  # (H, W, 3)
    background = np.median(_border(pixels), axis=0)  # (3,)
    background_name = _nearest_color(background)
    offsets = pixels - background  # (H, W, 3)
    line, alpha = _nearest_line(offsets, background, background_name)  # (H, W), (H, W)
    regions = []
    for k in np.unique(line[alpha > 0.5]):
        labels, _ = ndimage.label((line == k) & (alpha > 0.5), structure=_FOUR_CONNECTED)
        for index, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
            if (rows.stop - rows.start) * (cols.stop - cols.start) < MIN_AREA:
                continue  # filled, it stays inside its box: too small (noise makes hundreds of these an image)
            mask = ndimage.binary_fill_holes(labels == index)
            if mask.sum() >= MIN_AREA:
                regions.append(_region(offsets, background, mask, alpha))
    return background_name, regions


def _nearest_line(offsets: np.ndarray, background: np.ndarray, background_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the named colour whose blend line from the background passes closest, and the opacity along it."""
    others = [k for k, name in enumerate(_PALETTE_NAMES) if name != background_name]
    directions = _PALETTE[others] - background  # (K, 3)
    alphas = np.einsum("hwc,kc->hwk", offsets, directions) / (directions**2).sum(axis=1)  # (H, W, K)
    alphas = np.clip(alphas, 0.0, None)
    residuals = np.linalg.norm(offsets[:, :, None, :] - alphas[..., None] * directions, axis=-1)  # (H, W, K)
    nearest = residuals.argmin(axis=-1)  # (H, W)
    return nearest, np.take_along_axis(alphas, nearest[..., None], axis=-1)[..., 0]


def _region(offsets: np.ndarray, background: np.ndarray, mask: np.ndarray, line_alpha: np.ndarray) -> _Region:
    """An object's colour (mean of its opaque interior), box, and opacity map along its own measured colour."""
    interior = mask & (line_alpha > 0.75)
    color = background + offsets[interior if interior.sum() >= MIN_AREA // 2 else mask].mean(axis=0)  # (3,)
    contrast = color - background
    alpha = np.clip(np.einsum("hwc,c->hw", offsets, contrast) / max(float(contrast @ contrast), 1.0), 0.0, 1.0)
    top, bottom = _trimmed_span(mask.sum(axis=1))
    left, right = _trimmed_span(mask.sum(axis=0))
    near = ndimage.binary_dilation(mask, iterations=1)
    return _Region(_nearest_color(color), (top, bottom, left, right), int(mask.sum()), np.where(near, alpha, 0.0))


def _as_float255(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"expected a ({IMAGE_SIZE}, {IMAGE_SIZE}, 3) image, got {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float64)
    return np.clip(image.astype(np.float64), 0.0, 1.0) * 255.0


def _border(pixels: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels, (4·(S−1), 3)."""
    return np.concatenate([pixels[0, :], pixels[-1, :], pixels[1:-1, 0], pixels[1:-1, -1]])


def _nearest_color(rgb: np.ndarray) -> str:
    return _PALETTE_NAMES[int(np.argmin(np.linalg.norm(_PALETTE - rgb, axis=-1)))]


def _trimmed_span(counts: np.ndarray) -> tuple[int, int]:
    """[first, last + 1) of the lines holding at least two mask pixels: a lone noisy pixel does not widen a box."""
    lines = np.flatnonzero(counts >= 2)
    if lines.size == 0:
        lines = np.flatnonzero(counts)
    return int(lines[0]), int(lines[-1]) + 1


def _classify(region: _Region) -> Blob:
    """Step 4: name the region's shape, size and position."""
    top, bottom, left, right = region.box
    centre = ((left + right) / 2, (top + bottom) / 2)
    return Blob(
        shape=_match_shape(region.alpha, centre),
        color=region.color,
        size="small" if max(bottom - top, right - left) < SIZE_THRESHOLD_PX else "large",
        position=_nearest_position(centre),
        centre=centre,
        area=region.area,
    )


def _nearest_position(centre: tuple[float, float]) -> str:
    x, y = centre[0] / IMAGE_SIZE, centre[1] / IMAGE_SIZE
    return min(POSITIONS, key=lambda name: (POSITIONS[name][0] - x) ** 2 + (POSITIONS[name][1] - y) ** 2)


def _match_shape(alpha: np.ndarray, centre: tuple[float, float]) -> str:
    """The shape whose template, at the best side and shift, has the smallest squared difference to `alpha`."""
    shapes, templates = _shape_templates()  # (N,), (N, WINDOW²)
    half = WINDOW // 2
    padded = np.pad(alpha, half + MAX_SHIFT + 1)
    x0, y0 = (int(np.floor(c)) + half + MAX_SHIFT + 1 for c in centre)  # window centre in padded coordinates
    shifts = range(-MAX_SHIFT, MAX_SHIFT + 1)
    windows = np.stack(
        [
            padded[y0 + dy - half : y0 + dy + half, x0 + dx - half : x0 + dx + half].ravel()
            for dy, dx in itertools.product(shifts, shifts)
        ]
    ).astype(np.float32)  # (shifts², WINDOW²)
    cross = np.einsum("nk,sk->ns", templates, windows)  # einsum, not BLAS: tiny products, busy shared cores
    squared = (templates**2).sum(axis=1)[:, None] - 2 * cross + (windows**2).sum(axis=1)[None, :]  # (N, shifts²)
    return shapes[int(np.argmin(squared.min(axis=1)))]


@functools.cache
def _shape_templates() -> tuple[tuple[str, ...], np.ndarray]:
    """Coverage of every shape at every template side, clean and as a light blur leaves it: (names, (N, WINDOW²))."""
    names, templates = [], []
    for shape, side, blur in itertools.product(SHAPES, TEMPLATE_SIDES, _TEMPLATE_BLURS):
        coverage = shape_coverage(shape, (WINDOW / 2, WINDOW / 2), side, canvas=WINDOW)  # (WINDOW, WINDOW)
        names.append(shape)
        templates.append(blur(coverage).ravel())
    stacked = np.stack(templates).astype(np.float32)
    stacked[stacked < 1e-6] = 0.0  # a Gaussian's far tail is subnormal, and subnormals make products 100× slower
    return tuple(names), stacked


_TEMPLATE_BLURS = (
    lambda coverage: coverage,
    lambda coverage: ndimage.uniform_filter(coverage, size=3, mode="constant"),
    lambda coverage: ndimage.gaussian_filter(coverage, sigma=0.7, mode="constant"),
)


def accuracy_figures(results: list[dict[str, bool]]) -> dict[str, float | int]:
    """`all`: the share of images whose every scored attribute is right; per attribute, its share right among the
    images it was scored on; `n`: the images scored."""
    figures: dict[str, float | int] = {"all": float(np.mean([all_correct(r) for r in results])), "n": len(results)}
    for attribute in ATTRIBUTES:
        scored = [r[attribute] for r in results if attribute in r]
        if scored:
            figures[attribute] = float(np.mean(scored))
    return figures


def prompt_accuracy(samples) -> dict[str, float | int] | None:
    """The oracle's accuracy on (image, prompt) pairs, each image scored on what its prompt names
    (`score_prompt`); `unscored` counts the prompts it cannot read. None when it can read none."""
    results, unscored = [], 0
    for image, prompt in samples:
        result = score_prompt(image, prompt)
        if result is None:
            unscored += 1
        else:
            results.append(result)
    return {**accuracy_figures(results), "unscored": unscored} if results else None
