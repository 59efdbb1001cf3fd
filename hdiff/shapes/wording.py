"""People's wording beyond the phrasing grammar: the words people use for the world's values, free renderings of a
request, the noise people add to any sentence, and the words the world does not have.

The phrasing grammar (hdiff.shapes.phrasings) spans a space of sentences built from the world's own words and two
registers of synonyms. People step outside it at once: another word for a size or a corner ("huge", "NW"), a noun
for the picture ("a sprite of"), an attribute named as a noun ("colour: red", "of small size"), a tag list, a
question, a typo. This module writes such prompts for the reader's training, as augmentation drawn from general
knowledge of how people write (never from an evaluation set's sentences):

- `LEXICON`: per attribute and world value, the words people use for it (the grammar's words among them);
- `free_phrase`: a request in a free rendering (a sentence with an opening and clauses in any order, several short
  sentences, a tag list, key-value pairs), with the lexicon's words;
- `add_noise`: what people do to any sentence (case, punctuation, a typo, British/American spelling);
- `not_understood`: the words of a prompt that name a colour, shape or place the world does not have, and a second
  object: what the model cannot draw and must say so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hdiff.shapes.world import COLORS, CORNERS, Request, Scene

# attribute -> world value -> the words people use for it; the first is the world's own name
LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {
        "circle": ("circle", "disc", "disk", "dot", "ball", "round dot", "filled circle", "solid circle",
                   "round shape", "circle shape"),
        "square": ("square", "block", "box", "tile", "filled square", "solid square", "square shape"),
        "triangle": ("triangle", "triangular shape", "filled triangle", "solid triangle", "triangle shape"),
        "cross": ("cross", "plus sign", "plus shape", "plus symbol", "+ sign", "+ symbol", "cross shape",
                  "plus-sign"),
    },
    "size": {
        "small": ("small", "tiny", "little", "smallish", "mini", "miniature", "wee", "petite", "teeny",
                  "minuscule", "compact"),
        "large": ("large", "big", "huge", "giant", "massive", "enormous", "oversized", "jumbo", "sizeable",
                  "sizable", "largish", "hefty"),
    },
    "position": {
        "top left": ("top left", "top-left", "upper left", "upper-left", "top left-hand", "upper left-hand",
                     "northwest", "north-west", "north west", "nw", "left top"),
        "top right": ("top right", "top-right", "upper right", "upper-right", "top right-hand", "upper right-hand",
                      "northeast", "north-east", "north east", "ne", "right top"),
        "bottom left": ("bottom left", "bottom-left", "lower left", "lower-left", "bottom left-hand",
                        "lower left-hand", "southwest", "south-west", "south west", "sw", "left bottom"),
        "bottom right": ("bottom right", "bottom-right", "lower right", "lower-right", "bottom right-hand",
                         "lower right-hand", "southeast", "south-east", "south east", "se", "right bottom"),
        "center": ("center", "centre", "middle", "centered", "centred", "dead center", "dead centre",
                   "very middle", "central spot", "midpoint"),
    },
    # colour names are the world's own; aqua and fuchsia are cyan and magenta by their CSS definitions
    "color": {color: (color,) for color in COLORS} | {"cyan": ("cyan", "aqua"), "magenta": ("magenta", "fuchsia")},
}
BACKGROUND_NOUNS: tuple[str, ...] = ("background", "backdrop", "canvas", "bg", "field")
# words a prompt may use for an unnamed shape
GENERIC_NOUNS: tuple[str, ...] = ("shape", "object", "thing", "figure", "item", "form", "symbol")

# --------------------------------------------------------------------------------------------- free renderings

_OPENINGS = (
    "", "", "", "draw ", "draw me ", "please draw ", "make ", "make me ", "create ", "generate ", "render ",
    "paint ", "sketch ", "produce ", "show ", "show me ", "give me ", "i want ", "i'd like ", "i would like ",
    "i need ", "we need ", "can you draw ", "could you make ", "can you generate ", "could you please render ",
    "would you draw ", "can i have ", "can i get ", "please make ", "please generate ", "let's see ",
    "an image of ", "a picture of ", "a photo of ", "an illustration of ", "a drawing of ", "a render of ",
    "a sketch of ", "a graphic of ", "an icon of ", "a sprite of ", "a painting of ", "artwork of ",
    "an image showing ", "a picture with ", "a frame showing ", "an image containing ", "a scene with ",
    "image: ", "picture: ", "prompt: ", "scene: ", "output: ", "generate an image of ", "create a picture of ",
    "draw a picture of ", "make an image with ", "render an image of ", "i want an image of ",
    "please produce an image with ", "hello, draw ", "hi! make ", "quick one: ", "simple: ", "task: draw ",
)
_LABELS = ("", "", "", "", "image: ", "prompt: ", "scene: ", "picture - ", "hi, ", "ok: ", "request: ")
_ENDINGS = ("", "", "", ".", ".", "!", "?", " please", ", please.", " thanks", ", thank you!", " pls", " :)",
            ", nothing else.", " only.", ", simple and clean.", ", flat colours.", ", no text.", " (simple).",
            ", minimal style.", ", that's all.", " asap")
_DETERMINERS = ("a ", "a ", "one ", "the ", "a single ", "just one ", "exactly one ", "", "some ", "one single ")
_ADJ_JOINERS = (" ", " ", " ", ", ", " and ", "-", " & ")
_CLAUSE_JOINERS = (", ", ", ", "; ", ". ", " - ", " | ", " / ", " ", " with ", " and ", " -- ", " + ", " — ", ": ",
                   ",  ", " ,")
_POSITION_PREPOSITIONS = ("in the ", "in the ", "at the ", "at ", "in ", "on the ", "toward the ", "towards the ",
                          "near the ", "up in the ", "down in the ", "over in the ", "placed in the ",
                          "positioned in the ", "located at the ", "sitting in the ", "set in the ",
                          "found in the ", "", "")
_POSITION_AFTERS = ("", "", "", " of the image", " of the picture", " of the frame", " of the canvas", " area",
                    " region", " part", " of it", " of the scene", " spot")
_CORNER_WORDS = ("", "", " corner", " corner", " corner", " hand corner", " quadrant")
_BACKGROUND_FORMS = (
    "on a {c} background", "on {c} background", "on a {c} {n}", "on {c}", "on plain {c}", "over {c}",
    "over a {c} {n}", "against a {c} {n}", "against {c}", "with a {c} {n}", "with {c} {n}", "in front of a {c} {n}",
    "{c} {n}", "{c} {n}", "{n} {c}", "{n}: {c}", "{n}: {c}", "{n} = {c}", "{n}={c}", "{n} is {c}",
    "the {n} is {c}", "the {n} should be {c}", "make the {n} {c}", "{n} colour {c}", "{n} color: {c}",
    "{c}-colored {n}", "{c}-coloured {n}", "a plain {c} {n}", "solid {c} {n}", "on a solid {c} {n}",
    "set against {c}", "on a {n} of {c}", "with the {n} in {c}", "{n} in {c}", "{c} as the {n}",
    "{c} for the {n}", "use {c} for the {n}", "on top of {c}", "{n} filled with {c}", "{c} all over the {n}",
)
_BACKGROUND_NOUNS_WRITTEN = ("background", "background", "background", "backdrop", "canvas", "bg", "field",
                             "background colour", "background color")
_SIZE_CLAUSES = ("{s}", "{s} size", "size {s}", "size: {s}", "{s} in size", "of {s} size", "{s}-sized",
                 "it is {s}", "it should be {s}", "make it {s}", "fairly {s}", "quite {s}", "very {s}",
                 "{s} one", "keep it {s}")
_COLOR_CLAUSES = ("{c}", "in {c}", "coloured {c}", "colored {c}", "colour {c}", "color: {c}", "{c} in colour",
                  "{c} in color", "of colour {c}", "filled with {c}", "painted {c}", "it is {c}", "make it {c}",
                  "{c}-coloured", "{c}-colored", "in bright {c}", "solid {c}", "with {c} fill", "fill {c}")
_POSITION_CLAUSES = ("{p}", "it sits {p}", "put it {p}", "place it {p}", "it should be {p}", "positioned {p}",
                     "located {p}", "position: {p}", "where: {p}", "place: {p}", "location {p}", "{p} please")
_STYLE_TAGS = ("flat", "minimal", "vector", "2d", "simple", "icon", "clean", "no text", "high contrast",
               "flat colors", "geometric", "pixel art", "solid colours", "plain", "simple composition",
               "digital art", "sharp edges", "32x32", "low detail", "basic")
_KEYS = {
    "shape": ("shape", "object", "obj", "form", "type", "figure", "item"),
    "color": ("colour", "color", "col", "fill", "object colour", "shape color"),
    "size": ("size", "scale", "sz"),
    "position": ("position", "pos", "place", "location", "where", "loc", "placement"),
    "background": ("background", "bg", "backdrop", "bg colour", "background color", "canvas"),
}
_KEY_SEPARATORS = (": ", ":", "=", " = ", " - ", " ", " -> ")
_PAIR_SEPARATORS = (", ", "; ", " | ", " / ", "\n", " ", ",", " ; ", " · ")
_TAG_SEPARATORS = (", ", " ", " | ", "; ", " / ", " + ", " · ", ",", " - ")


def word_for(field: str, value: str, rng: np.random.Generator) -> str:
    """A word people use for a world value: the world's own name about half the time, else a lexicon synonym."""
    words = LEXICON[field][value]
    return words[0] if rng.random() < 0.45 or len(words) == 1 else words[1 + int(rng.integers(len(words) - 1))]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _position_phrase(position: str, rng: np.random.Generator) -> str:
    """The place with a preposition: "in the top-left corner", "at NW", "in the middle of the picture"."""
    word = word_for("position", position, rng)
    corner = _pick(rng, _CORNER_WORDS) if position in CORNERS and not word.endswith("-hand") else ""
    if word.endswith("-hand"):
        corner = " corner"
    if word in ("centered", "centred"):
        return _pick(rng, ("", "", "perfectly ", "nicely ")) + word
    return _pick(rng, _POSITION_PREPOSITIONS) + word + corner + _pick(rng, _POSITION_AFTERS)


