"""The build config: the shipped configs load, bad files give one line per problem, parameters round-trip."""

import json
from pathlib import Path

import pytest

from hdiff.dataset.config import BuildConfig, apply_overrides, load_config
from hdiff.errors import HdiffError

CONFIGS = Path(__file__).parents[1] / "configs"
MINIMAL = "name: t\noutput: out/t\nsource: {path_or_id: data/demo_prompts.jsonl}\n"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "build.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_configs_load():
    demo = load_config(CONFIGS / "demo.yaml")
    assert demo.model.id == "hdiff/shapes" and demo.generation.tau is None and demo.generation.budget is None
    assert (demo.sharding.min_size, demo.sharding.max_size) == (96, 192)
    assert demo.source.path_or_id == "data/demo_prompts.jsonl" and demo.output == "out/demo"
    kandinsky = load_config(CONFIGS / "kandinsky22.yaml")
    assert kandinsky.model.id == "kandinsky-community/kandinsky-2-2-decoder"
    assert (kandinsky.model.steps, kandinsky.model.guidance_scale, kandinsky.model.height) == (40, 4.0, None)
    assert kandinsky.source.column == "Prompt" and kandinsky.runner.kind == "local"
    assert kandinsky.source.keep_columns == ["Category", "Challenge"] and kandinsky.model.prior is None


def test_defaults_and_flow_parameters_round_trip(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.ingest.max_chars == 1000 and config.sharding.max_size == 256 and config.runner.retries == 2
    params = config.to_flow_parameters()
    assert BuildConfig.from_flow_parameters(json.loads(json.dumps(params))) == config


@pytest.mark.parametrize("extra, message", [
    ("generation: {tau: -1}\n", r"build\.yaml: generation\.tau: must be >= 0, got -1$"),
    ("generation: {tau: 0.5, budget: 0.5}\n", r"build\.yaml: generation: set at most one of tau and budget$"),
    ("generation: {budget: 1.0}\n", r"generation\.budget: must be < 1, got 1\.0$"),
    ("sharding: {min_size: 32, max_size: 40}\n", r"sharding: max_size must be at least 2 × min_size \(64\), got 40$"),
    ("output_format: {image_format: gif}\n", r"output_format\.image_format: must be one of 'png', 'jpg' or 'webp'"),
    ("model: {height: 500}\n", r"model\.height: must be a multiple of 8, got 500$"),
    ("runner: {kind: spark}\n", r"runner\.kind: must be one of 'local' or 'ray', got 'spark'$"),
    ("ingest: {limit: many}\n", r"ingest\.limit: input should be a valid integer.*got 'many'$"),
    ("generaton: {tau: 1}\n", r"build\.yaml: generaton: unknown key; expected one of: name, output, source,"),
    ("ingest: {max_char: 10}\n", r"ingest\.max_char: unknown key; expected one of: max_chars, long_policy,"),
    ("model: {scheduler: eulr}\n", r"model\.scheduler: unknown scheduler 'eulr'; choose one of ddpm, ddim, euler, "
                                   r"euler-ancestral, dpm\+\+, unipc, heun, flow-euler$"),
    ("generation: {schedule: linera}\n", r"generation\.schedule: unknown schedule 'linera'; choose one of linear, "
                                         r"cosine, quadratic$"),
    ("model: {device: gpu0}\n", r"model\.device: unknown device 'gpu0'; choose one of auto, cpu, cuda, cuda:N, mps$"),
    ("model: {dtype: fp8}\n", r"model\.dtype: must be one of 'auto', 'float32', 'float16' or 'bfloat16', got 'fp8'$"),
    ("model: {guidance_scale: .inf}\n", r"model\.guidance_scale: input should be a finite number, got inf$"),
    ("generation: {tau: .nan}\n", r"generation\.tau: input should be a finite number, got nan$"),
    ("ingest: {near_dedupe: .inf}\n", r"ingest\.near_dedupe: input should be a finite number, got inf$"),
])
def test_bad_values_and_unknown_keys_name_the_key(tmp_path, extra, message):
    with pytest.raises(HdiffError, match=message) as info:
        load_config(write(tmp_path, MINIMAL + extra))
    assert len(str(info.value).splitlines()) == 1


def test_one_line_per_problem(tmp_path):
    with pytest.raises(HdiffError) as info:
        load_config(write(tmp_path, "name: t\nsource: {}\ngeneration: {seed: -1}\n"))
    assert str(info.value).splitlines() == [
        f"{tmp_path / 'build.yaml'}: output: required",
        f"{tmp_path / 'build.yaml'}: source.path_or_id: required",
        f"{tmp_path / 'build.yaml'}: generation.seed: must be >= 0, got -1",
    ]


@pytest.mark.parametrize("text, message", [
    (None, r"no such config file$"),
    ("name: [unclosed\n", r"invalid YAML at line 2, column 1: "),
    ("- a list\n", r"expected a mapping of sections .*, got list$"),
])
def test_unreadable_files(tmp_path, text, message):
    path = tmp_path / "missing.yaml" if text is None else write(tmp_path, text)
    with pytest.raises(HdiffError, match=message):
        load_config(path)


def test_budget_replaces_the_default_tau(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + "generation: {budget: 0.6}\n"))
    assert (config.generation.tau, config.generation.budget) == (None, 0.6)
    assert BuildConfig.from_flow_parameters(config.to_flow_parameters()) == config


