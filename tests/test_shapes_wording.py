"""People's wording in the shapes world: the phrasing grammar and its reader, partial prompts and the oracle on them,
the model's reader (training, storage) and the shipped model on held-out phrasings."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from hdiff.errors import HdiffError
from hdiff.shapes.built import built_accuracy
from hdiff.shapes.grammar import describe
from hdiff.shapes.oracle import ATTRIBUTES, all_correct, prompt_accuracy, score
from hdiff.shapes.phrasings import _CHOICES, forms_of, phrase, read
from hdiff.shapes.reader import HEADS, canonical_prompts, load_reader, read_requests, save_reader
from hdiff.shapes_training.train_reader import (
    ReaderConfig,
    config_from,
    evaluation_sets,
    labels,
    train_reader,
    training_examples,
)
from hdiff.shapes.world import (
    BACKGROUNDS,
    Obj,
    Request,
    Scene,
    all_one_object_scenes,
    complete,
    render,
    split_of,
)

ONE = all_one_object_scenes()


def partial_requests(n: int, seed: int) -> list[Request]:
    rng = np.random.default_rng(seed)
    out = []
    for index in rng.choice(len(ONE), size=n):
        named = Request.of(ONE[index]).named
        keep = {k: v for k, v in named.items() if rng.random() < 0.5} or {"color": named["color"]}
        out.append(Request(**keep))
    return out


# --- the grammar and its reader ------------------------------------------------------------------------------------


@pytest.mark.parametrize("heldout", [False, True])
def test_every_phrasing_reads_back_as_its_request(heldout):
    rng = np.random.default_rng(1)
    requests = [Request.of(ONE[i]) for i in rng.choice(len(ONE), size=1500)] + partial_requests(1500, seed=2)
    for request in requests:
        text = phrase(request, rng, heldout=heldout)
        assert read(text) == request, text


def test_held_out_forms_are_new_in_every_choice():
    for choice, forms in _CHOICES.items():
        training, heldout = forms_of(choice, False), forms_of(choice, True)
        assert training and heldout, choice
        assert not {(f.text, f.order, f.joiner) for f in training} & {(f.text, f.order, f.joiner) for f in heldout}
    rng = np.random.default_rng(3)
    scene = Scene("blue", (Obj("circle", "red", "small", "top left"),))
    training = {phrase(Request.of(scene), rng) for _ in range(3000)}
    heldout = {phrase(Request.of(scene), rng, heldout=True) for _ in range(300)}
    assert not training & heldout and len(heldout) > 100


def test_read_takes_templates_whole_and_refuses_what_it_cannot_check():
    two = Scene("blue", (Obj("circle", "red", "small", "top left"), Obj("square", "green", "large", "bottom right")))
    assert read(describe(two, 2)) == two
    assert read("a red circle") == Request(shape="circle", color="red")
    assert read("something blue in the top left") == Request(color="blue", position="top left")
    assert read("THE BACKGROUND IS YELLOW, a tiny plus sign at the center") == Request(
        background="yellow", shape="cross", size="small", position="center")
    for text in ("a photo of a cat", "", "a red circle and a blue square", "a red circle on a red background",
                 "a small large circle", "a circle on a background"):
        assert read(text) is None, text


def test_complete_draws_only_what_is_unnamed():
    rng = np.random.default_rng(4)
    scenes = [complete(Request(color="red", position="center"), rng) for _ in range(400)]
    assert {s.objects[0].color for s in scenes} == {"red"} and {s.objects[0].position for s in scenes} == {"center"}
    assert {s.background for s in scenes} == set(BACKGROUNDS) - {"red"}
    assert len({s.objects[0].shape for s in scenes}) == 4 and len({s.objects[0].size for s in scenes}) == 2
    assert complete(Request.of(ONE[5]), rng) == ONE[5]
    with pytest.raises(ValueError):
        Request(background="red", color="red")


# --- the oracle on partial prompts ---------------------------------------------------------------------------------


def test_oracle_scores_only_what_a_request_names():
    scene = Scene("green", (Obj("triangle", "yellow", "large", "bottom left"),))
    image = render(scene)
    result = score(image, Request(color="yellow", position="bottom left"))
    assert set(result) == {"color", "position", "count"} and all_correct(result)
    wrong = score(image, Request(shape="circle", background="green"))
    assert wrong == {"background": True, "shape": False, "count": True}
    assert score(image, Request.of(scene)) == score(image, scene) == {a: True for a in ATTRIBUTES}


def test_prompt_accuracy_and_the_build_figure():
    scenes = ONE[::150]
    right = [(render(s), phrase(Request.of(s), np.random.default_rng(i))) for i, s in enumerate(scenes)]
    wrong_colour = Scene(scenes[0].background, (Obj(scenes[0].objects[0].shape, "white" if scenes[0].background
                                                    != "white" else "black", "large", "center"),))
    samples = right + [(render(wrong_colour), describe(scenes[0])), (render(scenes[1]), "a photo of a cat")]
    figures = prompt_accuracy(samples)
    assert figures["n"] == len(right) + 1 and figures["unscored"] == 1
    assert figures["all"] == pytest.approx(len(right) / (len(right) + 1))
    assert prompt_accuracy([(render(scenes[0]), "a cat")]) is None

    def tar_members(pairs):
        for key, (image, prompt) in enumerate(pairs):
            buffer = io.BytesIO()
            from PIL import Image

            Image.fromarray(image).save(buffer, format="png")
            yield f"{key:05d}", {"png": buffer.getvalue(), "txt": prompt.encode(), "json": b"{}"}

    assert built_accuracy("hdiff/shapes", tar_members(samples)) == {**figures, "not_understood": 1}  # the cat
    assert built_accuracy("kandinsky-community/kandinsky-2-2-decoder", tar_members(samples)) is None
    assert built_accuracy(None, tar_members(samples)) is None  # a config without a model


# --- the reader ----------------------------------------------------------------------------------------------------


def test_training_examples_are_training_scenes_and_phrasings_only():
    cfg = ReaderConfig(phrasings_per_scene=1, partial_per_scene=1)
    examples = training_examples(cfg)
    scenes = [t if isinstance(t, Scene) else None for _, t in examples]
    assert all(split_of(s) == "train" for s in scenes if s is not None)
    heldout_texts = {text for pairs in evaluation_sets(50).values() for text, _ in pairs}
    assert not heldout_texts & {text for text, _ in examples}
    per_head = labels([t for _, t in examples])
    assert all((per_head[name] >= -100).all() and per_head[name].max() < len(HEADS[name]) for name in HEADS)
    assert (per_head["objects"] == 1).sum() > 0 and (per_head["color"] == 0).sum() > 0  # two objects; unnamed


def test_reader_training_is_reproducible_and_round_trips(tmp_path):
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(300, 7, 16, generator=generator).half()
    mask = torch.arange(7)[None, :] < torch.randint(2, 8, (300, 1), generator=generator)  # (300, 7)
    per_head = labels([Request.of(ONE[i]) for i in range(300)])
    cfg = ReaderConfig(hidden=32, epochs=2, batch_size=64, warmup_steps=2)
    first = train_reader(cfg, tokens, mask, per_head, log=lambda _: None)
    second = train_reader(cfg, tokens, mask, per_head, log=lambda _: None)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    padded = torch.cat([tokens, torch.randn(300, 3, 16, generator=generator).half()], dim=1)  # more padding
    wider = torch.cat([mask, torch.zeros(300, 3, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        assert torch.allclose(first(padded, wider)["color"], first(tokens, mask)["color"], atol=1e-5)
    save_reader(tmp_path, first)
    assert read_requests(load_reader(tmp_path), tokens, mask) == read_requests(first, tokens, mask)
    (tmp_path / "reader.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Exception):
        load_reader(tmp_path)
    assert load_reader(tmp_path / "absent") is None


def test_reader_config_from_a_recorded_file(tmp_path):
    path = tmp_path / "hdiff_shapes.json"
    path.write_text('{"reader": {"config": {"seed": 3, "epochs": 7}}}')
    assert config_from(path) == ReaderConfig(seed=3, epochs=7)
    path.write_text('{"seed": 3, "colour": 1}')
    with pytest.raises(HdiffError, match="colour"):
        config_from(path)


# --- the shipped model ---------------------------------------------------------------------------------------------


def test_shipped_reader_reads_held_out_phrasings(shipped_reader):
    from hdiff.shapes.model import SENTENCE_MODEL
    from hdiff.shapes.reader import token_embeddings

    sets = evaluation_sets(60, seed=77)
    for name, floor in (("phrasings", 0.9), ("partial", 0.9), ("templates", 0.99)):
        prompts, targets = zip(*sets[name])
        read_back = read_requests(shipped_reader, *token_embeddings(list(prompts), SENTENCE_MODEL))
        wanted = [t if isinstance(t, Request) else Request.of(t) for t in targets]
        assert np.mean([a == b for a, b in zip(read_back, wanted)]) >= floor, name


def test_unnamed_attributes_follow_the_image_seed(shipped_reader):
    from hdiff.shapes.model import SENTENCE_MODEL

    def canonical(seeds):
        return canonical_prompts(shipped_reader, ["a red circle"] * len(seeds), SENTENCE_MODEL,
                                 [torch.Generator().manual_seed(s) for s in seeds])

    texts = canonical(range(40))
    assert texts == canonical(range(40)) and len(set(texts)) > 10
    scenes = [read(text) for text in texts]
    assert all(s.objects[0].color == "red" and s.objects[0].shape == "circle" for s in scenes)
    assert {s.background for s in scenes} == set(BACKGROUNDS) - {"red"}


def test_paraphrased_set_is_the_clustered_set_in_held_out_phrasings():
    from hdiff.shapes.prompts import clustered_set, paraphrased_set

    pairs = paraphrased_set(60, seed=21)
    assert [scene for _, scene in pairs] == [scene for _, scene in clustered_set(60, seed=21)]
    assert all(Request.of(scene) == read(text) for text, scene in pairs)
    assert not {text for text, _ in pairs} & {text for text, _ in training_examples(ReaderConfig(phrasings_per_scene=1, partial_per_scene=1))}