def _background_phrase(background: str, rng: np.random.Generator) -> str:
    form = _pick(rng, _BACKGROUND_FORMS)
    return form.format(c=word_for("color", background, rng), n=_pick(rng, _BACKGROUND_NOUNS_WRITTEN))


def _object_phrase(words: dict[str, str | None], rng: np.random.Generator, with_determiner: bool = True) -> str:
    """The object with the adjectives it is named with, before or after the noun, or as attribute clauses."""
    noun = words["shape"] or _pick(rng, GENERIC_NOUNS)
    adjectives = [name for name in ("size", "color") if words[name] is not None]
    rng.shuffle(adjectives)
    before, after = [], []
    for name in adjectives:
        if rng.random() < 0.7:
            before.append(words[name])
        else:
            clauses = _SIZE_CLAUSES if name == "size" else _COLOR_CLAUSES
            after.append(_pick(rng, clauses).format(s=words[name], c=words[name]))
    if not words["shape"] and rng.random() < 0.3 and before:  # "something red", "something tiny and blue"
        phrase = "something " + _pick(rng, (" ", " and ", ", ")).join(before)
    else:
        phrase = _pick(rng, _ADJ_JOINERS).join(before) + (" " if before else "") + noun
        if with_determiner:
            phrase = _pick(rng, _DETERMINERS) + phrase
    for clause in after:
        phrase += _pick(rng, (", ", " ", " that is ", " which is ", ", ", " - ", " (")) + clause
        if phrase.count("(") > phrase.count(")"):
            phrase += ")"
    return phrase


