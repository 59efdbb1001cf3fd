"""The frozen wording evaluation set and its robustness classes, for measuring the reader (never for training).

`tests/data/wording_eval/prompts.jsonl` holds one-object prompts written blind to the project's grammar, each with
its scene (PROVENANCE.md there). `robustness_sets` derives one test set per thing people do to any sentence from
it: attribute order permuted, filler words added or dropped, synonyms for size, place and colour words, case and
punctuation noise, one typo in a non-attribute word. `masked` is the sentence shape of a prompt (its attribute
words masked, case and punctuation normalised), for checking that no grammar writes the set's shapes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from hdiff.shapes.wording import BACKGROUND_NOUNS, LEXICON
from hdiff.shapes.world import Request

EVAL_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "wording_eval"
_MASKS = {"shape": "SHAPE", "color": "COLOR", "size": "SIZE", "position": "POS"}
_MASK_TERMS = sorted(((word, _MASKS[field]) for field, values in LEXICON.items()
                      for words in values.values() for word in words), key=lambda pair: -len(pair[0]))
# one alternation between shared word bounds (longest first): 20× faster than bounds on each word, the same matches
_MASK_PATTERN = re.compile(rf"(?<![\w-])(?:{'|'.join(re.escape(word) for word, _ in _MASK_TERMS)})(?![\w])")
_MASK_OF = dict(_MASK_TERMS)


def eval_pairs(path: Path = EVAL_DIR / "prompts.jsonl") -> list[tuple[str, Request]]:
    """(prompt, the Request of its scene) for every line of the evaluation set."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(row["prompt"], Request(**row["scene"])) for row in rows]


