"""The reader's evaluation sets: prompts in the grammar's held-out forms, the templates and free renderings, about
held-out attribute combinations, each with what it asks for. Used by the reader's trainer and by `hdiff bench
shipped`, so it lives with the runtime (the benchmarks never import the training tools)."""

from __future__ import annotations

import numpy as np

from hdiff.shapes.phrasings import phrase
from hdiff.shapes.prompts import diverse_set
from hdiff.shapes.wording import add_noise, free_phrase
from hdiff.shapes.world import Request, Scene

Target = Scene | Request  # what a prompt asks for: a whole scene (templates) or some attributes of one object


def evaluation_sets(n: int, seed: int = 2024) -> dict[str, list[tuple[str, Target]]]:
    """Held-out attribute combinations only: `phrasings` (held-out phrasings, every attribute named), `partial`
    (held-out phrasings naming some attributes), `templates` (the six templates), `two_object` (templates) and
    `free` (free renderings with people's noise, every attribute named)."""
    rng = np.random.default_rng(seed)
    requests = [Request.of(scene) for _, scene in diverse_set(n, seed, "heldout")]
    partial = [partial_example(Request.of(scene), rng, heldout=True)
               for _, scene in diverse_set(n, seed + 1, "heldout")]
    free = [Request.of(scene) for _, scene in diverse_set(n, seed + 4, "heldout")]
    return {
        "phrasings": [(phrase(request, rng, heldout=True), request) for request in requests],
        "partial": partial,
        "templates": diverse_set(n, seed + 2, "heldout"),
        "two_object": diverse_set(n, seed + 3, "heldout", n_objects=2),
        "free": [(add_noise(free_phrase(request, rng), rng), request) for request in free],
    }


def partial_example(request: Request, rng: np.random.Generator, heldout: bool = False,
                     writer=None) -> tuple[str, Request]:
    """The request with each attribute kept at even odds (at least one, never all five), in words: the phrasing
    grammar's (training or held-out forms) or `writer`'s."""
    named = list(request.named.items())
    while True:
        keep = rng.random(len(named)) < 0.5
        if 0 < keep.sum() < len(named):
            break
    partial = Request(**{name: value for (name, value), k in zip(named, keep) if k})
    text = phrase(partial, rng, heldout=heldout) if writer is None else writer(partial, rng)
    return text, partial
