"""People's wording for the shapes world: a grammar of phrasings far beyond the six templates, and a reader back.

A phrasing is built from independent choices, each a list of forms: the object phrase (word order of size, colour
and shape, and the words that link them), the place phrase, the background phrase, the frame (the order of the
three clauses and the punctuation between them), an opening ("draw", "a picture of") and the ending. Only the
world's vocabulary names attributes (the template grammar's words and synonyms: hdiff.shapes.grammar).

Every choice has training forms and held-out forms (`Form.heldout`). A *held-out phrasing* uses held-out forms in
every choice: a word order, linking words and a clause order that no training phrasing has. The model's reader is
trained on training phrasings only and evaluated on held-out ones only (hdiff.shapes.reader).

A prompt may leave attributes unnamed ("a red circle", "something blue in the top left"): `phrase` writes a
`Request`, whose unnamed attributes are None, and drops the clauses and words of the attributes it does not name.

`read` is the oracle's side: it names the Request of any one-object prompt in the world's vocabulary, whatever the
wording (it finds the attribute words, in the lexicon people use (hdiff.shapes.wording.LEXICON), and the colour
next to a background word), and None when the prompt names
nothing or more than one object. It reads every phrasing of this grammar exactly (tested), and is not the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hdiff.shapes.grammar import COLOR_WORDS, POSITION_WORDS, SHAPE_WORDS, SIZE_WORDS, parse
from hdiff.shapes.wording import BACKGROUND_NOUNS, LEXICON
from hdiff.shapes.world import CORNERS, REQUEST_ATTRIBUTES, Request, Scene


@dataclass(frozen=True)
class Form:
    """One way to write a clause. `text` holds slots ({det}, {adjs}, {shape}, {size}, {color}, {position},
    {corner}, {background}); a [bracketed] part is kept only if every slot in it has a value. {adjs} is the named
    adjectives among `order`, joined by `joiner`. A place or background phrase that is `attached` may follow
    another clause after a mere space."""

    text: str
    heldout: bool = False
    order: tuple[str, ...] = ("size", "color")
    joiner: str = " "
    attached: bool = False


OBJECT_FORMS: tuple[Form, ...] = (
    Form("{det}[{adjs} ]{shape}"),
    Form("{det}[{adjs} ]{shape}", joiner=", "),
    Form("{det}{shape}[ that is {adjs}]", joiner=" and "),
    Form("{det}[{size} ]{shape}[ in {color}]"),
    Form("{det}{shape}[, {adjs}]", order=("color", "size"), joiner=", "),
    Form("{det}[{color} ]{shape}[ of {size} size]"),
    # held out: another adjective order, other linking words
    Form("{det}[{adjs} ]{shape}", heldout=True, order=("color", "size")),
    Form("{det}{shape}[ which is {adjs}]", heldout=True, order=("color", "size"), joiner=" and "),
    Form("{det}[{size} ]{shape}[ colored {color}]", heldout=True),
    Form("{det}{shape}[ ({adjs})]", heldout=True, joiner=", "),
)
# a prompt that names no shape: a generic noun in the {shape} slot, or "something" (no determiner)
GENERIC_NOUNS: tuple[Form, ...] = (Form("shape"), Form("object"), Form("thing", heldout=True))
SOMETHING_FORMS: tuple[Form, ...] = (Form("something[ {adjs}]", joiner=" and "),
                                     Form("something[ {adjs}]", heldout=True, order=("color", "size"), joiner=", "))
DETERMINERS: tuple[Form, ...] = (Form("a "), Form("one "), Form(""), Form("the ", heldout=True),
                                 Form("a single ", heldout=True))
# `attached`: the phrase can follow another clause after a mere space ("a red circle in the top left"); the others
# follow punctuation or open the prompt ("top left: ...", "..., background: blue")
POSITION_FORMS: tuple[Form, ...] = (
    Form("in the {position}", attached=True),
    Form("in the {position}{corner}", attached=True),
    Form("placed in the {position}", attached=True),
    Form("toward the {position}", attached=True),
    Form("{position}"),
    # held out
    Form("at the {position}", heldout=True, attached=True),
    Form("located in the {position}{corner}", heldout=True, attached=True),
    Form("in the {position} of the picture", heldout=True, attached=True),
    Form("position: {position}", heldout=True),
)
BACKGROUND_FORMS: tuple[Form, ...] = (
    Form("on a {background} background", attached=True),
    Form("with a {background} backdrop", attached=True),
    Form("against a {background} canvas", attached=True),
    Form("{background} background"),
    Form("background: {background}"),
    # held out
    Form("over a {background} background", heldout=True, attached=True),
    Form("on a plain {background} backdrop", heldout=True, attached=True),
    Form("in front of a {background} canvas", heldout=True, attached=True),
    Form("the background is {background}", heldout=True),
    Form("{background} backdrop", heldout=True),
)
# the order of the object (O), place (P) and background (B) clauses, with what stands between them
FRAMES: tuple[Form, ...] = (
    Form("O P B"),
    Form("B, O P"),
    Form("O, P, B"),
    Form("P: O, B"),
    Form("O B, P"),
    # held out: clause orders and punctuation no training phrasing has
    Form("B; O, P", heldout=True),
    Form("P, O B", heldout=True),
    Form("O - P - B", heldout=True),
    Form("O B P", heldout=True),
)
OPENINGS: tuple[Form, ...] = (Form(""), Form("a picture of "), Form("draw "), Form("an image of "),
                              Form("show ", heldout=True), Form("a drawing of ", heldout=True),
                              Form("make ", heldout=True))
ENDINGS: tuple[Form, ...] = (Form(""), Form("."), Form("!", heldout=True), Form(" please", heldout=True))
_CHOICES = {"object": OBJECT_FORMS, "generic": GENERIC_NOUNS, "something": SOMETHING_FORMS,
            "determiner": DETERMINERS, "position": POSITION_FORMS, "background": BACKGROUND_FORMS,
            "frame": FRAMES, "opening": OPENINGS, "ending": ENDINGS}
_WORDS = {"shape": SHAPE_WORDS, "color": COLOR_WORDS, "size": SIZE_WORDS, "position": POSITION_WORDS}


def forms_of(choice: str, heldout: bool) -> tuple[Form, ...]:
    """The training (heldout=False) or held-out forms of one choice."""
    return tuple(form for form in _CHOICES[choice] if form.heldout == heldout)


def phrase(request: Request, rng: np.random.Generator, heldout: bool = False) -> str:
    """The request in words: every choice drawn from `rng` among its training forms, or its held-out ones."""
    def pick(choice: str, attached_only: bool = False) -> Form:
        forms = [form for form in forms_of(choice, heldout) if form.attached or not attached_only]
        return forms[int(rng.integers(len(forms)))]

    def word(field: str, name: str | None) -> str | None:
        return None if name is None else _WORDS[field][name][int(rng.integers(2))]

    words = {field: word(field, getattr(request, field)) for field in ("shape", "color", "size", "position")}
    if words["shape"] is None and rng.random() < 0.5:
        obj = fill(pick("something"), words)
    else:
        generic = pick("generic").text
        obj = fill(pick("object"), {**words, "shape": words["shape"] or generic, "det": pick("determiner").text})
    frame = pick("frame").text
    present = "O" + "P" * (request.position is not None) + "B" * (request.background is not None)
    clauses = {"O": obj}
    if "P" in present:
        corner = " corner" if request.position in CORNERS else ""
        form = pick("position", _after_space(frame, "P", present))
        clauses["P"] = fill(form, {"position": words["position"], "corner": corner})
    if "B" in present:
        form = pick("background", _after_space(frame, "B", present))
        clauses["B"] = fill(form, {"background": word("color", request.background)})
    opening = pick("opening").text if re.sub(f"[^{present}]", "", frame).startswith("O") else ""
    text = opening + arrange(frame, clauses) + pick("ending").text
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _after_space(frame: str, clause: str, present: str) -> bool:
    """Whether `clause` follows another present clause of the frame after a mere space (as `arrange` writes it)."""
    parts = re.split(r"([OPB])", frame)  # ['', 'O', ' ', 'P', ' ', 'B', '']
    index = parts.index(clause)
    follows_one = any(name in present for name in parts[1:index:2])
    return follows_one and parts[index - 1] == " "


def fill(form: Form, values: dict[str, str | None]) -> str:
    """The form's text with its slots filled; a bracketed part with an empty slot is dropped."""
    adjectives = [values[name] for name in form.order if values.get(name) is not None]
    values = {**values, "adjs": form.joiner.join(adjectives) if adjectives else None}

    def optional(match: re.Match) -> str:
        part = match.group(1)
        slots = re.findall(r"\{(\w+)\}", part)
        return part if all(values.get(slot) is not None for slot in slots) else ""

    kept = re.sub(r"\[([^\]]*)\]", optional, form.text)
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], kept)