def test_gpu_keys_reach_the_generation_settings():
    class Defaults:  # what GenerationSettings.for_model reads from an adapter
        default_steps, default_guidance, default_size, default_tau, default_node_condition = 40, 4.0, 32, 1.0, "mean"

    config = apply_overrides(load_config(CONFIGS / "demo.yaml"),
                             {"generation.noise_device": "device", "generation.batch_multiple": 8,
                              "generation.schedule": "cosine", "generation.max_batch": 16,
                              "generation.copy_max_shared": 0.5, "generation.node_condition": "medoid"})
    settings = config.generation_settings().for_model(Defaults())
    assert (settings.steps, settings.guidance_scale, settings.height, settings.width) == (40, 4.0, 32, 32)
    assert (settings.noise_device, settings.batch_multiple) == ("device", 8)
    assert (settings.schedule, settings.max_batch, settings.copy_max_shared) == ("cosine", 16, 0.5)
    assert settings.node_condition == "medoid"
    with pytest.raises(HdiffError, match="noise_device"):
        apply_overrides(config, {"generation.noise_device": "gpu"})
    with pytest.raises(HdiffError, match="gpu_concurrency"):
        apply_overrides(config, {"model.compile": True, "runner.gpu_concurrency": 2})


def test_overrides():
    config = load_config(CONFIGS / "demo.yaml")
    changed = apply_overrides(config, {"generation.tau": 0.5, "sharding.max_size": 256})
    assert (changed.generation.tau, changed.sharding.max_size) == (0.5, 256) and config.generation.tau is None
    with_budget = apply_overrides(config, {"generation.budget": 0.5})
    assert with_budget.generation.tau is None
    assert apply_overrides(with_budget, {"generation.tau": 0.2}).generation.budget is None
    from_strings = apply_overrides(config, {"generation.tau": "0.25", "ingest.limit": "10", "name": "123",
                                            "ingest.sample_seed": "null", "model.scheduler": "ddim"})
    assert (from_strings.generation.tau, from_strings.ingest.limit, from_strings.name) == (0.25, 10, "123")
    assert from_strings.ingest.sample_seed is None and from_strings.model.scheduler == "ddim"
    with pytest.raises(HdiffError, match=r"overrides: generation\.tau: must be >= 0"):
        apply_overrides(config, {"generation.tau": -2})
    with pytest.raises(HdiffError, match=r"override generation\.tua: unknown key 'tua'"):
        apply_overrides(config, {"generation.tua": 1})
    with pytest.raises(HdiffError, match=r"override gen\.tau: no section 'gen'"):
        apply_overrides(config, {"gen.tau": 1})


def test_unset_tau_is_the_models_default(shipped):
    def generation_settings(config, adapter):
        return config.generation_settings().for_model(adapter)

    config = load_config(CONFIGS / "demo.yaml")
    adapter = shipped  # the shipped shapes model (conftest), loaded once for the session
    assert generation_settings(config, adapter).tau is None and adapter.default_tau == pytest.approx(0.1)
    assert generation_settings(apply_overrides(config, {"generation.tau": 0.3}), adapter).tau == 0.3
    budget = generation_settings(apply_overrides(config, {"generation.budget": 0.5}), adapter)
    assert (budget.tau, budget.budget) == (None, 0.5)
