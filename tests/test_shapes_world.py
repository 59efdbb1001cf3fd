"""The shapes world: renderer, split, grammar round trip, the oracle on clean and degraded renders, prompt sets."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from scipy import ndimage

from hdiff.shapes.grammar import NUM_TEMPLATES, describe, parse
from hdiff.shapes.oracle import ATTRIBUTES, all_correct, detect, score, score_prompt
from hdiff.shapes.prompts import clustered_set, diverse_set, training_pairs
from hdiff.shapes.world import (
    BACKGROUNDS,
    COLORS,
    IMAGE_SIZE,
    POSITIONS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    all_one_object_scenes,
    random_scene,
    render,
    split_of,
)

ONE = all_one_object_scenes()


def two_object_scenes(n: int, seed: int) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [random_scene(rng, ("train", "heldout")[i % 2], n_objects=2) for i in range(n)]


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a sampler might leave: a light blur, a slight colour shift, Gaussian noise σ ∈ [0.05, 0.08]."""
    x = image.astype(np.float64) / 255.0  # (H, W, 3)
    if rng.random() < 0.5:
        x = ndimage.uniform_filter(x, size=(3, 3, 1), mode="nearest")
    else:
        x = ndimage.gaussian_filter(x, sigma=(0.7, 0.7, 0.0), mode="nearest")
    x = x * rng.uniform(0.93, 1.0) + rng.uniform(-0.04, 0.04, size=3)
    x = x + rng.normal(0.0, rng.uniform(0.05, 0.08), size=x.shape)
    return np.clip(x, 0.0, 1.0)


def accuracy(scenes: list[Scene], images: list[np.ndarray]) -> float:
    return float(np.mean([all_correct(score(image, scene)) for image, scene in zip(images, scenes)]))


# --- world ---------------------------------------------------------------------------------------------------------


def test_vocabulary_sizes():
    assert {"circle", "square", "triangle"} < set(SHAPES)
    assert len(COLORS) >= 8 and len(BACKGROUNDS) >= 6 and set(BACKGROUNDS) <= set(COLORS)
    assert SIZES == ("small", "large") and len(POSITIONS) >= 5
    palette = np.array(list(COLORS.values()), dtype=float)
    gaps = np.linalg.norm(palette[:, None] - palette[None], axis=-1) + np.eye(len(palette)) * 1e9
    assert gaps.min() > 150


def test_render_is_deterministic_uint8():
    scenes = ONE[::97] + two_object_scenes(5, seed=0)
    for scene in scenes:
        image = render(scene)
        assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and image.dtype == np.uint8
        assert image.tobytes() == render(scene).tobytes()
    assert render(ONE[0]).tobytes() != render(ONE[1]).tobytes()


@pytest.mark.parametrize(
    "background, objects",
    [
        ("red", (Obj("circle", "red", "small", "center"),)),  # object invisible
        ("blue", ()),
        ("blue", (Obj("circle", "red", "small", "top left"),) * 3),
        ("blue", (Obj("circle", "red", "small", "top left"), Obj("square", "green", "large", "top left"))),
        ("blue", (Obj("circle", "red", "small", "center"), Obj("square", "green", "large", "top left"))),
        ("cyan", (Obj("circle", "red", "small", "center"),)),  # not a background colour
    ],
)
def test_invalid_scenes_raise(background, objects):
    with pytest.raises(ValueError):
        Scene(background, objects)


def test_unknown_words_raise():
    with pytest.raises(ValueError):
        Obj("hexagon", "red", "small", "center")


def test_split_is_by_combination():
    heldout = [scene for scene in ONE if split_of(scene) == "heldout"]
    assert 0.10 < len(heldout) / len(ONE) < 0.22
    train = [scene for scene in ONE if split_of(scene) == "train"]
    for field, vocabulary in (("shape", SHAPES), ("color", COLORS), ("size", SIZES), ("position", POSITIONS)):
        assert {getattr(scene.objects[0], field) for scene in train} == set(vocabulary)
    assert {scene.background for scene in train} == set(BACKGROUNDS)
    for scene in two_object_scenes(50, seed=1):
        parts = [split_of(Scene(scene.background, (obj,))) for obj in scene.objects]
        assert split_of(scene) == ("heldout" if "heldout" in parts else "train")


