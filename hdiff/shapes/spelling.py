"""Mend typing slips in a prompt before the reader reads it: "bakground" → "background", "wiht" → "with".

The reader (hdiff.shapes.reader) reads all-MiniLM-L6-v2's contextual tokens, and its wordpiece tokenizer cuts a
misspelt word into pieces the reader never saw together. The mender works on words before tokenization: a word is
mended when

1. the reader's training prompts never used it (`reader_words.txt` beside the reader: the words of the training
   writers with the noise off, hdiff.shapes_training.train_reader.training_words),
2. the tokenizer does not know it whole (a real word, written as meant: "what", "here", stays as it is), and
3. exactly one training word lies within one edit of it (Damerau: a letter inserted, dropped or changed, or two
   neighbours swapped),

and it then becomes that word, in the case it was written in. A word with no such neighbour, or several, stays.

What a prompt names is never changed, nor made: a word that names a value — the world's own attribute words and
their synonyms (hdiff.shapes.wording.LEXICON), the colours, shapes and places the world lacks, count words and
plurals (what hdiff.shapes.wording.not_understood looks for) — is neither mended nor a word a slip is mended into.
So "a purpel hexagn" stays as written, and "bed" never becomes "red".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from hdiff.shapes.wording import COUNT_WORDS, GENERIC_NOUNS, LEXICON, UNKNOWN_COLOURS, UNKNOWN_PLACES, UNKNOWN_SHAPES

WORD = re.compile(r"[A-Za-z]+")
MIN_LENGTH = 3  # shorter words have too many neighbours to mend


def words_of(texts: Iterable[str]) -> set[str]:
    """The lower-case words (runs of letters) of `texts`."""
    return {word.lower() for text in texts for word in WORD.findall(text)}


def _naming_words() -> frozenset[str]:
    named = words_of(word for values in LEXICON.values() for words in values.values() for word in words)
    named |= words_of((*UNKNOWN_COLOURS, *UNKNOWN_SHAPES, *UNKNOWN_PLACES, *COUNT_WORDS))
    plurals = {word + ending for word in named | set(GENERIC_NOUNS) for ending in ("s", "es")}
    return frozenset(named | plurals)


# words that name a value, in the world or outside it, and plurals: never mended, never mended into
NAMING_WORDS: frozenset[str] = _naming_words()


def one_edit(word: str, other: str) -> bool:
    """Whether `other` is `word` with one letter inserted, dropped or changed, or two neighbours swapped."""
    if word == other or abs(len(word) - len(other)) > 1:
        return False
    if len(word) == len(other):
        differ = [i for i, (a, b) in enumerate(zip(word, other)) if a != b]
        return len(differ) == 1 or (len(differ) == 2 and differ[1] == differ[0] + 1
                                    and word[differ[0]] == other[differ[1]] and word[differ[1]] == other[differ[0]])
    short, long = sorted((word, other), key=len)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def mended_word(word: str, known: frozenset[str], whole: frozenset[str] = frozenset()) -> str:
    """`word` mended to the one word of `known` (lower case) within one edit of it, in `word`'s case (lower, UPPER or
    Capitalized); `word` itself when it is known, naming, whole to the tokenizer (`whole`), shorter than MIN_LENGTH,
    or has no such neighbour or several, or when its one neighbour names a value."""
    lower = word.lower()
    if len(lower) < MIN_LENGTH or lower in known or lower in whole or lower in NAMING_WORDS:
        return word
    neighbours = {other for pool in (known, NAMING_WORDS) for other in pool if one_edit(lower, other)}
    if len(neighbours) != 1 or neighbours <= NAMING_WORDS:
        return word
    (mended,) = neighbours
    if word.isupper():
        return mended.upper()
    return mended[:1].upper() + mended[1:] if word[:1].isupper() else mended


def mend(text: str, known: frozenset[str], whole: frozenset[str] = frozenset()) -> str:
    """`text` with each word mended (`mended_word`); everything between words kept as it is."""
    if not known:
        return text
    return WORD.sub(lambda match: mended_word(match.group(0), known, whole), text)


@functools.lru_cache(maxsize=4)
def tokenizer_words(sentence_model: str) -> frozenset[str]:
    """The words the sentence model's tokenizer knows whole (its vocabulary's entries of letters only, lower
    case; word pieces start with ##)."""
    from hdiff.embedding import load_sentence_model

    vocabulary = load_sentence_model(sentence_model).tokenizer.get_vocab()
    return frozenset(entry.lower() for entry in vocabulary if entry.isalpha())
