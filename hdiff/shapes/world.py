"""The shapes world: scenes of one or two flat shapes on a plain background, and a deterministic renderer.

A scene is pure data (`Scene`, `Obj`); `render` draws it as a 32×32 RGB image with exact area anti-aliasing
(4×4 supersampling), so the same scene always gives the same bytes. Geometry is chosen so that every attribute
stays distinguishable at this size: a small object is 8 px across and a large one 14 px; the four corner places
are 16 px apart, so two large objects in neighbouring corners keep a 2 px gap. A large object in the centre would
overlap any corner object, so two-object scenes use two of the four corners.

The train / held-out split is by attribute combination: a stable hash of (shape, color, size, position,
background) puts about 15% of the one-object combinations in `heldout`, and the trainer never sees them.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
# Near the corners of the RGB cube: every pair is at least ~170 apart (of 441), so colour survives noise and blur.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 50, 230),
    "yellow": (240, 220, 30),
    "cyan": (40, 220, 225),
    "magenta": (220, 40, 210),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
BACKGROUNDS: tuple[str, ...] = ("white", "black", "red", "green", "blue", "yellow")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: dict[str, tuple[float, float]] = {  # name -> (x, y) of the object's bounding-box centre, y down
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
    "center": (0.5, 0.5),
}
CORNERS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
IMAGE_SIZE = 32
SIZE_PX: dict[str, float] = {"small": 8.0, "large": 14.0}  # bounding-box side in pixels
HELDOUT_FRACTION = 0.15
SUPERSAMPLE = 4

Split = Literal["train", "heldout"]
REQUEST_ATTRIBUTES: tuple[str, ...] = ("background", "shape", "color", "size", "position")


@dataclass(frozen=True)
class Obj:
    """One object: every field is a name from the world's vocabulary."""

    shape: str
    color: str
    size: str
    position: str

    def __post_init__(self) -> None:
        for value, vocabulary in (
            (self.shape, SHAPES),
            (self.color, COLORS),
            (self.size, SIZES),
            (self.position, POSITIONS),
        ):
            if value not in vocabulary:
                raise ValueError(f"{value!r} is not one of {sorted(vocabulary)}")


@dataclass(frozen=True)
class Scene:
    """A background and one or two objects; an object never has the background's colour or another's place."""

    background: str
    objects: tuple[Obj, ...]

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background {self.background!r} is not one of {list(BACKGROUNDS)}")
        if len(self.objects) not in (1, 2):
            raise ValueError(f"a scene has 1 or 2 objects, not {len(self.objects)}")
        if any(obj.color == self.background for obj in self.objects):
            raise ValueError(f"an object has the background's colour {self.background!r}")
        if len(self.objects) == 2:
            first, second = self.objects
            if first.position == second.position:
                raise ValueError(f"two objects at the same place {first.position!r}")
            if not {first.position, second.position} <= set(CORNERS):
                raise ValueError("two-object scenes place both objects in corners")


def render(scene: Scene) -> np.ndarray:
    """The scene as a (32, 32, 3) uint8 image; objects are drawn in order over the background."""
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float64)
    image[:] = COLORS[scene.background]
    for obj in scene.objects:
        centre_x, centre_y = (coord * IMAGE_SIZE for coord in POSITIONS[obj.position])
        coverage = shape_coverage(obj.shape, (centre_x, centre_y), SIZE_PX[obj.size])[..., None]  # (H, W, 1)
        image = image * (1.0 - coverage) + np.asarray(COLORS[obj.color], dtype=np.float64) * coverage
    return np.rint(image).astype(np.uint8)


def shape_coverage(shape: str, centre: tuple[float, float], side: float, canvas: int = IMAGE_SIZE) -> np.ndarray:
    """Fraction of each pixel inside a shape whose bounding box of side `side` px is centred at `centre` = (x, y).

    Returns (canvas, canvas) in [0, 1], averaged over a SUPERSAMPLE² grid of sample points per pixel.
    """
    offsets = (np.arange(canvas * SUPERSAMPLE) + 0.5) / SUPERSAMPLE  # sample coordinates in pixel units
    dx = offsets[None, :] - centre[0]
    dy = offsets[:, None] - centre[1]
    inside = _SHAPE_TESTS[shape](dx, dy, side / 2)  # (canvas·S, canvas·S)
    return inside.reshape(canvas, SUPERSAMPLE, canvas, SUPERSAMPLE).mean(axis=(1, 3))