def arrange(frame: str, clauses: dict[str, str]) -> str:
    """The clauses in the frame's order; a missing clause is dropped with the punctuation before it (or after it,
    when it opens the frame)."""
    parts = re.split(r"([OPB])", frame)  # ['', 'O', ' ', 'P', ' ', 'B', '']
    out = []
    for index in range(1, len(parts), 2):
        name, separator_before = parts[index], parts[index - 1]
        if name not in clauses:
            continue
        out.append((separator_before if out else "") + clauses[name])
    return "".join(out)


# ---------------------------------------------------------------------------------------------------- reading a prompt back (the oracle's side)


_BACKGROUND_NOUNS = BACKGROUND_NOUNS
_TERMS: dict[str, dict[str, str]] = {  # kind -> word or phrase -> canonical name: the lexicon people use
    field: {word: name for name, words in values.items() for word in words} for field, values in LEXICON.items()
}
assert all(word in _TERMS[field] for field, words in _WORDS.items() for pair in words.values() for word in pair)
_BREAKS = ",;.!?()-"
_WORD_PATTERN = "|".join(sorted([re.escape(word) for kind in _TERMS.values() for word in kind]
                                + list(_BACKGROUND_NOUNS), key=len, reverse=True))
_TERM_PATTERN = re.compile(rf"(?<![\w-])(?:{_WORD_PATTERN})(?![\w-])|[{re.escape(_BREAKS)}]")


