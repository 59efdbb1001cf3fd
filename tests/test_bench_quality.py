"""`hdiff bench quality` end to end on the tiny random-weight model: what it writes and that its comparisons are
at equal compute (its accuracy figures mean nothing on random weights)."""

from __future__ import annotations

import json

import pytest

import tiny_models as tm
from hdiff.bench import quality
from hdiff.errors import HdiffError


def test_quality_bench_writes_json_table_and_plot(tmp_path, capsys):
    model = tm.tiny_shapes_model(tmp_path / "tiny")
    out = tmp_path / "bq"
    assert quality.main(["--model", model, "--prompts", "8", "--standard-prompts", "4", "--two-object-prompts", "2",
                         "--taus", "0,2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["quality.json", "quality.md", "quality.png"]
    report = json.loads((out / "quality.json").read_text())
    assert report["cluster_on"] == "embedding" and report["default_tau"] == 1.0  # the tiny model has no prior
    assert report["standard_one_object"]["images"] == 4 and report["standard_two_object"]["images"] == 2
    assert report["timing_64"]["images"] == 64
    for name in ("clustered", "diverse"):
        hierarchical, fewer = report["sets"][name]["hierarchical"], report["sets"][name]["fewer_steps"]
        assert [r["tau"] for r in hierarchical] == [0.0, 2.0] and hierarchical[0]["saved"] == 0.0
        per_step = hierarchical[0]["unet_rows"] / report["steps"]  # standard sampling's rows per step
        for h, f in zip(hierarchical, fewer):  # the fewer-step run costs what the hierarchical one did, ± ½ step
            assert f["steps"] == quality.equal_compute_steps(report["steps"], h["saved"])
            assert abs(f["unet_rows"] - h["unet_rows"]) <= per_step / 2
            assert set(f["per_attribute"]) == {"background", "color", "shape", "size", "position", "count"}
    assert "| clustered | hdiff |" in (out / "quality.md").read_text()
    assert "64 images at default settings (τ = 1)" in capsys.readouterr().out


def test_quality_bench_rejects_bad_taus(tmp_path):
    with pytest.raises(HdiffError, match="--taus"):
        quality.main(["--model", tm.tiny_shapes_model(tmp_path / "tiny"), "--taus", "0,x", "--out", str(tmp_path)])


def test_quality_bench_clusters_by_a_prior_and_scales_its_default_taus(tmp_path):
    """A model folder with a layout prior: the bench clusters by it unless told otherwise, and its default τ sweep
    is 0, ½, 1, 1½, 2, 3 × the prior's τ."""
    import numpy as np

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