def test_random_scene_respects_split_and_seed():
    rng = np.random.default_rng(3)
    for split, n_objects in itertools.product(("train", "heldout"), (1, 2)):
        scenes = [random_scene(rng, split, n_objects) for _ in range(20)]
        assert all(split_of(s) == split and len(s.objects) == n_objects for s in scenes)
    draw = lambda: random_scene(np.random.default_rng(7), "heldout", 2)  # noqa: E731
    assert draw() == draw()


# --- grammar -------------------------------------------------------------------------------------------------------


def test_describe_parse_round_trip_all_scenes_and_templates():
    assert NUM_TEMPLATES >= 4
    for scene, template in itertools.product(ONE + two_object_scenes(100, seed=2), range(NUM_TEMPLATES)):
        text = describe(scene, template)
        assert parse(text) == scene, text


def test_templates_are_paraphrases():
    scene = Scene("blue", (Obj("circle", "red", "small", "top left"),))
    texts = {describe(scene, template) for template in range(NUM_TEMPLATES)}
    assert len(texts) == NUM_TEMPLATES
    assert "a small red circle in the top left on a blue background" in texts
    assert "blue backdrop, tiny red disc, upper left" in texts
    rng = np.random.default_rng(0)
    assert {describe(scene, rng=rng) for _ in range(60)} == texts


@pytest.mark.parametrize(
    "text",
    [
        "a photo of a cat",
        "",
        "a small purple circle in the top left on a blue background",  # colour outside the vocabulary
        "a small red circle in the top left on a red background",  # well-formed, but no valid scene
        "a small red circle in the top left on a blue background and a dog",
        "a small red circle on a blue background",  # a missing attribute is never guessed
        "a small red circle in the center and a big green square in the top left on a blue background",
    ],
)
def test_parse_refuses_text_outside_the_grammar(text):
    assert parse(text) is None


def test_parse_normalizes_case_space_and_full_stop():
    expected = Scene("blue", (Obj("circle", "red", "small", "top left"),))
    assert parse("  A small RED circle in the top  left on a blue background. ") == expected


# --- oracle --------------------------------------------------------------------------------------------------------


def test_oracle_on_clean_renders():
    scenes = ONE + two_object_scenes(200, seed=4)
    assert accuracy(scenes, [render(scene) for scene in scenes]) >= 0.99


def test_oracle_on_degraded_renders():
    rng = np.random.default_rng(5)
    one = [ONE[i] for i in rng.choice(len(ONE), size=400, replace=False)]
    two = two_object_scenes(150, seed=6)
    assert accuracy(one, [degrade(render(scene), rng) for scene in one]) >= 0.95
    assert accuracy(two, [degrade(render(scene), rng) for scene in two]) >= 0.95


def _change(scene: Scene, attribute: str, rng: np.random.Generator) -> Scene:
    """A valid scene differing from `scene` only in `attribute` (of its first object, or the background)."""
    obj = scene.objects[0]
    vocabulary = {"shape": SHAPES, "color": tuple(COLORS), "size": SIZES, "position": tuple(POSITIONS)}
    while True:
        try:
            if attribute == "background":
                candidate = Scene(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], scene.objects)
            else:
                value = vocabulary[attribute][rng.integers(len(vocabulary[attribute]))]
                candidate = Scene(scene.background, (dataclasses.replace(obj, **{attribute: value}),))
        except ValueError:
            continue
        if candidate != scene:
            return candidate


@pytest.mark.parametrize("attribute", ["background", "color", "shape", "size", "position"])
def test_oracle_is_not_permissive(attribute):
    rng = np.random.default_rng(8)
    for index in rng.choice(len(ONE), size=60, replace=False):
        scene = ONE[index]
        other = _change(scene, attribute, rng)
        result = score(render(other), scene)
        assert not result[attribute], (scene, other)
        assert all(result[a] for a in ATTRIBUTES if a != attribute), (scene, other, result)


def test_oracle_counts_objects():
    two = two_object_scenes(10, seed=9)
    for scene in two:
        one = Scene(scene.background, scene.objects[:1])
        assert not score(render(scene), one)["count"]
        assert not score(render(one), scene)["count"]
    blank = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), COLORS["blue"], dtype=np.uint8)
    result = score(blank, Scene("blue", (Obj("circle", "red", "small", "center"),)))
    assert result["background"] and not any(result[a] for a in ATTRIBUTES if a != "background")


