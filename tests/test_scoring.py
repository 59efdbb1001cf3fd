"""Scorers on tiny random-weight twins built here (tests/tiny_scorers.py): CLIP score as torchmetrics defines it, the
safety checker's flag (images untouched), the aesthetic MLP, the shapes oracle, paired similarity; bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_scorers as ts
from hdiff import hub
from hdiff.errors import HdiffError
from hdiff.scoring import SCORERS, check_scorer, load_scorer, require_cached
from hdiff.scoring.similarity import paired_similarity, pixel_embeddings
from hdiff.shapes.prompts import clustered_set
from hdiff.shapes.world import render

REPO = Path(__file__).resolve().parents[1]
RED = np.full((32, 32, 3), [255, 0, 0], np.uint8)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)] + [RED]


@pytest.fixture(scope="module")
def twins(tmp_path_factory, images):
    root = tmp_path_factory.mktemp("scorers")
    return {"clip": str(ts.save_clip(root / "clip")),
            "nsfw": str(ts.save_safety_checker(root / "nsfw", flag_like=images[3])),
            "aesthetic": str(ts.save_aesthetic(root / "aesthetic"))}


def test_the_registry_holds_the_four_scorers_and_refuses_others_in_one_line():
    assert {"clip", "aesthetic", "nsfw", "oracle"} <= set(SCORERS)
    with pytest.raises(HdiffError) as exc:
        check_scorer("clipp")
    message = str(exc.value)
    assert "\n" not in message and "'clipp'" in message and "aesthetic, clip, nsfw, oracle" in message


def test_clip_score_is_100_times_the_clamped_cosine(twins, images):
    from transformers import CLIPModel, CLIPProcessor

    prompts = ["a red square", "a cat on a mat", "blue", "red"]
    scores = load_scorer("clip", model=twins["clip"])(images, prompts)
    model, processor = CLIPModel.from_pretrained(twins["clip"]), CLIPProcessor.from_pretrained(twins["clip"])
    with torch.no_grad():  # an independent path: the model's own logits are exp(logit_scale) × cosine
        out = model(**processor(text=prompts, images=images, return_tensors="pt", padding=True))
        cosine = out.logits_per_image.diag() / model.logit_scale.exp()
    assert scores == pytest.approx((100 * cosine.clamp_min(0)).numpy(), abs=1e-3)
    assert (cosine < 0).any() and (scores >= 0).all()  # the twin gives some negative cosines: clamped to 0


def test_nsfw_flags_the_image_like_a_concept_and_blacks_out_nothing(twins, images):
    copies = [image.copy() for image in images]
    flags = load_scorer("nsfw", model=twins["nsfw"])(images, [""] * 4)
    assert flags.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert all((a == b).all() for a, b in zip(images, copies))
    assert SCORERS["nsfw"].kind == "flag"


def test_aesthetic_is_the_mlp_over_unit_clip_image_embeddings(twins, images):
    from transformers import CLIPModel, CLIPProcessor

    from hdiff.scoring.aesthetic import load_mlp

    scorer = load_scorer("aesthetic", model=twins["aesthetic"], clip=twins["clip"])
    model, processor = CLIPModel.from_pretrained(twins["clip"]), CLIPProcessor.from_pretrained(twins["clip"])
    with torch.no_grad():
        embeds = model(**processor(text=["x"] * 4, images=images, return_tensors="pt", padding=True)).image_embeds
        expected = load_mlp(twins["aesthetic"])(embeds / embeds.norm(dim=-1, keepdim=True)).squeeze(-1)
    assert scorer(images, [""] * 4) == pytest.approx(expected.numpy(), abs=1e-5)
    assert scorer.identity()["clip"] == twins["clip"] and scorer.identity()["revision"].startswith("sha256:")



def test_the_aesthetic_mlp_is_read_by_the_upstream_key_names(twins):
    from safetensors.torch import load_file

    from hdiff.scoring.aesthetic import load_mlp

    state = load_file(f"{twins['aesthetic']}/model.safetensors")
    assert sorted(state) == sorted(f"layers.{i}.{part}" for i in (0, 2, 4, 6, 7) for part in ("weight", "bias"))
    x = torch.randn(5, ts.PROJECTION)
    expected = x
    for i in (0, 2, 4, 6, 7):  # no activations: the Linear layers in key order, dropouts idle in eval
        expected = expected @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    with torch.no_grad():
        assert load_mlp(twins["aesthetic"])(x) == pytest.approx(expected, abs=1e-5)


def test_aesthetic_weights_in_another_layout_or_a_pickle_are_one_line(tmp_path):
    from safetensors.torch import save_file

    from hdiff.scoring.aesthetic import load_mlp

    renamed = {f"predictor.{key}": value for key, value in ts.aesthetic_state().items()}
    (tmp_path / "prefixed").mkdir()
    save_file(renamed, str(tmp_path / "prefixed" / "model.safetensors"))
    with pytest.raises(HdiffError) as exc:
        load_mlp(str(tmp_path / "prefixed"))
    assert "\n" not in str(exc.value) and "missing layers.0.weight" in str(exc.value)
    pickled = ts.save_aesthetic_pickle(tmp_path / "upstream" / "sac+logos+ava1-l14-linearMSE.pth")
    for source in (pickled, pickled.parent):  # the file named, or the folder holding only it
        with pytest.raises(HdiffError) as exc:
            load_mlp(str(source))
        assert "\n" not in str(exc.value) and "pickle" in str(exc.value) and "docs/reference.md" in str(exc.value)


def test_the_documented_conversion_of_the_upstream_pth_loads(tmp_path, monkeypatch):
    from hdiff.scoring.aesthetic import load_mlp

    text = (REPO / "docs" / "reference.md").read_text()
    section = text[text.index("### Aesthetic predictor weights"):]
    snippet = section[section.index("```python\n") + len("```python\n"):section.index("\n```", section.index("```python"))]
    ts.save_aesthetic_pickle(tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "docs/reference.md", "exec"), {})
    mlp = load_mlp(str(tmp_path / "aesthetic"))
    assert all(torch.equal(mlp.state_dict()[key], value) for key, value in ts.aesthetic_state().items())

def test_oracle_scores_the_world_exactly():
    (prompt, scene), (other, other_scene) = clustered_set(8, seed=3)[:2]
    assert other_scene != scene
    scorer = load_scorer("oracle")
    image = render(scene).astype(np.uint8)
    scores = scorer([image, render(other_scene).astype(np.uint8), image], [prompt, prompt, "a photo of a cat"])
    assert scores[0] == 100.0 and scores[1] == 0.0 and np.isnan(scores[2])


def test_pixel_similarity_is_one_for_the_same_image_and_less_for_another(images):
    similarity = paired_similarity(pixel_embeddings, images, [images[0], images[1], images[0], images[3]])
    assert similarity[[0, 1, 3]] == pytest.approx(1.0)
    assert abs(similarity[2]) < 0.2  # two noise images


def test_a_scorer_model_missing_offline_is_one_line_naming_it(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert hub.offline()
    for name, model in (("clip", "openai/clip-vit-large-patch14"), ("nsfw", "CompVis/stable-diffusion-safety-checker")):
        with pytest.raises(hub.NotCached) as exc:
            require_cached(name)
        assert "\n" not in str(exc.value) and f"scorer {name}: model {model!r}" in str(exc.value)
        assert exc.value.command.startswith(f"hf download {model}")
    require_cached("oracle")  # no model