def free_phrase(request: Request, rng: np.random.Generator) -> str:
    """The request in one of people's free renderings, lower case and clean (see `add_noise`)."""
    words = {name: (None if getattr(request, name) is None else word_for(name, getattr(request, name), rng))
             for name in ("shape", "color", "size")}
    style = rng.random()
    if style < 0.55:
        text = _sentence(request, words, rng)
    elif style < 0.7:
        text = _short_sentences(request, words, rng)
    elif style < 0.85:
        text = _tags(request, words, rng)
    else:
        text = _key_values(request, words, rng)
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _sentence(request: Request, words: dict, rng: np.random.Generator) -> str:
    clauses = [_object_phrase(words, rng)]
    if request.position is not None:
        clauses.append(_position_phrase(request.position, rng))
    if request.background is not None:
        clauses.append(_background_phrase(request.background, rng))
    order = rng.permutation(len(clauses))
    text = clauses[order[0]]
    for index in order[1:]:
        text += _pick(rng, _CLAUSE_JOINERS) + clauses[index]
    opening = _pick(rng, _OPENINGS) if order[0] == 0 else _pick(rng, _LABELS)
    return opening + text + _pick(rng, _ENDINGS)


def _short_sentences(request: Request, words: dict, rng: np.random.Generator) -> str:
    """Several short sentences: "a circle. make it red. top left. blue background." """
    object_words = dict(words)
    extra = []
    for name in ("size", "color"):
        if words[name] is not None and rng.random() < 0.5:
            clauses = _SIZE_CLAUSES if name == "size" else _COLOR_CLAUSES
            extra.append(_pick(rng, clauses).format(s=words[name], c=words[name]))
            object_words[name] = None
    if object_words["shape"] is None and object_words["size"] is None and object_words["color"] is None:
        object_words["shape"] = _pick(rng, GENERIC_NOUNS)
    sentences = [_pick(rng, _OPENINGS) + _object_phrase(object_words, rng)] + extra
    if request.position is not None:
        place = _position_phrase(request.position, rng)
        clause = _pick(rng, _POSITION_CLAUSES)
        sentences.append(clause.format(p=place) if clause.startswith("{p}") or not place[:1].isalpha()
                         or place.split(" ")[0] in ("in", "at", "on", "near", "toward", "towards", "up", "down")
                         else place)
    if request.background is not None:
        sentences.append(_background_phrase(request.background, rng))
    head, tail = sentences[0], sentences[1:]
    rng.shuffle(tail)
    if rng.random() < 0.3:
        tail.insert(0, head)
        head = tail.pop(int(rng.integers(1, len(tail)))) if len(tail) > 1 else head
        tail = [s for s in tail if s != head]
    return _pick(rng, (". ", ". ", "! ", "; ", ".\n", ". ")).join([head, *tail]) + _pick(rng, ("", ".", "!"))