def read(text: str) -> Scene | Request | None:
    """What a prompt names: the Scene of a template sentence (one or two objects, hdiff.shapes.grammar.parse), else
    the Request of a one-object prompt in any wording, else None (nothing named, two of one attribute, or a
    colour that is the background's)."""
    scene = parse(text)
    if scene is not None:
        return scene
    terms = _terms(text)  # [(kind, name)] in reading order
    backgrounds = _background_colours(terms)
    if backgrounds is None:
        return None
    named: dict[str, list[str]] = {field: [] for field in _WORDS}
    for index, (kind, name) in enumerate(terms):
        if kind in named and not (kind == "color" and index in backgrounds[1]):
            named[kind].append(name)
    if any(len(values) > 1 for values in named.values()):
        return None
    values = {field: values[0] if values else None for field, values in named.items()}
    try:
        request = Request(background=backgrounds[0], **values)
    except ValueError:
        return None
    return request if request.named else None


def _terms(text: str) -> list[tuple[str, str]]:
    """[(kind, name)] in reading order: attribute words, background words, and ("break", mark) for punctuation
    that ends a clause (a colon does not: "background: blue")."""
    terms = []
    for match in _TERM_PATTERN.finditer(" ".join(text.lower().split())):
        found = match.group(0)
        if found in _BACKGROUND_NOUNS:
            terms.append(("background", found))
        elif found in _BREAKS:
            terms.append(("break", found))
        else:
            terms.extend((kind, words[found]) for kind, words in _TERMS.items() if found in words)
    return terms


def _background_colours(terms: list[tuple[str, str]]) -> tuple[str | None, set[int]] | None:
    """(the background's colour, the term indices that name it); None if there are two background words or none
    has a colour beside it in its clause. The colour right before a background word is its own ("blue
    background"), else the one right after it ("the background is blue", "background: blue")."""
    nouns = [index for index, (kind, _) in enumerate(terms) if kind == "background"]
    if not nouns:
        return None, set()
    if len(nouns) > 1:
        return None
    noun = nouns[0]
    for index in (noun - 1, noun + 1):
        if 0 <= index < len(terms) and terms[index][0] == "color":
            return terms[index][1], {index}
    return None


assert set(REQUEST_ATTRIBUTES) == {"background", *_WORDS}
