"""`hdiff bench encode` and `hdiff bench build` at a tiny size on the CPU: they run, print their table and write
the figures they promise; the emulated accelerator keeps to its table and gives photo content."""

import json

import numpy as np
import pytest

from hdiff.bench import build, emulated, encode
from hdiff.bench.natural import natural_image


def test_the_emulated_costs_interpolate_their_tables():
    sdxl, flux = emulated.COSTS["sdxl-1024"], emulated.COSTS["flux-1024"]
    assert sdxl.forward_s(16) == pytest.approx(0.278) and sdxl.forward_s(24) == pytest.approx(0.415)
    assert sdxl.forward_s(64) == pytest.approx(0.552 + 32 * (0.552 - 0.278) / 16)  # the last segment's slope
    assert flux.forward_s(4) == pytest.approx(0.68)  # one row in the table: proportional


def test_natural_images_are_photos_of_any_size():
    small, large = natural_image(0, 512), natural_image(3, 1024)
    assert small.shape == (512, 512, 3) and large.shape == (1024, 1024, 3) and small.dtype == np.uint8
    assert small.std() > 20 and not np.array_equal(natural_image(1, 512), small)  # content, and distinct
    assert np.array_equal(natural_image(0, 512), small)  # deterministic


def test_bench_encode_measures_every_format(tmp_path, capsys):
    out = tmp_path / "encode.json"
    assert encode.main(["--sizes", "32", "--images", "2", "--workers", "1", "--json", str(out)]) == 0
    assert "| 32 | png1 |" in capsys.readouterr().out
    figures = json.loads(out.read_text())["sizes"]["32"]
    assert set(figures) == {"png1", "png3", "png6", "jpg", "webp"}
    for row in figures.values():
        assert row["bytes_per_image"] > 0 and row["ms_per_image_per_core"] >= 0
        assert row["threads"]["images_per_s"] > 0 and row["processes"]["images_per_s"] > 0


@pytest.mark.subprocess  # a real `hdiff build` in its own process
def test_bench_build_compares_the_build_with_the_sampler_and_the_stock_loops(tmp_path, capsys):
    """A real `hdiff build` (its own process and Prefect server) on the emulated Kandinsky cost, 8 prompts, 2 steps,
    two packs: every method writes or decodes every image, and the stock loops' tars hold the build's keys."""
    out = tmp_path / "build.json"
    assert build.main(["--cost", "kandinsky-512", "--prompts", "8", "--steps", "2", "--shard-size", "4",
                       "--pack-shards", "1", "--formats", "jpg", "--workdir", str(tmp_path / "work"),
                       "--json", str(out)]) == 0
    assert "build / stock overlapped" in capsys.readouterr().out
    result = json.loads(out.read_text())
    jpg = result["formats"]["jpg"]
    assert jpg["images"] == 8 and set(jpg["runs"]) == set(build.METHODS)
    for key in ("build_over_sampler", "build_over_sampler_without_fixed", "build_over_stock_naive",
                "build_over_stock_overlapped"):
        assert jpg[key] > 0
    assert jpg["runs"]["build"]["first_shard_s"] > 0 and jpg["runs"]["build"]["fixed_s"] > 0
    from hdiff.dataset.writer import read_all_stats

    keys = lambda folder: sorted(k for s in read_all_stats(folder) for k in s.keys)  # noqa: E731
    work = tmp_path / "work"
    assert keys(work / "build-jpg") == keys(work / "stock_naive-jpg") == keys(work / "stock_overlapped-jpg")
