"""`hdiff bench plan` and `hdiff bench saved` through the command line: tables with sensible figures, clean errors;
and every bench refusing bad flags with one line before any work."""

import json
import re

import pytest

from hdiff.cli import main


def table_rows(text: str, header_start: str) -> list[list[str]]:
    """The body rows of the markdown table whose header row starts with `header_start`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header_start} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_bench_plan_prints_stages_and_totals(capsys):
    code = main(["bench", "plan", "--prompts", "3000", "--min-shard", "64", "--max-shard", "256"])
    out = capsys.readouterr().out
    assert code == 0
    stages = {row[0]: row for row in table_rows(out, "stage")}
    parts = ["synthetic embeddings", "semantic_shards", "build_tree per shard", "make_plan + accounting per shard"]
    assert set(stages) == {*parts, "total"}
    # each stage is timed inside the total; each figure is rounded to 0.1 s
    assert sum(float(stages[name][1]) for name in parts) <= float(stages["total"][1]) + 0.05 * (len(parts) + 1)
    [totals] = table_rows(out, "shards")
    shards, prompts = int(totals[0].replace(",", "")), int(totals[1].replace(",", ""))
    assert prompts == 3000 and 3000 / 256 <= shards <= 3000 / 64
    low, _, high = (int(v) for v in totals[2].split(" / "))
    assert 64 <= low <= high <= 256
    unet_rows, standard = (int(v.replace(",", "")) for v in totals[3:5])
    assert standard == 3000 * 40 * 2
    saved = float(totals[5].rstrip("%")) / 100
    assert 0 < saved < 1 and abs(saved - (1 - unet_rows / standard)) < 1e-4
    assert re.search(r"peak memory: [\d,]+ MiB \(peak RSS", out)
    assert "machine: " in out


@pytest.mark.subprocess  # each mode is measured in a fresh interpreter
def test_bench_ingest_measures_each_mode(tmp_path, capsys):
    code = main(["bench", "ingest", "--prompts", "900", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    rows = table_rows(out, "prompts")
    modes = ["rows read, nothing kept", "ingest, kept prompts in memory",
             "ingest, kept prompts spilled to disk (a build)"]
    assert [(r[0], r[2], r[3]) for r in rows] == [(n, mode, read) for n in ("900",) for mode in modes
                                                  for read in ("whole (Arrow cache)", "streamed")]
    for row in rows:
        n = row[0]
        assert row[4] == n and row[5] == ("0" if row[2].startswith("rows read") else n)  # every prompt is distinct
        assert float(row[6]) > 0 and float(row[7].replace(",", "")) > 50
    assert list(tmp_path.iterdir()) == []  # the corpora and caches are gone
    assert "machine: " in out


def test_bench_saved_on_a_tiny_set(tmp_path, capsys):
    prompts = ["a lion", "a tiger", "a leopard", "a red car", "a blue car", "a bowl of soup"]
    folder = tmp_path / "sets"
    folder.mkdir()
    lines = [json.dumps({"id": i, "prompt": p}) for i, p in enumerate(prompts)]
    (folder / "tiny.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "demo.jsonl").write_text(json.dumps({"id": 0, "prompt": "skipped unless named"}) + "\n")
    report = tmp_path / "saved.json"
    code = main(["bench", "saved", "--prompts-dir", str(folder), "--tau", "3", "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 0
    [row] = table_rows(out, "set")
    assert row[:2] == ["tiny", "6"]
    fractions = [float(cell.rstrip("%")) / 100 for cell in row[2:6]]  # τ = 0.5, 1, 2, 3
    assert all(0 <= f < 1 for f in fractions) and fractions == sorted(fractions)
    figures = json.loads(report.read_text())
    [result] = figures["sets"]
    assert result["set"] == "tiny" and result["paper_saved_tau1"] is None
    assert abs(result["budget_saved"] - 0.5) <= 0.2  # six leaves: the closest the tree allows
    assert "machine: " in out and "time: " in out


@pytest.mark.shipped
def test_bench_shipped_prints_each_figure_beside_its_floor(tmp_path, capsys):
    """`hdiff bench shipped` on a sliver of its sets (--scale 0.05: 2 to 6 prompts a set; the standard check runs in
    tests/test_shapes_model.py): each check's figures in one table, each with its floor; the JSON and the exit status
    agree with the table (on so few prompts a floor may be missed: then it says so and exits 1)."""
    report = tmp_path / "shipped.json"
    code = main(["bench", "shipped", "--scale", "0.05", "--checks", "sharing,equal-compute,prior,reader", "--json",
                 str(report)])
    out = capsys.readouterr().out
    rows = table_rows(out, "check")
    figures = json.loads(report.read_text())["figures"]
    assert [row[1] for row in rows] == [f["what"] for f in figures]
    checks = [f["check"] for f in figures]
    assert checks == ["default τ 0.1, 2 paraphrased"] * 3 + ["6 steps τ 0.1 vs 3 steps τ 0, 6 clustered"] * 4 + [
        "prior, 2 held-out"] + ["reader, 3 a set"] * 3, checks
    missed = [row for row in rows if row[4] == "MISSED"]
    assert [row[4] == "ok" for row in rows] == [f["ok"] for f in figures]
    assert code == (1 if missed else 0)
    assert f"{len(rows) - len(missed)} of {len(rows)} figures meet their floors" in out
    floors = {row[1]: row[3] for row in rows}
    assert floors["UNet rows saved"] == "≥ 25.0%" and floors["accuracy, hdiff"] == "≥ 99.2%"
    assert floors["templates read right"] == "≥ 99.0%" and floors["render error, hdiff / standard"] == "< 0.8"
    assert "time: " in out and "machine: " in out


def test_bench_saved_reads_the_paper_sets_from_the_repository():
    """A clean clone has the sets: the default folder is data/prompts, the paper's four in the README's order."""
    from hdiff.bench import saved
    from hdiff.bench.common import REPO_ROOT
    from hdiff.prompts import read_prompt_file

    folder = saved.parse_args([]).prompts_dir
    assert folder == REPO_ROOT / "data" / "prompts"
    paths = saved.prompt_sets(folder, None)
    assert [path.stem for path in paths] == ["genai_bench", "prompt_templates", "style_variations", "animals"]
    assert [len(read_prompt_file(path)) for path in paths] == [1600, 2000, 100, 500]


def test_bench_saved_missing_folder_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["bench", "saved", "--prompts-dir", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hdiff: ") and "nowhere" in err


@pytest.mark.parametrize("argv, says", [
    (["saved", "--tau", "inf"], "--tau"),
    (["saved", "--steps", "0"], "--steps"),
    (["saved", "--json", "{tmp}"], "is a folder"),
    (["plan", "--seed", "-1"], "--seed"),
    (["plan", "--min-shard", "100", "--max-shard", "150"], "--max-shard"),
    (["quality", "--device", "gpu0"], "cuda:N"),
    (["quality", "--schedule", "linera"], "cosine"),
    (["quality", "--out", "{tmp}/file"], "is a file"),
    (["shipped", "--scale", "0"], "--scale"),
    (["shipped", "--checks", "speed"], "choose from standard"),
    (["speed", "--guidance", "nan"], "--guidance"),
    (["speed", "--size", "30"], "multiple of 8"),
    (["speed", "--noise-device", "gpu"], "--noise-device"),
    (["speed", "--decode-probe", "3,0"], "--decode-probe"),
    (["speed", "--arch", "kandinsky22", "--embeddings", "{tmp}/none.npz"], "none.npz"),
])
def test_bench_flags_are_refused_when_read_with_one_line(tmp_path, capsys, argv, says):
    (tmp_path / "file").write_text("")
    code = main(["bench", *(arg.replace("{tmp}", str(tmp_path)) for arg in argv)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("hdiff: ") and captured.err.count("\n") == 1 and says in captured.err