def test_detect_reads_attributes_back():
    objects = (Obj("triangle", "yellow", "large", "top right"), Obj("cross", "cyan", "small", "bottom left"))
    scene = Scene("black", objects)
    detection = detect(render(scene))
    assert detection.background == "black"
    read = {(b.shape, b.color, b.size, b.position) for b in detection.blobs}
    assert read == {(o.shape, o.color, o.size, o.position) for o in scene.objects}


def test_segmentation_skips_only_components_too_small_to_be_objects(monkeypatch):
    """The oracle fills holes only in components whose box could hold MIN_AREA pixels (a filled component stays in its
    box): on noise, where there are hundreds a colour, it finds what filling every one of them finds."""
    from hdiff.shapes import oracle

    def every_component(image):
        pixels = oracle._as_float255(image)
        background = np.median(oracle._border(pixels), axis=0)
        background_name = oracle._nearest_color(background)
        offsets = pixels - background
        line, alpha = oracle._nearest_line(offsets, background, background_name)
        regions = []
        for k in np.unique(line[alpha > 0.5]):
            labels, count = ndimage.label((line == k) & (alpha > 0.5), structure=oracle._FOUR_CONNECTED)
            for index in range(1, count + 1):
                mask = ndimage.binary_fill_holes(labels == index)
                if mask.sum() >= oracle.MIN_AREA:
                    regions.append(oracle._region(offsets, background, mask, alpha))
        return background_name, regions

    rng = np.random.default_rng(0)
    noisy = [np.clip(render(scene).astype(int) + rng.integers(-90, 90, (IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 255)
             .astype(np.uint8) for scene in ONE[::97]]
    images = noisy + [rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8) for _ in range(10)]
    found = [detect(image) for image in images]
    monkeypatch.setattr(oracle, "_segment", every_component)
    assert [detect(image) for image in images] == found
    assert sum(len(d.blobs) for d in found) > 0


def test_score_prompt():
    scene = Scene("green", (Obj("square", "magenta", "large", "center"),))
    image = render(scene)
    assert score_prompt(image, "a photo of a cat") is None
    assert all_correct(score_prompt(image, describe(scene, 3)))
    assert all_correct(score_prompt(image.astype(np.float32) / 255.0, describe(scene, 1)))  # float images in [0, 1]
    noise = np.random.default_rng(0).random((IMAGE_SIZE, IMAGE_SIZE, 3))
    assert not all_correct(score_prompt(noise, describe(scene)))  # nonsense images score, they do not crash
    with pytest.raises(ValueError):
        score(image[:16], scene)


# --- prompt sets ---------------------------------------------------------------------------------------------------


def test_clustered_set():
    pairs = clustered_set(100, seed=0)
    assert pairs == clustered_set(100, seed=0) and len({text for text, _ in pairs}) == 100
    assert all(split_of(scene) == "heldout" and parse(text) == scene for text, scene in pairs)
    assert len({(scene.background, scene.objects[0].shape) for _, scene in pairs}) <= 4
    assert len(clustered_set(500, seed=1)) == 500


def test_diverse_set():
    pairs = diverse_set(200, seed=0)
    assert pairs == diverse_set(200, seed=0) and len({text for text, _ in pairs}) == 200
    assert all(split_of(scene) == "heldout" and parse(text) == scene for text, scene in pairs)
    assert {scene.background for _, scene in pairs} == set(BACKGROUNDS)
    assert {scene.objects[0].shape for _, scene in pairs} == set(SHAPES)
    assert len({scene for _, scene in pairs}) == 200  # each combination once before any repeats
    two = diverse_set(50, seed=0, n_objects=2)
    assert all(len(scene.objects) == 2 and split_of(scene) == "heldout" for _, scene in two)


def test_training_pairs():
    pairs = training_pairs(seed=0)
    assert pairs[:50] == training_pairs(seed=0)[:50] and pairs[-50:] == training_pairs(seed=0)[-50:]
    assert all(split_of(scene) == "train" for _, scene in pairs)
    one = {(text, scene) for text, scene in pairs if len(scene.objects) == 1}
    train = [scene for scene in ONE if split_of(scene) == "train"]
    assert one == {(describe(scene, t), scene) for scene in train for t in range(NUM_TEMPLATES)}
    assert 0.15 < 1 - len(one) / len(pairs) < 0.25