def _tags(request: Request, words: dict, rng: np.random.Generator) -> str:
    """A tag list: "red, circle, small, top left, blue background"; hashtags now and then."""
    tags = [words[name] for name in ("shape", "color", "size") if words[name] is not None]
    if rng.random() < 0.4 and words["shape"] is not None:  # adjectives kept with the noun
        tags = [" ".join(w for w in (words["size"], words["color"], words["shape"]) if w)]
    if request.position is not None:
        word = word_for("position", request.position, rng)
        tags.append(word + (_pick(rng, ("", " corner")) if request.position in CORNERS else ""))
    if request.background is not None:
        colour = word_for("color", request.background, rng)
        tags.append(_pick(rng, ("{c} background", "{c} bg", "bg {c}", "background {c}", "bg: {c}", "{c} backdrop",
                                "{c} canvas", "background: {c}", "{c}-background")).format(c=colour))
    rng.shuffle(tags)
    for _ in range(1 + int(rng.integers(2))):  # tag prompts carry style tags: "flat, minimal, red circle, ..."
        tags.insert(int(rng.integers(len(tags) + 1)), _pick(rng, _STYLE_TAGS))
    if rng.random() < 0.2:
        return " ".join("#" + tag.replace(" ", "") for tag in tags)
    return _pick(rng, _TAG_SEPARATORS).join(tags)


