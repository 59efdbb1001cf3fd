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