def _circle(dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    return dx**2 + dy**2 <= half**2


def _square(dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    return (np.abs(dx) <= half) & (np.abs(dy) <= half)


def _triangle(dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Apex up, base down, as wide as tall: half-width at height dy is (dy + half) / 2."""
    return (np.abs(dy) <= half) & (np.abs(dx) <= (dy + half) / 2)


def _cross(dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """A plus sign whose arms are a third of its width."""
    arm = half / 3
    within = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    return within & ((np.abs(dx) <= arm) | (np.abs(dy) <= arm))


_SHAPE_TESTS = {"circle": _circle, "square": _square, "triangle": _triangle, "cross": _cross}


def all_one_object_scenes() -> list[Scene]:
    """Every valid one-object scene, ordered by background, shape, colour, size, position."""
    return [
        Scene(background, (Obj(shape, color, size, position),))
        for background, shape, color, size, position in itertools.product(
            BACKGROUNDS, SHAPES, COLORS, SIZES, POSITIONS
        )
        if color != background
    ]


def split_of(scene: Scene) -> Split:
    """`heldout` if any object's (shape, color, size, position, background) combination is held out, else `train`."""
    if any(_combination_heldout(obj, scene.background) for obj in scene.objects):
        return "heldout"
    return "train"


def _combination_heldout(obj: Obj, background: str) -> bool:
    key = "|".join((obj.shape, obj.color, obj.size, obj.position, background)).encode()
    digest = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return digest / 2**64 < HELDOUT_FRACTION


def random_scene(rng: np.random.Generator, split: Split = "train", n_objects: int = 1) -> Scene:
    """A uniformly drawn valid scene of the given split; two-object scenes list objects in corner order."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    if n_objects not in (1, 2):
        raise ValueError(f"n_objects must be 1 or 2, not {n_objects}")
    while True:
        background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
        colors = [color for color in COLORS if color != background]
        if n_objects == 1:
            positions = [tuple(POSITIONS)[rng.integers(len(POSITIONS))]]
        else:
            positions = [CORNERS[i] for i in sorted(rng.choice(len(CORNERS), size=2, replace=False))]
        objects = tuple(
            Obj(
                shape=SHAPES[rng.integers(len(SHAPES))],
                color=colors[rng.integers(len(colors))],
                size=SIZES[rng.integers(len(SIZES))],
                position=position,
            )
            for position in positions
        )
        scene = Scene(background, objects)
        if split_of(scene) == split:
            return scene


@dataclass(frozen=True)
class Request:
    """What a one-object prompt names: each attribute a name from the world's vocabulary, or None where the prompt
    leaves it open ("a red circle" names shape and colour only)."""

    background: str | None = None
    shape: str | None = None
    color: str | None = None
    size: str | None = None
    position: str | None = None

    def __post_init__(self) -> None:
        vocabularies = {"background": BACKGROUNDS, "shape": SHAPES, "color": COLORS, "size": SIZES,
                        "position": POSITIONS}
        for name in REQUEST_ATTRIBUTES:
            value = getattr(self, name)
            if value is not None and value not in vocabularies[name]:
                raise ValueError(f"{name} {value!r} is not one of {sorted(vocabularies[name])}")
        if self.color is not None and self.color == self.background:
            raise ValueError(f"an object has the background's colour {self.background!r}")

    @property
    def named(self) -> dict[str, str]:
        """The attributes the prompt names, in REQUEST_ATTRIBUTES order."""
        return {name: getattr(self, name) for name in REQUEST_ATTRIBUTES if getattr(self, name) is not None}

    @classmethod
    def of(cls, scene: Scene) -> "Request":
        """A one-object scene with every attribute named."""
        if len(scene.objects) != 1:
            raise ValueError(f"a request names one object, the scene has {len(scene.objects)}")
        obj = scene.objects[0]
        return cls(scene.background, obj.shape, obj.color, obj.size, obj.position)


def complete(request: Request, rng: np.random.Generator) -> Scene:
    """The scene a request asks for, its unnamed attributes drawn uniformly from the world (colour never the
    background's): the background first, then colour, shape, size and place."""
    background = request.background or _draw(rng, [b for b in BACKGROUNDS if b != request.color])
    color = request.color or _draw(rng, [c for c in COLORS if c != background])
    shape = request.shape or _draw(rng, SHAPES)
    size = request.size or _draw(rng, SIZES)
    position = request.position or _draw(rng, tuple(POSITIONS))
    return Scene(background, (Obj(shape, color, size, position),))


def _draw(rng: np.random.Generator, choices) -> str:
    choices = list(choices)
    return choices[int(rng.integers(len(choices)))]
