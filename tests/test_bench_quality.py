"""`hdiff bench quality` end to end on the tiny random-weight model: what it writes and that its comparisons are
at equal compute (its accuracy figures mean nothing on random weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tiny_models as tm
from hdiff.bench import quality
from hdiff.errors import HdiffError


def test_quality_bench_writes_json_table_and_plot(tmp_path, capsys):
    model = tm.tiny_shapes_model(tmp_path / "tiny")  # 4 steps by default
    out = tmp_path / "bq"
    assert quality.main(["--model", model, "--prompts", "8", "--standard-prompts", "4", "--two-object-prompts", "2",
                         "--taus", "0,2", "--low-steps", "2,9", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["quality.json", "quality.md", "quality.png"]
    report = json.loads((out / "quality.json").read_text())
    assert report["cluster_on"] == "embedding" and report["default_tau"] == 1.0  # the tiny model has no prior
    assert report["standard_one_object"]["images"] == 4 and report["standard_two_object"]["images"] == 2
    assert report["timing_64"]["images"] == 64
    assert report["base_steps"] == [4, 2]  # a "low" step count above the model's own is dropped
    for name in ("clustered", "diverse"):
        result = report["sets"][name]
        hierarchical, comparisons = result["hierarchical"], result["comparisons"]
        assert [(r["steps"], r["tau"]) for r in hierarchical] == [(4, 0.0), (4, 2.0), (2, 0.0), (2, 2.0)]
        standard = {r["steps"]: r for r in result["fewer_steps"]}
        assert standard[4] == hierarchical[0] and standard[2] == hierarchical[2]  # τ = 0 is standard sampling
        assert [c["hierarchical"] for c in comparisons] == [1, 3]  # every τ > 0 point, once
        for c in comparisons:
            h, f = hierarchical[c["hierarchical"]], standard[c["standard_steps"]]
            rows_per_step = f["unet_rows"] / f["steps"]
            # standard sampling gets at least the hierarchical run's compute, and less than one step more
            assert h["unet_rows"] <= f["unet_rows"] < h["unet_rows"] + rows_per_step
            assert h["steps_per_image"] == pytest.approx(h["unet_rows"] / rows_per_step)
            assert c["better"] == quality.better(h, f)
            assert set(f["per_attribute"]) == {"background", "color", "shape", "size", "position", "count"}
            assert f["render_error"] > 0  # random weights draw nothing like the scene
        assert sum(report["verdicts"][name].values()) == len(comparisons)
    markdown = (out / "quality.md").read_text()
    assert "| clustered | hdiff | 4 | 2 |" in markdown and "| clustered | 2 | 2 |" in markdown
    printed = capsys.readouterr().out
    assert "64 images at default settings (τ = 1)" in printed
    assert "clustered: at equal compute hdiff is more accurate in" in printed


def test_render_error_is_zero_for_exact_renders_and_grows_with_the_difference():
    from hdiff.shapes.prompts import clustered_set
    from hdiff.shapes.world import render

    scenes = [scene for _, scene in clustered_set(4, seed=1)]
    exact = [render(scene) for scene in scenes]
    assert quality.render_error(exact, scenes) == 0.0
    off = [np.clip(image.astype(np.int16) + 10, 0, 255).astype(np.uint8) for image in exact]
    assert 0 < quality.render_error(off, scenes) <= 10
    assert quality.render_error(exact[::-1], scenes) > quality.render_error(off, scenes)  # other scenes differ more


def test_equal_compute_steps_never_gives_standard_sampling_less_compute():
    assert [quality.equal_compute_steps(c) for c in (0.2, 1.0, 2.04, 2.99, 3.0, 17.6)] == [1, 1, 3, 3, 3, 18]
    assert quality.better({"accuracy": 1.0}, {"accuracy": 0.9}) == "hdiff"
    assert quality.better({"accuracy": 0.9}, {"accuracy": 0.9}) == "tie"
    assert quality.better({"accuracy": 0.8}, {"accuracy": 0.9}) == "standard"


def test_quality_bench_rejects_bad_taus_and_step_counts(tmp_path):
    model = tm.tiny_shapes_model(tmp_path / "tiny")
    with pytest.raises(HdiffError, match="--taus"):
        quality.main(["--model", model, "--taus", "0,x", "--out", str(tmp_path / "a")])
    with pytest.raises(HdiffError, match="--low-steps"):
        quality.main(["--model", model, "--low-steps", "6,0", "--out", str(tmp_path / "b")])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing half-written


def test_quality_bench_clusters_by_a_prior_and_scales_its_default_taus(tmp_path):
    """A model folder with a layout prior: the bench clusters by it unless told otherwise, and its default τ sweep
    is 0, ½, 1, 1½, 2, 3 × the prior's τ."""
    from hdiff.shapes.prior import DEFAULT_TAU, fit_prior, save_prior
    from hdiff.shapes.prompts import training_pairs

    model = tm.tiny_shapes_model(tmp_path / "tiny")
    scenes = [scene for _, scene in training_pairs() if len(scene.objects) == 1][::40]
    vectors = np.random.default_rng(0).standard_normal((len(scenes), 384))
    save_prior(model, fit_prior(vectors, scenes))
    out = tmp_path / "bq"
    common = ["--model", model, "--prompts", "6", "--standard-prompts", "2", "--two-object-prompts", "2"]
    assert quality.main([*common, "--out", str(out)]) == 0
    report = json.loads((out / "quality.json").read_text())
    assert report["cluster_on"] == "prior" and report["default_tau"] == DEFAULT_TAU
    taus = [r["tau"] for r in report["sets"]["clustered"]["hierarchical"]]
    assert taus == pytest.approx([m * DEFAULT_TAU for m in (0, 0.5, 1, 1.5, 2, 3)])
    assert quality.main([*common, "--taus", "0", "--cluster-on", "embedding", "--out", str(out)]) == 0
    assert json.loads((out / "quality.json").read_text())["cluster_on"] == "embedding"