def _key_values(request: Request, words: dict, rng: np.random.Generator) -> str:
    """Attributes as key-value pairs: "shape: circle; colour: red; position: top left"."""
    values = {name: words[name] for name in ("shape", "color", "size")}
    values["position"] = None if request.position is None else word_for("position", request.position, rng)
    values["background"] = None if request.background is None else word_for("color", request.background, rng)
    names = [name for name, value in values.items() if value is not None]
    rng.shuffle(names)
    separator = _pick(rng, _KEY_SEPARATORS)
    pairs = [f"{_pick(rng, _KEYS[name])}{separator}{values[name]}" for name in names]
    text = _pick(rng, _PAIR_SEPARATORS).join(pairs)
    return _pick(rng, ("", "", "", "{", "[", "params: ", "spec: ")) + text


def free_two_objects(scene: Scene, rng: np.random.Generator) -> str:
    """A two-object scene in a free sentence: two object phrases with their places, and the background."""
    parts = []
    for obj in scene.objects:
        words = {name: word_for(name, getattr(obj, name), rng) for name in ("shape", "color", "size")}
        parts.append(_object_phrase(words, rng) + " " + _position_phrase(obj.position, rng))
    text = _pick(rng, (" and ", ", ", " plus ", "; ", " and also ", ", and ")).join(parts)
    background = _background_phrase(scene.background, rng)
    text = text + _pick(rng, (", ", " ", "; ")) + background if rng.random() < 0.6 else background + ", " + text
    return _pick(rng, _OPENINGS) + re.sub(r"\ba (?=[aeiou])", "an ", text) + _pick(rng, _ENDINGS)


# --------------------------------------------------------------------------------------------- noise

_SPELLINGS = (("colour", "color"), ("centre", "center"), ("coloured", "colored"), ("centred", "centered"),
              ("grey", "gray"))
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def typo(word: str, rng: np.random.Generator) -> str:
    """One typing slip in a word of at least 3 letters: two letters swapped, one dropped, doubled or struck next to
    it on the keyboard."""
    if len(word) < 3 or not word.isalpha():
        return word
    kind, index = int(rng.integers(4)), int(rng.integers(1, len(word) - 1))
    if kind == 0:
        return word[:index] + word[index + 1] + word[index] + word[index + 2:]
    if kind == 1:
        return word[:index] + word[index + 1:]
    if kind == 2:
        return word[:index] + word[index] + word[index:]
    row = next((r for r in _KEYBOARD_ROWS if word[index].lower() in r), None)
    if row is None:
        return word
    at = row.index(word[index].lower())
    neighbour = row[at - 1] if at and (at == len(row) - 1 or rng.random() < 0.5) else row[min(at + 1, len(row) - 1)]
    return word[:index] + neighbour + word[index + 1:]


def change_case(text: str, rng: np.random.Generator) -> str:
    """Lower case, upper case, sentence case or title case."""
    kind = int(rng.integers(4))
    if kind == 0:
        return text.lower()
    if kind == 1:
        return text.upper()
    if kind == 2:
        return text[:1].upper() + text[1:]
    return " ".join(word[:1].upper() + word[1:] for word in text.split(" "))


def change_punctuation(text: str, rng: np.random.Generator) -> str:
    """A final stop dropped or added, marks doubled, commas dropped, a stray space or comma."""
    kind = int(rng.integers(6))
    if kind == 0:
        return text.rstrip(".!?")
    if kind == 1:
        return text.rstrip(".!?") + _pick(rng, ("!!", "!!!", "...", "?!", " .", "!"))
    if kind == 2:
        return text.replace(",", "")
    if kind == 3:
        spaces = [m.start() for m in re.finditer(" ", text)]
        if spaces:
            at = _pick(rng, spaces)
            return text[:at] + _pick(rng, ("  ", " , ", ", ")) + text[at + 1:]
        return text
    if kind == 4:
        return text.replace(", ", " , ") if rng.random() < 0.5 else text.replace(", ", ",")
    return text + "."


def change_spelling(text: str, rng: np.random.Generator) -> str:
    """British spelling for American or the other way round, where the text has such a word."""
    for british, american in _SPELLINGS:
        if rng.random() < 0.5:
            text = re.sub(rf"\b{american}\b", british, text)
        else:
            text = re.sub(rf"\b{british}\b", american, text)
    return text


