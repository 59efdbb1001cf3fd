"""The shapes world's prompt grammar: paraphrase templates to describe a scene, and an exact parser back.

Each template is a scene form around one or two object phrases joined by "and", and a word register: register 0
uses the canonical names ("small", "circle", "top left"), register 1 their synonyms ("tiny", "disc", "upper
left"). `parse` accepts exactly the sentences the templates can produce (with either register's words in any
slot) and returns None for everything else: it never guesses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hdiff.shapes.world import COLORS, POSITIONS, SHAPES, SIZES, Obj, Scene

# Canonical name -> the word used in each register (0: canonical, 1: synonym).
SHAPE_WORDS: dict[str, tuple[str, str]] = {
    "circle": ("circle", "disc"),
    "square": ("square", "block"),
    "triangle": ("triangle", "triangle"),
    "cross": ("cross", "plus sign"),
}
SIZE_WORDS: dict[str, tuple[str, str]] = {"small": ("small", "tiny"), "large": ("large", "big")}
POSITION_WORDS: dict[str, tuple[str, str]] = {
    "top left": ("top left", "upper left"),
    "top right": ("top right", "upper right"),
    "bottom left": ("bottom left", "lower left"),
    "bottom right": ("bottom right", "lower right"),
    "center": ("center", "middle"),
}
COLOR_WORDS: dict[str, tuple[str, str]] = {color: (color, color) for color in COLORS}


@dataclass(frozen=True)
class Template:
    """`scene` holds {objects} and {background}; `obj` holds {size}, {color}, {shape} and {position}."""

    scene: str
    obj: str
    register: int


TEMPLATES: tuple[Template, ...] = (
    Template("{objects} on a {background} background", "a {size} {color} {shape} in the {position}", 0),
    Template("{background} backdrop, {objects}", "{size} {color} {shape}, {position}", 1),
    Template("a {background} background with {objects}", "a {size} {color} {shape} in the {position}", 1),
    Template("{objects}, {background} background", "a {color} {shape} ({size}) in the {position}", 0),
    Template(
        "a picture of {objects} against a {background} background",
        "a {size} {color} {shape} placed in the {position}",
        0,
    ),
    Template("{background} canvas; {objects}", "{position}: {size} {color} {shape}", 1),
)
NUM_TEMPLATES = len(TEMPLATES)
_FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "shape": SHAPE_WORDS,
    "color": COLOR_WORDS,
    "size": SIZE_WORDS,
    "position": POSITION_WORDS,
}
assert set(SHAPE_WORDS) == set(SHAPES) and set(SIZE_WORDS) == set(SIZES) and set(POSITION_WORDS) == set(POSITIONS)


def describe(scene: Scene, template: int | None = None, rng: np.random.Generator | None = None) -> str:
    """The scene in words: template `template`, else one drawn from `rng`, else template 0."""
    if template is None:
        template = 0 if rng is None else int(rng.integers(NUM_TEMPLATES))
    if not 0 <= template < NUM_TEMPLATES:
        raise ValueError(f"template must be in [0, {NUM_TEMPLATES}), not {template}")
    form = TEMPLATES[template]
    phrases = [
        form.obj.format(**{field: words[getattr(obj, field)][form.register] for field, words in _FIELDS.items()})
        for obj in scene.objects
    ]
    text = form.scene.format(objects=" and ".join(phrases), background=COLOR_WORDS[scene.background][form.register])
    return _fix_articles(text)


def parse(text: str) -> Scene | None:
    """The scene a sentence of the grammar describes, or None if the text is not one (or describes no valid scene)."""
    normalized = _normalize(text)
    for pattern in _PATTERNS:
        match = pattern.fullmatch(normalized)
        if match is None:
            continue
        groups = match.groupdict()
        n_objects = 2 if "shape1" in groups else 1
        try:
            objects = tuple(
                Obj(**{field: _CANONICAL[field][groups[f"{field}{k}"]] for field in _FIELDS}) for k in range(n_objects)
            )
            return Scene(_CANONICAL["color"][groups["background"]], objects)
        except ValueError:  # well-formed but impossible, e.g. a red circle on a red background
            return None
    return None


def _fix_articles(text: str) -> str:
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _normalize(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".").strip()


_CANONICAL: dict[str, dict[str, str]] = {
    field: {word: name for name, pair in words.items() for word in pair} for field, words in _FIELDS.items()
}


def _compile_patterns() -> list[re.Pattern[str]]:
    """One regex per template and object count; object fields are named `<field><k>`."""

    def alternatives(field: str) -> str:
        return "|".join(re.escape(word) for word in sorted(_CANONICAL[field], key=len, reverse=True))

    def fill(form: str, groups: dict[str, str]) -> str:
        parts = re.split(r"(\{\w+\})", form)
        out = []
        for part in parts:
            if part.startswith("{") and part.endswith("}"):
                out.append(groups[part[1:-1]])
            else:
                out.append(re.sub(r"(?<!\w)a\\ ", r"an?\\ ", re.escape(part)))
        return "".join(out)

    patterns = []
    for form in TEMPLATES:
        for n_objects in (1, 2):
            objects = r"\ and\ ".join(
                fill(form.obj, {field: f"(?P<{field}{k}>{alternatives(field)})" for field in _FIELDS})
                for k in range(n_objects)
            )
            background = f"(?P<background>{alternatives('color')})"
            patterns.append(re.compile(fill(form.scene, {"objects": objects, "background": background})))
    return patterns


_PATTERNS = _compile_patterns()
