"""`hdiff bench speed` smoke tests on the CPU: the shapes path and the Kandinsky-architecture path (shrunken)."""

import json

import numpy as np
import pytest

from hdiff.bench import speed

RUN_FIELDS = {"tau", "method", "wall_s", "parts_s", "images_per_s", "unet_rows", "rows_per_s_wall",
              "rows_per_s_unet", "peak_memory", "overhead"}
HDIFF_FIELDS = {"plan_unet_rows", "standard_unet_rows", "step_saving", "wall_saving", "wall_over_step_saving"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_model(tiny_shapes):
    return tiny_shapes


def check_result(result: dict, n: int, steps: int, taus: list[float]) -> None:
    baseline, *runs = result["runs"]
    assert baseline["method"] == "baseline" and RUN_FIELDS <= set(baseline)
    assert baseline["unet_rows"] == n * steps * 2  # the hook counted 2 rows per image per step (guided)
    assert [run["tau"] for run in runs] == taus
    for run in [baseline, *runs]:
        assert set(run["parts_s"]) == {"encode", "plan", "sample", "decode"}
        assert run["unet_s"] + run["parts_s"]["decode"] <= run["wall_s"]  # the hooks timed inside the run
    for run in runs:
        assert RUN_FIELDS | HDIFF_FIELDS <= set(run)
        assert run["unet_rows"] == run["plan_unet_rows"]  # the hook counted exactly what the plan promised
        assert run["standard_unet_rows"] == baseline["unet_rows"]  # the plan's standard figure, counted


def test_speed_on_the_tiny_shapes_model(tiny_model, tmp_path, capsys):
    out = tmp_path / "speed.json"
    code = speed.main(["--model", tiny_model, "--prompts", "8", "--steps", "3", "--taus", "0.5,2",
                       "--max-batch", "4", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "baseline" in printed and "τ=2" in printed and "overhead" in printed
    result = json.loads(out.read_text())
    assert result["n_prompts"] == 8 and result["steps"] == 3 and result["height"] == 32
    check_result(result, 8, 3, [0.5, 2.0])
    assert any(run["step_saving"] > 0 for run in result["runs"][1:])  # the prompts do share steps


def test_kandinsky_arch_path_and_decode_probe_with_a_tiny_config(tmp_path, capsys):
    """MiniLM embeddings written by --write-embeddings drive the shrunken arch; the decoder probe times both memory
    formats at each chunk size and the runs use the fastest."""
    texts = [f"a {color} {animal} in a field" for color in ("red", "blue") for animal in ("cat", "dog", "cow")]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": text}) + "\n" for i, text in enumerate(texts)))
    npz = tmp_path / "embeddings.npz"
    assert speed.main(["--write-embeddings", str(npz), "--from", str(prompts), "--n", "5"]) == 0
    data = np.load(npz)
    assert data["embeddings"].shape == (5, 384) and data["embeddings"].dtype == np.float16
    assert list(data["prompts"]) == texts[:5]

    out = tmp_path / "arch.json"
    code = speed.main(["--arch", "kandinsky22", "--tiny-arch", "--embeddings", str(npz), "--prompts", "5",
                       "--steps", "2", "--taus", "1", "--max-batch", "4", "--decode-probe", "1,3",
                       "--decode-probe-images", "5", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "baseline UNet rows/s" in printed and "decode probe" in printed
    result = json.loads(out.read_text())
    assert result["n_prompts"] == 5 and result["scheduler"] == "DDPMScheduler" and result["height"] == 32
    check_result(result, 5, 2, [1.0])
    probe = result["decode_probe"]
    assert probe["images"] == 5
    assert sorted((t["chunk"], t["channels_last"]) for t in probe["timings"]) == [
        (1, False), (1, True), (3, False), (3, True)]
    fastest = min(probe["timings"], key=lambda t: t["s"])
    assert (probe["chunk"], probe["channels_last"]) == (fastest["chunk"], fastest["channels_last"])
    assert result["decode_chunk"] == probe["chunk"] and result["decoder_channels_last"] == probe["channels_last"]


@pytest.mark.parametrize("arch, rows_per_cluster", [("sdxl", 2), ("sd35", 2), ("flux", 1)])
def test_family_arch_runs_its_tiny_config_and_counts_its_rows(tmp_path, capsys, arch, rows_per_cluster):
    """The same command as on a GPU, on the shrunken blocks: the hook counts the family's rows per image and step
    (FLUX [dev]'s guidance is distilled: one row), and hdiff's runs spend what their plans promised."""
    rng = np.random.default_rng(0)
    npz = tmp_path / "embeddings.npz"
    np.savez(npz, prompts=np.array([f"prompt {i}" for i in range(4)]),
             embeddings=rng.normal(size=(4, 384)).astype(np.float16))
    out = tmp_path / "arch.json"
    code = speed.main(["--arch", arch, "--tiny-arch", "--embeddings", str(npz), "--prompts", "4", "--steps", "2",
                       "--taus", "100", "--max-batch", "4", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["arch"] == arch and result["height"] == 32
    baseline, run = result["runs"]
    assert baseline["unet_rows"] == 4 * 2 * rows_per_cluster
    assert run["unet_rows"] == run["plan_unet_rows"] < baseline["unet_rows"]