def out_of_world(path: Path = EVAL_DIR / "out_of_world.jsonl") -> list[tuple[str, str]]:
    """(prompt, the word the world does not have, or "two objects")."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(row["prompt"], row["unknown"]) for row in rows]


def masked(prompt: str) -> str:
    """The prompt's sentence shape: lower case, attribute words masked (SHAPE, COLOR, SIZE, POS), punctuation
    normalised (a run of marks is its first mark, with one space after it; none at the end) and spaces collapsed.
    Marks inside the sentence stay: "red, circle" and "red | circle" are two shapes."""
    text = _MASK_PATTERN.sub(lambda m: f" {_MASK_OF[m.group(0)]} ", " ".join(prompt.lower().split()))
    text = re.sub(r"\s*([^\w\s])[^\w\s]*\s*", r"\1 ", text)  # "a , b!!" -> "a, b! "
    return " ".join(text.split()).rstrip(" .!?,;:")



# ---------------------------------------------------------------------------------------------- robustness classes

ROBUSTNESS_CLASSES: tuple[str, ...] = ("order", "filler", "synonyms", "case_punctuation", "typo")
_FILLERS = ("please", "just", "simple", "nice", "really", "kindly", "okay", "basically", "clean", "now", "so",
            "here", "exactly", "quickly", "for me")
_DROPPABLE = re.compile(r"\b(a|an|the|please|just|plain|simple|single|one|there|some|it|is|of)\b ?", re.IGNORECASE)
_COLOUR_VARIANTS = ("bright {c}", "pure {c}", "vivid {c}", "solid {c}", "{c}-coloured", "{c}-colored")
_ADJECTIVES = "|".join(sorted((re.escape(word) for field in ("size", "color") for words in LEXICON[field].values()
                               for word in words), key=len, reverse=True))
_ADJECTIVE_PAIR = re.compile(  # two attribute adjectives side by side: "small red", "red, small"
    rf"(?<![\w-])({_ADJECTIVES})( |, )({_ADJECTIVES})(?![\w-])", re.IGNORECASE)
_FIELD_OF = {word: (field, value) for field, values in LEXICON.items() for value, words in values.items()
             for word in words}
_ATTRIBUTE_WORD = re.compile("|".join(rf"(?<![\w-]){re.escape(word)}(?![\w])" for word, _ in _MASK_TERMS),
                             re.IGNORECASE)
_NOT_SWAPPABLE = {"centered", "centred"}  # adjectival forms that do not stand where a place noun stands


def robustness_sets(pairs: list[tuple[str, Request]], seed: int = 0) -> dict[str, list[tuple[str, Request]]]:
    """One test set per robustness class, each prompt of `pairs` changed once (same targets): `order` (clauses
    shuffled, adjacent attribute adjectives swapped), `filler` (filler words added, or articles and fillers
    dropped), `synonyms` (size, place and colour words replaced by other words for the same value),
    `case_punctuation` (case and punctuation noise), `typo` (one typo in a word that names no attribute)."""
    from hdiff.shapes.wording import change_case, change_punctuation, typo

    rng = np.random.default_rng(seed)
    writers = {
        "order": lambda text: _permuted(text, rng),
        "filler": lambda text: _with_fillers(text, rng) if rng.random() < 0.5 or _without_fillers(text) == text
        else _without_fillers(text),
        "synonyms": lambda text: _with_synonyms(text, rng),
        "case_punctuation": lambda text: change_case(change_punctuation(text, rng), rng),
        "typo": lambda text: _with_typo(text, rng, typo),
    }
    return {name: [(write(text), target) for text, target in pairs] for name, write in writers.items()}


def _permuted(text: str, rng: np.random.Generator) -> str:
    """Clauses (split at , ; . ! ? | / and dashes, which stay where they were) in another order, and a pair of
    attribute adjectives swapped."""
    text = _ADJECTIVE_PAIR.sub(lambda m: m.group(3) + m.group(2) + m.group(1), text, count=1)
    body, end = re.fullmatch(r"(.*?)([\s.!?]*)", text.strip(), re.DOTALL).groups()
    parts = re.split(r"(\s*[,;.!?|/]+\s+|\s+[—–-]+\s+)", body)  # clause, separator, clause, ...
    clauses, separators = parts[::2], parts[1::2]
    if len(clauses) > 1:
        order = rng.permutation(len(clauses))
        while list(order) == list(range(len(clauses))):
            order = rng.permutation(len(clauses))
        body = "".join(clauses[i] + (separators[k] if k < len(separators) else "") for k, i in enumerate(order))
    return body + end


def _with_fillers(text: str, rng: np.random.Generator) -> str:
    """One to three filler words at clause boundaries, the start or the end."""
    clauses = re.split(r"(?<=[,;.!?|])\s+", text.strip())
    for _ in range(1 + int(rng.integers(3))):
        at = int(rng.integers(len(clauses) + 1))
        filler = _FILLERS[int(rng.integers(len(_FILLERS)))]
        if at == len(clauses):
            clauses[-1] = clauses[-1] + " " + filler
        else:
            clauses[at] = filler + " " + clauses[at]
    return " ".join(clauses)


def _without_fillers(text: str) -> str:
    """Articles, "please", "just", "plain" and the like dropped."""
    return " ".join(_DROPPABLE.sub("", text).split())


def _with_synonyms(text: str, rng: np.random.Generator) -> str:
    """Each size, place and colour word replaced by another word for the same value (colour: an intensifier or
    "-coloured", or aqua / fuchsia for cyan / magenta)."""
    def replace(match: re.Match) -> str:
        word = match.group(0)
        field, value = _FIELD_OF[word.lower()]
        if field == "shape":
            return word
        if field == "color":
            options = [w for w in LEXICON["color"][value] if w != word.lower()]
            options += [variant.format(c=word) for variant in _COLOUR_VARIANTS]
        else:
            options = [w for w in LEXICON[field][value]
                       if w != word.lower() and w not in _NOT_SWAPPABLE and not w.endswith("-hand")]
        return options[int(rng.integers(len(options)))]

    return _ATTRIBUTE_WORD.sub(replace, text)


def _with_typo(text: str, rng: np.random.Generator, typo) -> str:
    """One typo in a word of at least four letters that is no attribute word, background noun or key."""
    spans = [(m.start(), m.end()) for m in _ATTRIBUTE_WORD.finditer(text)]
    words = [(m.start(), m.group(0)) for m in re.finditer(r"[A-Za-z]{4,}", text)]
    free = [(start, word) for start, word in words
            if not any(lo <= start < hi for lo, hi in spans) and word.lower() not in BACKGROUND_NOUNS]
    if not free:
        return text
    start, word = free[int(rng.integers(len(free)))]
    changed = word
    while changed == word:
        changed = typo(word, rng)
    return text[:start] + changed + text[start + len(word):]


# ---------------------------------------------------------------------------------------------- the reader alone

ATTRIBUTES = ("background", "shape", "color", "size", "position")


def reader_figures(reader, pairs: list[tuple[str, object]], sentence_model: str) -> dict[str, float | int]:
    """How the reader alone reads (prompt, target) pairs: `all` (read exactly: every attribute, named or unnamed,
    and the count) and per attribute; a two-object Scene target is right when read as two objects."""
    from hdiff.shapes.reader import read_prompts
    from hdiff.shapes.world import Scene

    read_back = read_prompts(reader, [prompt for prompt, _ in pairs], sentence_model)
    rows = []
    for got, (_, target) in zip(read_back, pairs):
        if isinstance(target, Scene) and len(target.objects) == 2:
            rows.append({"all": got is None, "objects": got is None})
            continue
        want = target if isinstance(target, Request) else Request.of(target)
        row = {name: got is not None and getattr(got, name) == getattr(want, name) for name in ATTRIBUTES}
        rows.append({"all": got == want, "objects": got is not None, **row})
    figures: dict[str, float | int] = {"n": len(rows)}
    for key in ("all", "objects", *ATTRIBUTES):
        scored = [row[key] for row in rows if key in row]
        figures[key] = float(np.mean(scored)) if scored else float("nan")
    return figures


def main(argv: list[str] | None = None) -> int:
    """`python -m hdiff.shapes_training.wording_eval [--model FOLDER]`: the reader alone on the evaluation set, its
    robustness classes and the grammar's sets; a Markdown table and, with --out, JSON."""

    from hdiff.errors import CommandParser, run_as_command
    from hdiff.shapes.model import SENTENCE_MODEL, WEIGHTS_DIR
    from hdiff.shapes.reader import load_reader
    from hdiff.shapes.reader_sets import evaluation_sets

    parser = CommandParser(prog="python -m hdiff.shapes_training.wording_eval", description=main.__doc__)
    parser.add_argument("--model", type=Path, default=WEIGHTS_DIR, help="a shapes model folder with a reader")
    parser.add_argument("--prompts", type=int, default=300, help="prompts per grammar set (default 300)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    def body() -> None:
        reader = load_reader(args.model)
        pairs = eval_pairs()
        grammar = evaluation_sets(args.prompts)
        sets = {"evaluation": pairs, **robustness_sets(pairs), **grammar}
        report = {name: reader_figures(reader, set_pairs, SENTENCE_MODEL) for name, set_pairs in sets.items()}
        print("| set | prompts | all | background | shape | colour | size | place | one object |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, figures in report.items():
            cells = [f"{100 * figures[k]:.1f}%" if figures[k] == figures[k] else "—"
                     for k in ("all", *ATTRIBUTES, "objects")]
            print(f"| {name} | {figures['n']} | " + " | ".join(cells) + " |", flush=True)
        if args.out is not None:
            args.out.write_text(json.dumps(report, indent=1) + "\n")

    return run_as_command(body)


if __name__ == "__main__":
    raise SystemExit(main())


# ---------------------------------------------------------------------------------------------- the reader's figures

READER_BAR = 0.9  # issue 26: every set read exactly at least this often


def reader_scores(reader, sentence_model: str, pairs: list[tuple[str, Request]]) -> dict[str, float]:
    """The share of prompts `reader` reads exactly (all five attributes) in `pairs` (`evaluation`) and in each
    robustness class derived from them; no images are made."""
    from hdiff.shapes.reader import read_prompts

    scores = {}
    for name, changed in {"evaluation": pairs, **robustness_sets(pairs)}.items():
        read_back = read_prompts(reader, [prompt for prompt, _ in changed], sentence_model)
        scores[name] = float(np.mean([got == want for got, (_, want) in zip(read_back, changed)]))
    return scores
