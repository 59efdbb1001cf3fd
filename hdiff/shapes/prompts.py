"""Prompt sets drawn from the shapes world: benchmark sets (clustered, diverse) and the training pairs.

Every builder is deterministic in its seed and returns (prompt, scene) pairs; the scene is the ground truth the
oracle scores against. Benchmark sets default to held-out combinations, which the trainer never sees.
"""

from __future__ import annotations

import itertools

import numpy as np

from hdiff.shapes.grammar import NUM_TEMPLATES, describe
from hdiff.shapes.phrasings import phrase, read
from hdiff.shapes.wording import add_noise, free_phrase
from hdiff.shapes.world import (
    BACKGROUNDS,
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    Request,
    Scene,
    Split,
    all_one_object_scenes,
    random_scene,
    split_of,
)

TWO_OBJECT_SHARE = 0.2  # of the training list


def clustered_set(n: int, seed: int = 0, split: Split = "heldout") -> list[tuple[str, Scene]]:
    """n distinct prompts of one-object scenes from few (background, shape) pairs: 2 × 2, widened only as n needs.

    Colour, size, position and template vary inside a cluster; backgrounds and shapes are chosen by `seed`.
    """
    rng = np.random.default_rng(seed)
    backgrounds = [BACKGROUNDS[i] for i in rng.permutation(len(BACKGROUNDS))]
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))]
    scenes = _scenes_of(split)
    n_backgrounds, n_shapes = 2, 2
    while True:
        pool = [
            scene
            for scene in scenes
            if scene.background in backgrounds[:n_backgrounds] and scene.objects[0].shape in shapes[:n_shapes]
        ]
        if len(pool) * NUM_TEMPLATES >= n or (n_backgrounds, n_shapes) == (len(BACKGROUNDS), len(SHAPES)):
            break
        if n_shapes < len(SHAPES) and (n_shapes < n_backgrounds or n_backgrounds == len(BACKGROUNDS)):
            n_shapes += 1
        else:
            n_backgrounds += 1
    return _distinct_prompts(pool, n, rng)


def diverse_set(n: int, seed: int = 0, split: Split = "heldout", n_objects: int = 1) -> list[tuple[str, Scene]]:
    """n distinct prompts spread over all attributes: every combination of the split once before any repeats.

    With n_objects=2, n distinct two-object scenes of the split (heldout: at least one held-out combination).
    """
    rng = np.random.default_rng(seed)
    if n_objects == 2:
        scenes: dict[Scene, None] = {}
        while len(scenes) < n:
            scenes.setdefault(random_scene(rng, split, n_objects=2))
        return [(describe(scene, rng=rng), scene) for scene in scenes]
    return _distinct_prompts(_scenes_of(split), n, rng)


def paraphrased_set(n: int, seed: int = 0) -> list[tuple[str, Scene]]:
    """The clustered set's scenes, each prompt rewritten as people write: in turn a held-out phrasing
    (hdiff.shapes.phrasings, wordings the reader never saw) and a free rendering with people's words and noise
    (hdiff.shapes.wording), about held-out combinations; every prompt is one the oracle reads."""
    rng = np.random.default_rng(seed)
    return [(people_wording(Request.of(scene), rng, free=bool(index % 2)), scene)
            for index, (_, scene) in enumerate(clustered_set(n, seed))]


def people_wording(request: Request, rng: np.random.Generator, free: bool, heldout: bool = True) -> str:
    """The request in a phrasing of the grammar (held-out forms, or training ones) or, with `free`, in a free
    rendering with people's noise; drawn again until the oracle reads back exactly the request
    (hdiff.shapes.phrasings.read), so that every image of such a prompt can be scored."""
    while True:
        text = add_noise(free_phrase(request, rng), rng, typo_rate=0.0) if free else phrase(request, rng, heldout)
        if read(text) == request:
            return text


def demo_prompts(concepts: int = 8, per_concept: int = 24, seed: int = 0) -> list[str]:
    """A corpus shaped like a synthetic-data job: `concepts` concepts (a background, a place and a size, all
    different), each asked for in `per_concept` distinct prompts in people's wording (half free renderings with
    people's words and noise, half the grammar's training and held-out phrasings) that name colour and shape at
    even odds each, so that what is left open varies per image."""
    rng = np.random.default_rng(seed)
    layouts = list(itertools.product(BACKGROUNDS, POSITIONS, SIZES))
    prompts: list[str] = []
    for index in rng.choice(len(layouts), size=concepts, replace=False):
        background, position, size = layouts[index]
        colors = [color for color in COLORS if color != background]
        concept: dict[str, None] = {}
        while len(concept) < per_concept:
            request = Request(background, shape=SHAPES[rng.integers(len(SHAPES))] if rng.random() < 0.5 else None,
                              color=colors[rng.integers(len(colors))] if rng.random() < 0.5 else None, size=size,
                              position=position)
            style = rng.random()
            concept.setdefault(people_wording(request, rng, free=style < 0.5, heldout=style < 0.75))
        prompts += concept
    return prompts


def training_pairs(seed: int = 0) -> list[tuple[str, Scene]]:
    """Every train one-object combination in every template, then two-object train scenes (TWO_OBJECT_SHARE)."""
    rng = np.random.default_rng(seed)
    pairs = [
        (describe(scene, template), scene)
        for scene, template in itertools.product(_scenes_of("train"), range(NUM_TEMPLATES))
    ]
    n_two = round(len(pairs) * TWO_OBJECT_SHARE / (1 - TWO_OBJECT_SHARE))
    pairs += [(describe(scene, rng=rng), scene) for scene in (random_scene(rng, "train", 2) for _ in range(n_two))]
    return pairs


def _scenes_of(split: Split) -> list[Scene]:
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    return [scene for scene in all_one_object_scenes() if split_of(scene) == split]


def _distinct_prompts(pool: list[Scene], n: int, rng: np.random.Generator) -> list[tuple[str, Scene]]:
    """n (prompt, scene) pairs from the pool in random order: each scene once, in a random template, then again in
    a template it has not had yet, and so on."""
    capacity = len(pool) * NUM_TEMPLATES
    if n > capacity:
        raise ValueError(f"asked for {n} distinct prompts, but only {capacity} exist")
    order = rng.permutation(len(pool))
    templates = np.stack([rng.permutation(NUM_TEMPLATES) for _ in pool])  # (len(pool), NUM_TEMPLATES)
    pairs = []
    for rank in range(NUM_TEMPLATES):
        for i in order:
            if len(pairs) == n:
                return pairs
            pairs.append((describe(pool[i], int(templates[i, rank])), pool[i]))
    return pairs


def main(argv: list[str] | None = None) -> int:
    """`python -m hdiff.shapes.prompts demo > data/demo_prompts.jsonl`: the demo build's corpus."""
    import json
    import sys

    from hdiff.errors import CommandParser

    parser = CommandParser(prog="python -m hdiff.shapes.prompts", description=main.__doc__)
    parser.add_argument("corpus", choices=["demo"])
    parser.parse_args(argv)
    sys.stdout.writelines(json.dumps({"prompt": prompt}) + "\n" for prompt in demo_prompts())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
