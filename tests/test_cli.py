"""`hdiff generate`: outputs on success; one clear line and nothing half-written on bad input."""

import json

import pytest
import torch

from hdiff.cli import main


@pytest.fixture(scope="module")
def model(tiny_shapes):
    return tiny_shapes


def write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def test_generate_writes_images_report_and_figures(model, tmp_path, capsys):
    prompts = write(tmp_path / "p.txt", b"a red circle\na blue square\na red circle on blue\n")
    out = tmp_path / "run"
    assert main(["generate", "--model", model, "--prompts", prompts, "--budget", "0.3", "--out", str(out),
                 "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["dendrogram.png", "grid.png", "images", "report.json"]
    assert len(list((out / "images").glob("*.png"))) == 3
    report = json.loads((out / "report.json").read_text())
    assert sum(image["unet_rows"] for image in report["images"]) == pytest.approx(report["plan"]["unet_rows"])
    assert "saved" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_gpu_flags_reach_the_settings_and_the_records(model, tmp_path):
    prompts = write(tmp_path / "p.txt", b"a red circle\na blue square\na red circle on blue\n")
    out = tmp_path / "run"
    assert main(["generate", "--model", model, "--prompts", prompts, "--tau", "1", "--out", str(out), "--quiet",
                 "--noise-device", "device", "--batch-multiple", "4", "--channels-last"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert {image["noise_device"] for image in report["images"]} == {"device"}


def nan_model(tmp_path, model):
    """The tiny model with a whitening that turns every embedding into NaN."""
    import shutil

    from safetensors.torch import save_file

    folder = tmp_path / "nan-model"
    shutil.copytree(model, folder)
    save_file({"mean": torch.full((384,), float("nan")), "matrix": torch.eye(384)},
              str(folder / "conditioning.safetensors"))
    return str(folder)


BAD = {
    "empty file": (b"", [], "holds no prompts"),
    "whitespace prompt": (b"a red circle\n   \nblue\n", [], "empty or whitespace"),
    "not UTF-8": (b"a red circle\n\xff\xfe bad\n", [], "not UTF-8"),
    "negative tau": (b"a red circle\n", ["--tau", "-1"], "tau"),
    "zero steps": (b"a red circle\n", ["--steps", "0"], "steps"),
    "budget of 1": (b"a red circle\n", ["--budget", "1.0"], "budget"),
    "negative budget": (b"a red circle\n", ["--budget", "-0.2"], "budget"),
    "zero batch multiple": (b"a red circle\n", ["--batch-multiple", "0"], "--batch-multiple: must be >= 1, got 0"),
    "infinite guidance": (b"a red circle\n", ["--guidance", "inf"], "--guidance-scale: input should be a finite number"),
    "infinite tau": (b"a red circle\n", ["--tau", "inf"], "--tau: input should be a finite number"),
    "size not a multiple of 8": (b"a red circle\n", ["--size", "30"], "--height and --width: must be a multiple of 8, got 30"),
    "unknown scheduler": (b"a red circle\n", ["--scheduler", "eulr"], "invalid choice: 'eulr'"),
    "unknown schedule": (b"a red circle\n", ["--schedule", "linera"], "invalid choice: 'linera'"),
    "unknown device": (b"a red circle\n", ["--device", "gpu0"], "unknown device 'gpu0'; choose one of auto, cpu"),
    "unknown adapter option": (b"a red circle\n", ["--adapter", "kandinsky23"], "unknown adapter 'kandinsky23'"),
    "model not cached offline": (b"a red circle\n", ["--model", "someone/not-a-cached-model"],
                                 "not in the local Hugging Face cache"),
    "NaN embeddings": (b"a red circle\nblue\n", ["NAN"], "NaN"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_one_line_and_no_output(case, model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data, extra, message = BAD[case]
    prompts = write(tmp_path / "p.txt", data)
    out = tmp_path / "run"
    if extra == ["NAN"]:
        extra = ["--model", nan_model(tmp_path, model)]
    args = ["generate", "--model", model, "--prompts", prompts, "--out", str(out), "--quiet", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hdiff: ") and "\n" not in err and message in err, err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_tau_defaults_to_the_models_own(model, tmp_path):
    """τ's scale is the model's cluster features': without --tau, generate uses the model's default (the tiny model
    has no prior, so 1.0; the shipped model's: next test)."""
    prompts = write(tmp_path / "p.txt", b"a red circle\na blue square\n")
    out = tmp_path / "run"
    assert main(["generate", "--model", model, "--prompts", prompts, "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "report.json").read_text())["tau"] == 1.0


@pytest.mark.shipped
def test_the_default_model_is_the_shipped_one_with_its_own_tau(tmp_path):
    """Without --model, generate loads the shipped shapes model, whose prior puts τ at 0.1."""
    prompts = write(tmp_path / "p.txt", b"a red circle\na blue square\n")
    shipped = tmp_path / "shipped"
    assert main(["generate", "--prompts", prompts, "--out", str(shipped), "--quiet", "--steps", "2"]) == 0
    assert json.loads((shipped / "report.json").read_text())["tau"] == pytest.approx(0.1)


def test_an_output_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    prompts = write(tmp_path / "p.txt", b"a red circle\n")
    out = tmp_path / "taken"
    out.write_bytes(b"keep me")
    assert main(["generate", "--prompts", prompts, "--out", str(out), "--overwrite", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hdiff: output {out} is a file, not a folder"
    assert out.read_bytes() == b"keep me"


def test_version_prints_the_package_version(capsys):
    import hdiff

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"hdiff {hdiff.__version__}"


def test_every_generation_setting_is_a_generate_flag_with_its_description():
    import argparse

    from hdiff.cli import parser
    from hdiff.settings import GenerationSettings

    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["generate"]
    flags = {action.dest: action for action in sub._actions}
    for name, field in GenerationSettings.model_fields.items():
        assert name in flags, name
        assert flags[name].help.startswith(field.description), name
    assert all(action.help for action in sub._actions), "every flag has help"
