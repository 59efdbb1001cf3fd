"""`hdiff bench scorers` at a tiny size on the CPU: it loads each requested scorer as a build does, times it on
natural images, prints its table and writes the figures it promises (no speed is asserted)."""

import json

import pytest

from hdiff.bench import scorers
from hdiff.cli import main


def test_bench_scorers_measures_each_requested_scorer(tmp_path, capsys, one_torch_thread):
    out = tmp_path / "scorers.json"
    argv = ["--tiny", "--px", "48", "--images", "3", "--batch", "2", "--device", "cpu",
            "--scorers", "nsfw,clip,aesthetic", "--out", str(out)]
    assert main(["bench", "scorers", *argv]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["machine"].startswith("machine: ")
    assert {key: result[key] for key in ("px", "batch", "images", "device", "sizes")} == {
        "px": 48, "batch": 2, "images": 3, "device": "cpu", "sizes": "tiny"}
    assert list(result["scorers"]) == ["nsfw", "clip", "aesthetic"]
    for name, figures in result["scorers"].items():
        assert f"| {name} | random weights, tiny config |" in printed
        assert figures["images_scored"] == 3 and figures["parameters"] > 0 and figures["load_s"] > 0
        assert figures["seconds"] > 0 and figures["ms_per_image"] == pytest.approx(1000 * figures["seconds"] / 3)
        assert figures["images_per_s"] == pytest.approx(3 / figures["seconds"])
        assert figures["preprocess_ms_per_image"] > 0
    # aesthetic's parameters are its CLIP's and its MLP's
    assert result["scorers"]["aesthetic"]["parameters"] > result["scorers"]["clip"]["parameters"]


def test_the_real_sizes_are_clip_vit_l14s():
    """The real-size configs: CLIP ViT-L/14 (openai/clip-vit-large-patch14) about 428 M parameters, its vision tower
    (the safety checker's) about 304 M, counted from the configs on the meta device (nothing allocated)."""
    import torch
    from transformers import CLIPModel, CLIPVisionModel

    with torch.device("meta"):
        clip = CLIPModel(scorers.clip_config(scorers.CLIP_L14))
        vision = CLIPVisionModel(scorers.clip_config(scorers.CLIP_L14).vision_config)
    assert sum(p.numel() for p in clip.parameters()) == pytest.approx(427.6e6, rel=0.01)
    assert sum(p.numel() for p in vision.parameters()) == pytest.approx(303.2e6, rel=0.01)


@pytest.mark.parametrize("argv, says", [(["--scorers", "clip,oracle"], "clip, aesthetic, nsfw"),
                                        (["--device", "cuda:99"], "not on this machine")])
def test_bad_flags_are_refused_in_one_line_before_any_work(capsys, argv, says):
    assert main(["bench", "scorers", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and says in captured.err
