"""`hdiff bench speed` smoke tests on the CPU: the shapes path and the Kandinsky-architecture path (shrunken)."""

import json

import numpy as np
import pytest

from hdiff.bench import speed
from hdiff.errors import HdiffError
from tiny_models import tiny_shapes_model

RUN_FIELDS = {"tau", "method", "wall_s", "parts_s", "images_per_s", "unet_rows", "rows_per_s_wall",
              "rows_per_s_unet", "peak_memory", "overhead"}
HDIFF_FIELDS = {"plan_unet_rows", "standard_unet_rows", "step_saving", "wall_saving", "wall_over_step_saving"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return tiny_shapes_model(tmp_path_factory.mktemp("tiny-shapes"))


def check_result(result: dict, n: int, steps: int, taus: list[float]) -> None:
    baseline, *runs = result["runs"]
    assert baseline["method"] == "baseline" and RUN_FIELDS <= set(baseline)
    assert baseline["unet_rows"] == n * steps * 2  # guided: 2 rows per image per step
    assert [run["tau"] for run in runs] == taus
    for run in runs:
        assert RUN_FIELDS | HDIFF_FIELDS <= set(run)
        assert run["unet_rows"] == run["plan_unet_rows"]  # the hook counted exactly what the plan promised
        assert run["standard_unet_rows"] == baseline["unet_rows"]
        assert set(run["parts_s"]) == {"encode", "plan", "sample", "decode"}
        assert run["wall_s"] == pytest.approx(sum(run["parts_s"].values()), rel=1e-6)
        assert 0 <= run["overhead"]["fraction"] < 1


def test_speed_on_the_tiny_shapes_model(tiny_model, tmp_path, capsys):
    out = tmp_path / "speed.json"
    code = speed.main(["--model", tiny_model, "--prompts", "16", "--steps", "4", "--taus", "0.5,2",
                       "--max-batch", "8", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "baseline" in printed and "τ=2" in printed and "overhead" in printed
    result = json.loads(out.read_text())
    assert result["n_prompts"] == 16 and result["steps"] == 4
    check_result(result, 16, 4, [0.5, 2.0])


def test_kandinsky_arch_path_with_a_tiny_config(tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"a {c} {a} in a field"}) + "\n"
                               for c in ("red", "blue", "green") for a in ("cat", "dog", "cow")))
    npz = tmp_path / "embeddings.npz"
    assert speed.main(["--write-embeddings", str(npz), "--from", str(prompts), "--n", "8"]) == 0
    data = np.load(npz)
    assert data["embeddings"].shape == (8, 384) and data["embeddings"].dtype == np.float16

    out = tmp_path / "arch.json"
    code = speed.main(["--kandinsky-arch", "--tiny-arch", "--embeddings", str(npz), "--prompts", "8",
                       "--steps", "3", "--taus", "1", "--max-batch", "4", "--json", str(out)])
    assert code == 0
    assert "baseline UNet rows/s" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["n_prompts"] == 8 and result["scheduler"] == "DDPMScheduler"
    check_result(result, 8, 3, [1.0])


def test_decode_probe_times_both_formats_and_runs_with_the_fastest(tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"a {c} {a}"}) + "\n"
                               for c in ("red", "blue") for a in ("cat", "dog")))
    npz = tmp_path / "embeddings.npz"
    assert speed.main(["--write-embeddings", str(npz), "--from", str(prompts), "--n", "4"]) == 0
    out = tmp_path / "arch.json"
    assert speed.main(["--kandinsky-arch", "--tiny-arch", "--embeddings", str(npz), "--prompts", "4", "--steps", "2",
                       "--taus", "1", "--max-batch", "4", "--decode-probe", "1,3", "--json", str(out)]) == 0
    assert "decode probe" in capsys.readouterr().out
    result = json.loads(out.read_text())
    probe = result["decode_probe"]
    assert sorted((t["chunk"], t["channels_last"]) for t in probe["timings"]) == [
        (1, False), (1, True), (3, False), (3, True)]
    fastest = min(probe["timings"], key=lambda t: t["s"])
    assert (probe["chunk"], probe["channels_last"]) == (fastest["chunk"], fastest["channels_last"])
    assert result["decode_chunk"] == probe["chunk"]
    check_result(result, 4, 2, [1.0])
    with pytest.raises(HdiffError, match="--decode-probe"):
        speed.main(["--kandinsky-arch", "--tiny-arch", "--embeddings", str(npz), "--decode-probe", "0"])