def add_noise(text: str, rng: np.random.Generator, typo_rate: float = 0.3) -> str:
    """What people do to any sentence, each at even odds or so: spelling, a typo in any word, case, punctuation."""
    text = change_spelling(text, rng)
    if rng.random() < typo_rate:
        words = text.split(" ")
        candidates = [i for i, w in enumerate(words) if len(w) >= 3 and w.isalpha()]
        if candidates:
            at = _pick(rng, candidates)
            words[at] = typo(words[at], rng)
            text = " ".join(words)
    if rng.random() < 0.5:
        text = change_punctuation(text, rng)
    if rng.random() < 0.5:
        text = change_case(text, rng)
    return text


# --------------------------------------------------------------------------------------------- what is not understood

UNKNOWN_COLOURS: tuple[str, ...] = (
    "purple", "violet", "orange", "pink", "brown", "grey", "gray", "navy", "teal", "maroon", "beige", "turquoise",
    "lime", "gold", "golden", "silver", "indigo", "olive", "lavender", "crimson", "tan", "khaki", "amber",
    "scarlet", "cream", "ivory", "peach", "coral", "salmon", "mauve", "lilac", "burgundy", "charcoal", "bronze",
    "copper", "mint", "ochre", "ocher", "emerald", "sapphire", "azure", "chartreuse", "plum", "aquamarine",
    "vermilion", "rust", "sepia", "mustard", "periwinkle", "cerulean", "ultramarine",
)
UNKNOWN_SHAPES: tuple[str, ...] = (
    "hexagon", "pentagon", "octagon", "heptagon", "polygon", "star", "heart", "oval", "ellipse", "rectangle",
    "diamond", "rhombus", "crescent", "moon", "arrow", "trapezoid", "trapezium", "parallelogram", "ring", "spiral",
    "semicircle", "half-circle", "kite", "stripe", "cylinder", "cube", "sphere", "pyramid", "cone",
    "cloud", "flower", "tree", "house", "cat", "dog", "smiley", "checkmark",
)
UNKNOWN_PLACES: tuple[str, ...] = (
    "edge", "edges", "side", "sides", "margin", "margins", "border", "third", "thirds", "off-centre", "off-center",
    "off centre", "off center", "top", "bottom", "left", "right", "upper", "lower", "above", "below",
    "horizon", "diagonal", "quarter",
)
COUNT_WORDS: tuple[str, ...] = ("two", "three", "four", "five", "several", "many", "multiple", "pair", "couple",
                                "both", "another", "2", "3", "4", "5", "twin", "second", "dozen")


@dataclass(frozen=True)
class Unknown:
    """A word of a prompt that the world has no value for: `kind` is colour, shape, place or "objects"."""

    word: str
    kind: str


def _words_pattern(words) -> str:
    return "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))


_KNOWN = {field: {word: value for value, words in values.items() for word in words}
          for field, values in LEXICON.items()}
_PLURALS = {word + "s": value for word, value in _KNOWN["shape"].items() if not word.endswith(("s", "x"))}
_PLURALS |= {word + "es": value for word, value in _KNOWN["shape"].items() if word.endswith(("s", "x"))}
_TOKEN = re.compile(
    rf"(?<![\w+-])(?P<shape>{_words_pattern(_KNOWN['shape'])})(?![\w-])"
    rf"|(?<![\w-])(?P<plural>{_words_pattern(list(_PLURALS) + [w + 's' for w in UNKNOWN_SHAPES] + [w + 's' for w in GENERIC_NOUNS])})(?![\w-])"
    rf"|(?<![\w-])(?P<position>{_words_pattern(_KNOWN['position'])})(?![\w])"
    rf"|(?<![\w-])(?P<color>{_words_pattern(_KNOWN['color'])})(?![\w])"
    rf"|(?<![\w-])(?P<ucolour>{_words_pattern(UNKNOWN_COLOURS)})(?![\w])"
    rf"|(?<![\w-])(?P<ushape>{_words_pattern(UNKNOWN_SHAPES)})(?![\w])"
    rf"|(?<![\w-])(?P<uplace>{_words_pattern(UNKNOWN_PLACES)})(?![\w])"
    rf"|(?<![\w-])(?P<count>{_words_pattern(COUNT_WORDS)})(?![\w])"
)
# a place word that is an adverb, not a place: "right in the middle", "right there", "top quality"
# edges as a style, not a place: "sharp edges", "clean edges"
_STYLE_EDGES = re.compile(r"\b(sharp|hard|clean|crisp|soft|smooth|straight|rounded|blurry|blurred) edges?$")
_NOT_A_PLACE = re.compile(r"^(right (in|at|on|there|here|now|away|inside)|(top|bottom) (of|quality|notch)|"
                          r"(the )?(left|right)-hand)\b")


