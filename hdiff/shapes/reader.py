"""The shapes model's reader: from the sentence embedding of any wording to the scene the decoder knows.

Kandinsky 2.2 answers "the decoder only knows image embeddings" with a prior from the text embedding to the image
embedding. The shapes decoder knows the six template wordings of its world (hdiff.shapes.grammar): read in other
words it drew the wrong scene (6% all-attribute accuracy on one-object prompts in people's phrasings). The reader
is the analogue of that prior: a small MLP from the prompt's all-MiniLM-L6-v2 embedding to what it asks for —
per attribute one of the world's values or "unnamed", and whether it describes one object or two. The model
then conditions on the embedding of that scene in its first template (hdiff.shapes.grammar.describe), with every
unnamed attribute drawn from the world by the image's own generator (hdiff.shapes.world.complete). Two-object
prompts pass through as before: the decoder reads them in its own wording.

The reader is trained on the training phrasings of hdiff.shapes.phrasings and the templates, of training-split
scenes only, and evaluated on held-out phrasings of held-out scenes (hdiff.shapes_training.train_reader). Stored
beside the UNet as `reader.safetensors`: the input standardization (`input.mean`, `input.scale`), the MLP's layers
and one head per output; the heads' class names and the hidden width are in the file's metadata. Beside it,
`reader_words.txt` lists the words of its training prompts: before reading, a prompt's typing slips are mended to
them (hdiff.shapes.spelling). This module is the runtime part: it imports no trainer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from hdiff.errors import HdiffError
from hdiff.files import atomic_path
from hdiff.shapes.grammar import describe
from hdiff.shapes.spelling import mend, tokenizer_words
from hdiff.shapes.world import BACKGROUNDS, COLORS, POSITIONS, REQUEST_ATTRIBUTES, SHAPES, SIZES, Request, complete

READER_FILE = "reader.safetensors"
WORDS_FILE = "reader_words.txt"
UNNAMED = "unnamed"
ONE, TWO = "one", "two"
# output -> its classes; every attribute can be left unnamed
HEADS: dict[str, tuple[str, ...]] = {
    "objects": (ONE, TWO),
    "background": (UNNAMED, *BACKGROUNDS),
    "shape": (UNNAMED, *SHAPES),
    "color": (UNNAMED, *COLORS),
    "size": (UNNAMED, *SIZES),
    "position": (UNNAMED, *POSITIONS),
}


class Reader(torch.nn.Module):
    """MiniLM token embeddings (N, T, D) with their mask (N, T) → one logit vector per head.

    Each token passes a small MLP; each head pools the tokens with its own learned attention (`queries` weightings
    per head, softmax over the prompt's tokens), and an MLP names the class. Attention finds the words of one
    attribute wherever the phrasing puts them: a mean-pooled sentence embedding generalized to held-out phrasings
    at 57% (whole prompt read right), token attention at 92% (a selection split of the training phrasings).
    `words`: the lower-case words of its training prompts, which prompts are mended to (`read_prompts`)."""

    def __init__(self, input_dim: int, hidden: int, queries: int = 2, heads: dict[str, tuple[str, ...]] = HEADS,
                 words: frozenset[str] = frozenset()):
        super().__init__()
        self.heads = dict(heads)
        self.hidden, self.queries = hidden, queries
        self.words = frozenset(words)
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_scale", torch.ones(()))
        self.token = torch.nn.Sequential(torch.nn.Linear(input_dim, hidden), torch.nn.GELU())
        self.attention = torch.nn.ModuleDict({name: torch.nn.Linear(hidden, queries) for name in heads})
        self.out = torch.nn.ModuleDict({
            name: torch.nn.Sequential(torch.nn.Linear(hidden * queries, hidden), torch.nn.GELU(),
                                      torch.nn.Linear(hidden, len(classes)))
            for name, classes in heads.items()})

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.token((tokens.float() - self.input_mean) / self.input_scale)  # (N, T, H)
        logits = {}
        for name, attention in self.attention.items():
            scores = attention(hidden).masked_fill(~mask[..., None], float("-inf"))  # (N, T, Q)
            pooled = torch.einsum("ntq,nth->nqh", torch.softmax(scores, dim=1), hidden)  # (N, Q, H)
            logits[name] = self.out[name](pooled.flatten(1))  # (N, K)
        return logits


def token_embeddings(texts: list[str], sentence_model: str, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """The sentence model's contextual token embeddings, padded: (N, T, D) float32 and the mask (N, T) of real
    tokens."""
    from hdiff.embedding import load_sentence_model

    rows = load_sentence_model(sentence_model).encode(list(texts), output_value="token_embeddings",
                                                      batch_size=batch_size, convert_to_numpy=False)
    return pad_tokens([row.float().cpu() for row in rows])


def pad_tokens(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length (T_i, D) token rows → (N, T, D) zero-padded and the (N, T) mask of real tokens."""
    length = max(len(row) for row in rows)
    tokens = torch.zeros(len(rows), length, rows[0].shape[1])
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for index, row in enumerate(rows):
        tokens[index, :len(row)] = row
        mask[index, :len(row)] = True
    return tokens, mask


@torch.no_grad()
def read_requests(reader: Reader, tokens: torch.Tensor, mask: torch.Tensor) -> list[Request | None]:
    """What each prompt asks for: a Request (one object; the most likely value or unnamed per attribute), or None
    for a prompt the reader takes for two objects. An object colour read equal to the background's is left
    unnamed (drawn from the world)."""
    logits = reader(tokens, mask)
    chosen = {name: [reader.heads[name][i] for i in value.argmax(dim=1).tolist()] for name, value in logits.items()}
    requests: list[Request | None] = []
    for row in range(len(tokens)):
        if chosen["objects"][row] == TWO:
            requests.append(None)
            continue
        values = {name: (None if chosen[name][row] == UNNAMED else chosen[name][row]) for name in REQUEST_ATTRIBUTES}
        if values["color"] is not None and values["color"] == values["background"]:
            values["color"] = None
        requests.append(Request(**values))
    return requests


def save_reader(folder: str | os.PathLike, reader: Reader) -> None:
    """`reader.safetensors` and, where the reader has words, `reader_words.txt` in `folder` (an earlier reader's
    words file is removed where this one has none)."""
    from safetensors.torch import save_file

    metadata = {"heads": json.dumps(reader.heads), "hidden": str(reader.hidden), "queries": str(reader.queries)}
    tensors = {name: value.detach().contiguous() for name, value in reader.state_dict().items()}
    if reader.words:
        save_words(folder, reader.words)
    else:
        (Path(folder) / WORDS_FILE).unlink(missing_ok=True)
    with atomic_path(Path(folder) / READER_FILE) as partial:
        save_file(tensors, str(partial), metadata)


def save_words(folder: str | os.PathLike, words: frozenset[str]) -> None:
    """`reader_words.txt`: the reader's training words, sorted, one a line."""
    with atomic_path(Path(folder) / WORDS_FILE) as partial:
        partial.write_text("".join(word + "\n" for word in sorted(words)))


def load_words(folder: str | os.PathLike) -> frozenset[str]:
    """The words of `reader_words.txt` in `folder`; none where there is no such file (nothing is mended)."""
    path = Path(folder) / WORDS_FILE
    if not path.is_file():
        return frozenset()
    words = path.read_text().split()
    odd = [word for word in words if not (word.isalpha() and word.islower())]
    if odd:
        raise HdiffError(f"{path} holds {odd[0]!r}: it lists lower-case words of letters, one a line")
    return frozenset(words)


def load_reader(folder: str | os.PathLike) -> Reader | None:
    """The reader saved in a model folder, or None (models without one condition on the prompt's own embedding)."""
    path = Path(folder) / READER_FILE
    if not path.is_file():
        return None
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    try:
        heads = {name: tuple(classes) for name, classes in json.loads(metadata["heads"]).items()}
        hidden, queries = int(metadata["hidden"]), int(metadata["queries"])
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise HdiffError(f"{path} has no head names or hidden width in its metadata") from exc
    if heads != HEADS:
        raise HdiffError(f"{path} reads {sorted(heads)} with other classes than this world's {sorted(HEADS)}")
    tensors = load_file(str(path))
    reader = Reader(tensors["input_mean"].shape[0], hidden, queries, heads, load_words(folder))
    try:
        reader.load_state_dict(tensors)
    except RuntimeError as exc:
        raise HdiffError(f"{path} does not hold a reader of width {hidden}: {str(exc).splitlines()[0]}") from None
    return reader.eval()


def request_seed(generator: torch.Generator) -> np.random.Generator:
    """A numpy generator for an image's unnamed attributes, drawn from the image's own torch generator."""
    return np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator).item()))


def read_prompts(reader: Reader, prompts: list[str], sentence_model: str) -> list[Request | None]:
    """What each prompt asks for (`read_requests`), read after its typing slips are mended to the reader's
    training words (hdiff.shapes.spelling.mend)."""
    whole = tokenizer_words(sentence_model) if reader.words else frozenset()
    mended = [mend(prompt, reader.words, whole) for prompt in prompts]
    return read_requests(reader, *token_embeddings(mended, sentence_model))


def canonical_prompts(reader: Reader, prompts: list[str], sentence_model: str,
                      generators: list[torch.Generator]) -> list[str | None]:
    """Per prompt, the words the decoder knows for what it asks: its scene in the first template, unnamed
    attributes drawn by the image's generator; None for a two-object prompt (conditioned on its own words)."""
    requests = read_prompts(reader, prompts, sentence_model)
    return [None if request is None else describe(complete(request, request_seed(generator)))
            for request, generator in zip(requests, generators)]
