"""The shapes model's layout prior: fit, features, storage, and what the adapter clusters by."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from hdiff.errors import HdiffError
from hdiff.shapes.prior import (
    ATTRIBUTE_WEIGHTS,
    PRIOR_FILE,
    fit_prior,
    load_prior,
    predict_attributes,
    prior_features,
    save_prior,
    scene_attribute,
)
from hdiff.shapes.prompts import diverse_set, training_pairs
from hdiff.shapes.world import BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES


def attribute_vectors(scenes, seed: int = 0, noise: float = 0.1, dim: int = 32) -> np.ndarray:
    """Vectors that encode each attribute linearly (one random direction per value) plus noise: what a
    conditioning space that separates the attributes looks like, without loading a sentence model."""
    rng = np.random.default_rng(seed)
    vocab = {"background": BACKGROUNDS, "position": list(POSITIONS), "size": SIZES, "color": list(COLORS),
             "shape": SHAPES}
    directions = {name: {v: rng.standard_normal(dim) for v in values} for name, values in vocab.items()}
    rows = [sum(directions[name][scene_attribute(scene, name)] for name in vocab) for scene in scenes]
    return np.asarray(rows) + noise * rng.standard_normal((len(scenes), dim))


@pytest.fixture(scope="module")
def fitted():
    train = [scene for _, scene in training_pairs() if len(scene.objects) == 1][::7]
    return fit_prior(attribute_vectors(train), train)


def test_prior_reads_attributes_of_held_out_combinations(fitted):
    held_out = [scene for _, scene in diverse_set(60, seed=3)]
    predicted = predict_attributes(fitted, torch.from_numpy(attribute_vectors(held_out)).float())
    for name in ATTRIBUTE_WEIGHTS:
        assert np.mean([p[name] == scene_attribute(s, name) for p, s in zip(predicted, held_out)]) >= 0.95, name


def test_features_are_weighted_distributions_and_layout_outweighs_colour(fitted):
    scenes = [scene for _, scene in diverse_set(40, seed=4)]
    features = prior_features(fitted, torch.from_numpy(attribute_vectors(scenes)).float()).numpy()
    sizes = [len(fitted["classes"][name]) for name in ATTRIBUTE_WEIGHTS]
    assert features.shape == (40, sum(sizes)) == (40, len(BACKGROUNDS) + len(POSITIONS) + 2 + len(COLORS) + 4)
    lo = 0
    for name, k in zip(ATTRIBUTE_WEIGHTS, sizes):  # each block sums to its weight: a scaled distribution
        assert np.allclose(features[:, lo:lo + k].sum(axis=1), ATTRIBUTE_WEIGHTS[name], atol=1e-5)
        lo += k

    def cosine_distance(a, b):
        return 1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    base = scenes[0]
    other_colour = next(c for c in COLORS if c not in (base.objects[0].color, base.background))
    other_place = next(p for p in POSITIONS if p != base.objects[0].position)
    obj = base.objects[0]
    variants = [base, dataclasses.replace(base, objects=(dataclasses.replace(obj, color=other_colour),)),
                dataclasses.replace(base, objects=(dataclasses.replace(obj, position=other_place),))]
    f = prior_features(fitted, torch.from_numpy(attribute_vectors(variants, noise=0.0)).float()).numpy()
    assert cosine_distance(f[0], f[1]) < 0.1 < cosine_distance(f[0], f[2])


def test_probabilities_match_sklearn_for_two_and_many_classes():
    from sklearn.linear_model import LogisticRegression

    train = [scene for _, scene in training_pairs() if len(scene.objects) == 1][::11]
    x = attribute_vectors(train, noise=1.0)
    prior = fit_prior(x, train)
    for name in ATTRIBUTE_WEIGHTS:  # size has two values (sklearn keeps one row for them), the rest more
        reference = LogisticRegression(C=1.0, max_iter=2000).fit(x, [scene_attribute(s, name) for s in train])
        assert prior["classes"][name] == list(reference.classes_)
        logits = torch.from_numpy(x).float() @ prior["tensors"][f"{name}.weight"].T + prior["tensors"][f"{name}.bias"]
        assert np.allclose(torch.softmax(logits, 1).numpy(), reference.predict_proba(x), atol=1e-4), name


def test_single_valued_attribute_is_certain():
    train = [scene for _, scene in training_pairs() if len(scene.objects) == 1 and scene.background == "white"][:30]
    prior = fit_prior(attribute_vectors(train), train)
    assert prior["classes"]["background"] == ["white"]
    assert predict_attributes(prior, torch.zeros(2, 32))[0]["background"] == "white"


def test_save_load_round_trip_and_bad_files(fitted, tmp_path):
    assert load_prior(tmp_path) is None  # models trained before the prior
    save_prior(tmp_path, fitted)
    loaded = load_prior(tmp_path)
    assert loaded["classes"] == fitted["classes"] and loaded["weights"] == fitted["weights"]
    assert loaded["default_tau"] == fitted["default_tau"]
    assert set(loaded["tensors"]) == set(fitted["tensors"])
    for name, tensor in fitted["tensors"].items():  # the stored values are the fitted ones, bit for bit
        assert loaded["tensors"][name].dtype == tensor.dtype and torch.equal(loaded["tensors"][name], tensor), name
    # The fitted weights may be non-contiguous views of sklearn's arrays and the loaded ones are contiguous: the
    # same numbers through another matmul kernel can round differently in the last bit. Features are probabilities
    # scaled by weights <= 3, so 1e-6 absolute is a few float32 ulps.
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(prior_features(loaded, x), prior_features(fitted, x), rtol=1e-5, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == [PRIOR_FILE]  # no partial file left behind

    from safetensors.torch import save_file

    save_file({"background.weight": torch.zeros(2, 32)}, str(tmp_path / PRIOR_FILE))
    with pytest.raises(HdiffError, match="metadata"):
        load_prior(tmp_path)
    metadata = {"classes": json.dumps(fitted["classes"]), "weights": json.dumps(fitted["weights"]),
                "default_tau": "0.1"}
    save_file({"background.weight": torch.zeros(2, 32)}, str(tmp_path / PRIOR_FILE), metadata)
    with pytest.raises(HdiffError, match="lacks"):
        load_prior(tmp_path)
    wrong = {k: v.contiguous() for k, v in fitted["tensors"].items()} | {"color.bias": torch.zeros(3)}
    save_file(wrong, str(tmp_path / PRIOR_FILE), metadata)
    with pytest.raises(HdiffError, match="color has weight"):
        load_prior(tmp_path)


def test_add_prior_adds_a_prior_to_a_model_folder(tiny_shapes, tmp_path):
    """What was run on the shipped weights: the prior from the folder's whitening and the training split."""
    import shutil

    from hdiff.models import load_adapter
    from hdiff.shapes_training.add_prior import main
    from hdiff.shapes.prior import DEFAULT_TAU

    folder = shutil.copytree(tiny_shapes, tmp_path / "model")  # a copy: the session's model is shared
    with pytest.raises(HdiffError, match="no layout prior"):
        load_adapter(str(folder), device="cpu", cluster_on="prior")
    pairs = [(prompt, scene) for prompt, scene in training_pairs() if len(scene.objects) == 1]
    vectors = attribute_vectors([scene for _, scene in pairs], dim=384).astype(np.float32)
    np.savez(tmp_path / "emb.npz", prompts=np.asarray([p for p, _ in pairs], dtype=str), embeddings=vectors)
    before = (folder / "hdiff_shapes.json").read_text()
    assert main([str(folder), "--embeddings", str(tmp_path / "emb.npz")]) == 0
    assert (folder / "hdiff_shapes.json").read_text() == before  # the model's own metadata is left alone
    adapter = load_adapter(str(folder), device="cpu")
    assert adapter.cluster_on == "prior" and adapter.default_tau == DEFAULT_TAU