def not_understood(prompt: str) -> list[Unknown]:
    """The words of a prompt that name what the shapes world does not have — a colour, a shape, a place — and a
    second object ("objects": a count word, a plural, or two shapes or three colours named), in reading order;
    empty when everything the prompt names is the world's."""
    text = " ".join(prompt.lower().replace("_", " ").split())
    found: list[Unknown] = []
    shapes, colours = [], []
    for match in _TOKEN.finditer(text):
        kind, word = match.lastgroup, match.group(0)
        if kind == "shape":
            shapes.append(_KNOWN["shape"][word])
        elif kind == "color":
            colours.append(word)
        elif kind == "ucolour":
            colours.append(word)
            found.append(Unknown(word, "colour"))
        elif kind == "ushape":
            shapes.append(word)
            found.append(Unknown(word, "shape"))
        elif (kind == "uplace" and not _NOT_A_PLACE.match(text[match.start():]) and not _beside_misspelt(text, match)
              and not _STYLE_EDGES.search(text[:match.end()])):
            found.append(Unknown(word, "place"))
        elif kind in ("plural", "count"):
            found.append(Unknown(word, "objects"))
    if len(set(shapes)) > 1:
        found.append(Unknown(" and ".join(dict.fromkeys(shapes)), "objects"))
    elif len(set(colours)) > 2:
        found.append(Unknown(", ".join(dict.fromkeys(colours)), "objects"))
    return found


_DIRECTIONS = ("top", "bottom", "left", "right", "upper", "lower", "corner", "centre", "center", "middle")


def _beside_misspelt(text: str, match: re.Match) -> bool:
    """Whether a lone direction word ("upper") stands next to a misspelt one ("upper letf"): a typo, not a place
    the world lacks."""
    before = re.findall(r"[a-z]+", text[:match.start()])[-1:]
    after = re.findall(r"[a-z]+", text[match.end():])[:1]
    return any(_one_slip(word, direction) for word in before + after for direction in _DIRECTIONS)


def _one_slip(word: str, target: str) -> bool:
    """`word` is `target` with one letter struck wrong, dropped, doubled or added, or two neighbours swapped."""
    if word == target:
        return False
    if len(word) == len(target):
        diff = [i for i, (a, b) in enumerate(zip(word, target)) if a != b]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and word[diff[0]] == target[diff[1]] and word[diff[1]] == target[diff[0]])
    short, long = sorted((word, target), key=len)
    return len(long) == len(short) + 1 and any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def describe_unknown(prompt: str, unknown: list[Unknown]) -> str:
    """One line naming the prompt and its words the world does not have."""
    kinds = {"colour": "a colour", "shape": "a shape", "place": "a place", "objects": "a second object"}
    words = ", ".join(f"{u.word!r} ({kinds[u.kind]})" for u in unknown)
    return f"prompt {prompt!r} names what the shapes world cannot draw: {words}; drawn from the words it knows"


def warn_not_understood(prompts) -> int:
    """One HdiffNotUnderstood warning per prompt that names what the world does not have (`not_understood`);
    returns how many prompts did."""
    import warnings

    from hdiff.errors import HdiffNotUnderstood

    count = 0
    for prompt in prompts:
        unknown = not_understood(prompt)
        if unknown:
            count += 1
            warnings.warn(describe_unknown(prompt, unknown), HdiffNotUnderstood, stacklevel=3)
    return count
