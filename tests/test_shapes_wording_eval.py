"""The frozen wording evaluation set (tests/data/wording_eval, written blind to the grammar): nobody trains on it
and no grammar writes its sentence shapes; the shipped reader follows it and its robustness classes (the 90% bar is
measured by `python -m hdiff.shapes_training.evaluate_wording --reader`); the detector names what the world does not
have."""

from __future__ import annotations

import numpy as np
import pytest

from hdiff.shapes.grammar import NUM_TEMPLATES, describe
from hdiff.shapes.phrasings import phrase
from hdiff.shapes.wording import (Unknown, describe_unknown, free_phrase, free_two_objects, not_understood,
                                  warn_not_understood)
from hdiff.shapes_training import wording_eval
from hdiff.shapes_training.wording_eval import ROBUSTNESS_CLASSES, eval_pairs, masked, out_of_world, robustness_sets
from hdiff.shapes.world import Request, all_one_object_scenes, random_scene


# Two sentence shapes that the phrasing grammar (issue 16) wrote before the evaluation set existed, and that its
# writer, blind to the grammar, happened to write too: the plainest sentence of the world and the place-first one.
PHRASING_SHAPES_WRITTEN_BOTH_WAYS = {
    "a SIZE COLOR SHAPE in the POS corner on a COLOR background",
    "an image of a SIZE COLOR SHAPE in the POS corner on a COLOR background",
    "POS: SIZE COLOR SHAPE, COLOR background",
}


def writer_outputs(n: int, seed: int = 0) -> dict[str, set[str]]:
    """Masked outputs of every prompt writer the reader is trained on: the templates, the phrasing grammar's
    training and held-out forms, and the free renderings (one and two objects), each naming every attribute or
    some."""
    rng = np.random.default_rng(seed)
    scenes = all_one_object_scenes()
    out: dict[str, set[str]] = {"grammar": set(), "free": set()}
    out["grammar"] |= {masked(describe(scene, template)) for scene in scenes[::7] for template in range(NUM_TEMPLATES)}
    for index in range(n):
        request = Request.of(scenes[int(rng.integers(len(scenes)))])
        if index % 3 == 2:
            request = Request(**{k: v for k, v in request.named.items() if rng.random() < 0.6}
                              or {"shape": request.shape})
        out["grammar"].add(masked(phrase(request, rng, heldout=bool(index % 2))))
        out["free"] |= {masked(free_phrase(request, rng)), masked(free_phrase(request, rng))}
        if index % 10 == 0:
            out["free"].add(masked(free_two_objects(random_scene(rng, n_objects=2), rng)))
    return out


def test_no_evaluation_prompt_is_a_writer_output():
    """With attribute words masked and case and punctuation normalised, no evaluation prompt is a sentence the
    free renderings write (120,000 drawn), and the phrasing grammar shares only shapes it had before the set."""
    outputs = writer_outputs(60_000)
    assert len(outputs["free"]) > 100_000 and len(outputs["grammar"]) > 10_000
    shapes = [masked(prompt) for prompt, _ in eval_pairs()]
    assert [shape for shape in shapes if shape in outputs["free"]] == []
    assert {shape for shape in shapes if shape in outputs["grammar"]} <= PHRASING_SHAPES_WRITTEN_BOTH_WAYS


# --- what is not understood ----------------------------------------------------------------------------------------


def test_every_out_of_world_prompt_is_named_and_no_evaluation_prompt_is():
    for prompt, unknown in out_of_world():
        found = not_understood(prompt)
        if unknown == "two objects":
            assert any(u.kind == "objects" for u in found), prompt
        else:
            assert unknown in [u.word for u in found], prompt
    assert [prompt for prompt, _ in eval_pairs() if not_understood(prompt)] == []


def test_not_understood_words():
    assert not_understood("a purple hexagon") == [Unknown("purple", "colour"), Unknown("hexagon", "shape")]
    assert [u.kind for u in not_understood("a red circle and a blue square")] == ["objects"]
    assert [u.word for u in not_understood("two red circles on white")] == ["two", "circles"]
    assert [u.word for u in not_understood("a red dot near the left edge")] == ["left", "edge"]
    for prompt in ("a tiny red circle right in the middle, top quality", "big aqua box in the top right-hand corner",
                   "small | sharp edges | bottom left corner | white bg",
                   "small blue dot, upper letf, white bg", "a red circle, a red background"):
        assert not_understood(prompt) == [], prompt
    line = describe_unknown("a purple hexagon", not_understood("a purple hexagon"))
    assert "\n" not in line and "'a purple hexagon'" in line and "'purple'" in line and "'hexagon'" in line


def test_each_prompt_not_understood_is_warned_about():
    import warnings

    from hdiff.errors import HdiffNotUnderstood

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        count = warn_not_understood(["a red circle", "a purple hexagon", "an orange square in the top left"])
    assert count == 2 and [w.category for w in caught] == [HdiffNotUnderstood] * 2
    assert "'purple'" in str(caught[0].message) and "'orange'" in str(caught[1].message)


# --- the shipped reader on the evaluation set and its robustness classes (the reader alone, no images) -----------


@pytest.fixture(scope="module")
def reader_scores(shipped_reader):
    """Per set, the share of 50 evaluation prompts (every sixth) and of their robustness variants that the shipped
    reader reads exactly (all five attributes, typing slips mended first)."""
    from hdiff.shapes.model import SENTENCE_MODEL

    return wording_eval.reader_scores(shipped_reader, SENTENCE_MODEL, eval_pairs()[::6])


# Behaviour, not the bar: the shipped reader follows people's wording far above chance (88-92% on these 50 prompts,
# each attribute has 3-8 values). Issue 26's 90% bar on all 300 prompts and each class is measured by
# `python -m hdiff.shapes_training.evaluate_wording --reader` (docs/shapes-model.md).
FOLLOWS_WORDING = 0.8


def test_shipped_reader_reads_the_evaluation_set(reader_scores):
    assert reader_scores["evaluation"] >= FOLLOWS_WORDING, reader_scores


@pytest.mark.parametrize("name", ROBUSTNESS_CLASSES)
def test_shipped_reader_is_robust_to_what_people_do_to_sentences(reader_scores, name):
    assert reader_scores[name] >= FOLLOWS_WORDING, reader_scores


def test_robustness_sets_change_prompts_but_not_targets():
    pairs = eval_pairs()
    sets = robustness_sets(pairs)
    assert set(sets) == set(ROBUSTNESS_CLASSES)
    for name, changed in sets.items():
        assert [t for _, t in changed] == [t for _, t in pairs], name
        assert np.mean([a != b for (a, _), (b, _) in zip(changed, pairs)]) > 0.8, name
    assert sets == robustness_sets(pairs)  # deterministic
    for (text, _), (before, _) in zip(sets["typo"], pairs):  # the typo spares the attribute words
        assert masked(text).count("COLOR") == masked(before).count("COLOR")