def test_fit_prior_needs_one_object_scenes():
    with pytest.raises(HdiffError, match="no one-object|there are none"):
        fit_prior(np.zeros((0, 4)), [])


def test_add_prior_refuses_a_folder_without_a_unet(tmp_path):
    from hdiff.shapes_training.add_prior import main

    assert main([str(tmp_path)]) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def held_out_pairs():
    return diverse_set(40, seed=13)


@pytest.fixture(scope="module")
def held_out_cond(shipped, held_out_pairs):
    """The shipped model's conditioning of 40 held-out prompts."""
    return shipped.encode([p for p, _ in held_out_pairs], [])


def test_shipped_model_clusters_by_its_prior(shipped, held_out_pairs, held_out_cond):
    from hdiff.models import load_adapter

    assert shipped.cluster_on == "prior" and shipped.default_tau == pytest.approx(0.1)
    assert held_out_cond.features.shape == (40, 25) and held_out_cond.tensors["image_embeds"].shape == (40, 384)
    torch.testing.assert_close(torch.from_numpy(held_out_cond.features),  # the prior's features of the vectors
                               prior_features(shipped.info["prior"], held_out_cond.tensors["image_embeds"]))
    plain = load_adapter("hdiff/shapes", device="cpu", cluster_on="embedding")
    prompts = [p for p, _ in held_out_pairs[:6]]
    assert plain.default_tau == 1.0 and plain.encode(prompts, []).features.shape == (6, 384)
    with pytest.raises(HdiffError, match="cluster_on"):
        load_adapter("hdiff/shapes", device="cpu", cluster_on="pixels")


def test_shipped_prior_reads_held_out_prompts(shipped, held_out_pairs, held_out_cond):
    predicted = predict_attributes(shipped.info["prior"], held_out_cond.tensors["image_embeds"].float())
    right = np.mean([all(p[name] == scene_attribute(s, name) for name in ATTRIBUTE_WEIGHTS)
                     for p, (_, s) in zip(predicted, held_out_pairs)])
    assert right >= 0.95


def test_adapter_options_scheduler_names_and_unknown_options(tiny_shapes):
    """Scheduler names come from the one registry; an option the adapter does not know is refused, not dropped."""
    from hdiff.models.shapes import ShapesAdapter

    folder = tiny_shapes  # its default_scheduler: dpm++
    assert type(ShapesAdapter.from_pretrained(folder).scheduler).__name__ == "DPMSolverMultistepScheduler"
    ddim = ShapesAdapter.from_pretrained(folder, scheduler="ddim", cluster_on="embedding")
    assert type(ddim.scheduler).__name__ == "DDIMScheduler" and ddim.cluster_on == "embedding"
    with pytest.raises(HdiffError, match="unknown scheduler 'eulr'; choose one of ddpm, ddim, euler"):
        ShapesAdapter.from_pretrained(folder, scheduler="eulr")
    with pytest.raises(HdiffError, match="no option 'steps'; it accepts .*cluster_on"):
        ShapesAdapter.from_pretrained(folder, steps=3)
