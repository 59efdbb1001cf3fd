"""`hdiff build --dry-run` prints the run's plan and writes nothing."""

from pathlib import Path

from hdiff.cli import main

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def test_a_dry_run_prints_the_plan_and_writes_no_folder(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["build", str(DEMO), "--dry-run", "--set", f"output={out}", "--set", "ingest.limit=40",
            "--set", f"embedding.cache_dir={tmp_path / 'cache'}", "--set", "sharding.min_size=8",
            "--set", "sharding.max_size=16", "--set", "generation.images_per_prompt=2",
            "--set", "generation.budget=0.4"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"dry run: shapes-demo into {out} (nothing generated, no diffusion model loaded)"
    assert lines[1] == "corpus: 192 read, 40 kept (152 sampled out)"
    assert lines[2] == "prompts: 40 new, 0 already in the dataset, 0 to remove, 0 no longer in the corpus and kept"
    shards = int(lines[3].split()[1])
    assert 40 / 16 <= shards <= 40 / 8 and lines[3].endswith("0 to rewrite")
    assert lines[4] == "images: 80 to generate (2 a prompt); generation.budget asks for 40% of UNet rows saved"
    assert not out.exists()
