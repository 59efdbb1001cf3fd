"""`hdiff bench quality` end to end on the tiny random-weight model: what it writes, where its defaults come from,
and that its comparisons are at equal compute (its accuracy figures mean nothing on random weights).

One run at the defaults is shared by the module; each test reads a different part of it."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from hdiff.bench import quality
from hdiff.errors import HdiffError

MULTIPLES = (0, 0.5, 1, 1.5, 2, 3)  # the default τ sweep, in units of the model's τ


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def prior_model(tiny_shapes, tmp_path_factory) -> str:
    """The tiny shapes model (4 steps by default) with a layout prior fitted on random vectors (in a copy)."""
    import shutil

    from hdiff.shapes.prior import fit_prior, save_prior
    from hdiff.shapes.prompts import training_pairs

    model = str(shutil.copytree(tiny_shapes, tmp_path_factory.mktemp("tiny-prior") / "model"))
    scenes = [scene for _, scene in training_pairs() if len(scene.objects) == 1][::40]
    vectors = np.random.default_rng(0).standard_normal((len(scenes), 384))
    save_prior(model, fit_prior(vectors, scenes))
    return model


@pytest.fixture(scope="module")
def default_run(prior_model, tmp_path_factory):
    """(report, output folder, printed text) of one run at the default τ sweep, with a lower step count 2 (and 9,
    above the model's 4, which is dropped)."""
    out = tmp_path_factory.mktemp("bq") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = quality.main(["--model", prior_model, "--prompts", "3", "--standard-prompts", "1",
                             "--two-object-prompts", "1", "--timing-prompts", "2", "--low-steps", "2,9",
                             "--out", str(out)])
    assert code == 0
    return json.loads((out / "quality.json").read_text()), out, printed.getvalue()


def test_quality_bench_writes_json_table_and_plot(default_run):
    report, out, printed = default_run
    assert sorted(p.name for p in out.iterdir()) == ["quality.json", "quality.md", "quality.png"]
    assert (out / "quality.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert report["timing"]["images"] == 2
    assert report["standard_one_object"]["images"] == 1 and report["standard_two_object"]["images"] == 1
    assert report["base_steps"] == [4, 2]  # a "low" step count above the model's own is dropped
    markdown = (out / "quality.md").read_text()
    tau = report["default_tau"]
    assert f"| clustered | hdiff | 4 | {2 * tau:g} |" in markdown and f"| diverse | 2 | {2 * tau:g} |" in markdown
    assert f"2 images at default settings (τ = {tau:g})" in printed
    assert "clustered: at equal compute hdiff is more accurate in" in printed


def test_quality_bench_clusters_by_the_prior_and_scales_its_default_taus(default_run):
    """A model folder with a layout prior: the bench clusters by it unless told otherwise, and its default τ sweep
    is 0, ½, 1, 1½, 2, 3 × the prior's τ, at each base step count."""
    from hdiff.shapes.prior import DEFAULT_TAU

    report, _, _ = default_run
    assert report["cluster_on"] == "prior" and report["default_tau"] == DEFAULT_TAU
    for name in ("clustered", "paraphrased", "diverse"):
        points = [(r["steps"], r["tau"]) for r in report["sets"][name]["hierarchical"]]
        assert [steps for steps, _ in points] == [4] * len(MULTIPLES) + [2] * len(MULTIPLES)
        assert [tau for _, tau in points] == pytest.approx([m * DEFAULT_TAU for m in MULTIPLES] * 2, rel=1e-5)


def test_every_hierarchical_point_meets_standard_sampling_at_equal_compute(default_run):
    report, _, _ = default_run
    for name in ("clustered", "paraphrased", "diverse"):
        result = report["sets"][name]
        hierarchical, comparisons = result["hierarchical"], result["comparisons"]
        standard = {r["steps"]: r for r in result["fewer_steps"]}
        assert [c["hierarchical"] for c in comparisons] == [i for i, r in enumerate(hierarchical) if r["tau"] > 0]
        for c in comparisons:
            h, f = hierarchical[c["hierarchical"]], standard[c["standard_steps"]]
            rows_per_step = f["unet_rows"] / f["steps"]
            # standard sampling gets at least the hierarchical run's compute, and less than one step more
            assert h["unet_rows"] <= f["unet_rows"] < h["unet_rows"] + rows_per_step
            assert h["steps_per_image"] == pytest.approx(h["unet_rows"] / rows_per_step, rel=1e-9)
            assert set(f["per_attribute"]) == {"background", "color", "shape", "size", "position", "count"}
            assert f["render_error"] > 0  # random weights draw nothing like the scene
        assert any(h["saved"] > 0 for h in hierarchical)  # the equal-compute runs are not all at full compute


def test_cluster_on_flag_overrides_the_prior(prior_model, tmp_path):
    out = tmp_path / "bq"
    assert quality.main(["--model", prior_model, "--prompts", "1", "--standard-prompts", "1",
                         "--two-object-prompts", "1", "--timing-prompts", "1", "--taus", "0", "--low-steps", "",
                         "--cluster-on", "embedding", "--sets", "paraphrased", "--out", str(out)]) == 0
    report = json.loads((out / "quality.json").read_text())
    assert report["cluster_on"] == "embedding" and report["default_tau"] == 1.0  # τ on the embedding's scale
    assert list(report["sets"]) == ["paraphrased"]  # --sets: only the sets named


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


@pytest.mark.parametrize("flags, flag", [(["--taus", "0,x"], "--taus"), (["--taus", "0,inf"], "--taus"),
                                         (["--low-steps", "6,0"], "--low-steps"),
                                         (["--schedule", "linera"], "--schedule"),
                                         (["--guidance", "nan"], "--guidance"),
                                         (["--sets", "clustered,templates"], "--sets")])
def test_quality_bench_refuses_bad_flags_before_any_work(tmp_path, flags, flag):
    out = tmp_path / "bq"
    with pytest.raises(HdiffError, match=flag):
        quality.main([*flags, "--model", str(tmp_path / "no-model"), "--out", str(out)])
    assert not out.exists()  # refused when read: nothing loaded, nothing written
