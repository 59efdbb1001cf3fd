"""The build config: the shipped configs load, bad files give one line per problem, parameters round-trip."""

import json
import re
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
    assert (kandinsky.generation.steps, kandinsky.generation.guidance_scale, kandinsky.generation.height) == (40, 4.0, None)
    assert kandinsky.source.column == "Prompt" and kandinsky.runner.kind == "local"
    assert kandinsky.source.keep_columns == ["Category", "Challenge"] and kandinsky.model.prior is None


def test_defaults_and_flow_parameters_round_trip(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.ingest.max_chars == 1000 and config.sharding.max_size == 256 and config.runner.retries == 2
    assert (config.card.license, config.card.license_name, config.card.license_link) == \
        ("other", "model-and-source-terms", None)
    params = config.to_flow_parameters()
    assert BuildConfig.from_flow_parameters(json.loads(json.dumps(params))) == config


@pytest.mark.parametrize("extra, message", [
    ("generation: {tau: -1}\n", r"build\.yaml: generation\.tau: must be >= 0, got -1$"),
    ("generation: {tau: 0.5, budget: 0.5}\n", r"build\.yaml: generation: give at most one of tau and budget$"),
    ("generation: {budget: 1.0}\n", r"generation\.budget: must be < 1, got 1\.0$"),
    ("sharding: {min_size: 32, max_size: 40}\n", r"sharding: max_size must be at least 2 × min_size \(64\), got 40$"),
    ("output_format: {image_format: gif}\n", r"output_format\.image_format: must be one of 'png', 'jpg' or 'webp'"),
    ("output_format: {png_compress_level: 10}\n", r"output_format\.png_compress_level: must be <= 9, got 10$"),
    ("runner: {encode_workers: 0}\n", r"runner\.encode_workers: must be >= 1, got 0$"),
    ("runner: {write_queue_mib: 0}\n", r"runner\.write_queue_mib: must be >= 1, got 0$"),
    ("generation: {height: 500}\n", r"generation\.height: must be a multiple of 8, got 500$"),
    ("generation: {steps: true}\n", r"generation\.steps: input should be a valid integer, got True$"),
    ("generation: {steps: '20'}\n", r"generation\.steps: input should be a valid integer, got '20'$"),
    ("runner: {kind: spark}\n", r"runner\.kind: must be one of 'local' or 'ray', got 'spark'$"),
    ("ingest: {limit: many}\n", r"ingest\.limit: input should be a valid integer.*got 'many'$"),
    ("generaton: {tau: 1}\n", r"build\.yaml: generaton: unknown key; expected one of: name, output, source,"),
    ("ingest: {max_char: 10}\n", r"ingest\.max_char: unknown key; expected one of: max_chars, long_policy,"),
    ("model: {scheduler: eulr}\n", r"model\.scheduler: unknown scheduler 'eulr'; choose one of ddpm, ddim, euler, "
                                   r"euler-ancestral, dpm\+\+, unipc, heun, flow-euler$"),
    ("generation: {schedule: linera}\n", r"generation\.schedule: must be one of 'linear', "
                                         r"'cosine' or 'quadratic', got 'linera'$"),
    ("model: {device: gpu0}\n", r"model\.device: unknown device 'gpu0'; choose one of auto, cpu, cuda, cuda:N, mps$"),
    ("model: {dtype: fp8}\n", r"model\.dtype: must be one of 'auto', 'float32', 'float16' or 'bfloat16', got 'fp8'$"),
    ("generation: {guidance_scale: .inf}\n", r"generation\.guidance_scale: input should be a finite number, got inf$"),
    ("generation: {tau: .nan}\n", r"generation\.tau: input should be a finite number, got nan$"),
    ("ingest: {near_dedupe: .inf}\n", r"ingest\.near_dedupe: input should be a finite number, got inf$"),
    ("card: {license: other}\n", r"build\.yaml: card: license: other needs license_name \(an id for the terms"),
    ("card: {license: mit, license_name: mine}\n", r"card: license_name and license_link are for license: other, "
                                                   r"not mit$"),
    ("card: {license: MIT}\n", r"card\.license: must be an id of lowercase letters, .*, got 'MIT'$"),
    ("card: {license_name: my-terms, license_link: LICENSE}\n", r"card\.license_link: string should match"),
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
    assert config.generation.tau is None and adapter.default_tau == pytest.approx(0.1)
    assert generation_settings(config, adapter).tau == adapter.default_tau
    assert generation_settings(apply_overrides(config, {"generation.tau": 0.3}), adapter).tau == 0.3
    budget = generation_settings(apply_overrides(config, {"generation.budget": 0.5}), adapter)
    assert (budget.tau, budget.budget) == (None, 0.5)


def test_the_old_model_keys_are_read_as_generation_keys_with_one_note(tmp_path):
    from hdiff.errors import HdiffDeprecation

    with pytest.warns(HdiffDeprecation, match=r"^model\.steps, model\.height now live under generation") as notes:
        config = load_config(write(tmp_path, MINIMAL + "model: {steps: 12, height: 64}\n"))
    assert len(notes) == 1 and "\n" not in str(notes[0].message)
    assert (config.generation.steps, config.generation.height) == (12, 64)
    with pytest.warns(HdiffDeprecation, match=r"^model\.steps now lives under generation"):
        assert apply_overrides(config, {"model.steps": "20"}).generation.steps == 20
    with pytest.raises(HdiffError, match="model.steps and generation.steps are both set"):
        load_config(write(tmp_path, MINIMAL + "model: {steps: 12}\ngeneration: {steps: 20}\n"))


def test_the_build_config_embeds_the_one_settings_type():
    from hdiff.settings import GenerationSettings

    fields = BuildConfig.model_fields["generation"].annotation.model_fields
    assert set(GenerationSettings.model_fields) <= set(fields)
    assert set(fields) - set(GenerationSettings.model_fields) == {"pack_shards"}  # the build's own
    config = load_config(CONFIGS / "demo.yaml")
    assert isinstance(config.generation_settings(), GenerationSettings)


def test_strict_types_refuse_bools_and_strings_for_numbers():
    from hdiff.settings import GenerationSettings

    for values in ({"steps": True}, {"steps": "20"}, {"tau": "0.5"}, {"seed": 1.0}):
        with pytest.raises(HdiffError, match=rf"^generation settings: {next(iter(values))}: input should be"):
            GenerationSettings.checked(**values)
    assert GenerationSettings.checked(tau=1).tau == 1.0  # an integer is a number


@pytest.mark.parametrize("extra, message", [
    ("generation: {images_per_prompt: 1000000}\n",
     r"generation\.images_per_prompt 1000000 is more than limits\.images_per_prompt \(100\); raise"),
    ("ingest: {limit: 200000}\ngeneration: {images_per_prompt: 100}\n",
     r"200000 prompts × 100 images is 20000000 images, more than limits\.images \(10000000\); raise limits\.images"),
])
def test_bounds_are_checked_when_the_config_is_read(tmp_path, extra, message):
    with pytest.raises(HdiffError, match=message) as info:
        load_config(write(tmp_path, MINIMAL + extra))
    assert len(str(info.value).splitlines()) == 1
    raised = load_config(write(tmp_path, MINIMAL + extra + "limits: {images_per_prompt: 1000000, images: 10000000000}\n"))
    assert raised.limits.images == 10_000_000_000


@pytest.mark.shipped  # reads the shipped model's scheduler config
def test_steps_beyond_the_schedulers_training_timesteps_are_refused_before_work(tmp_path, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hdiff.cli import main

    out = tmp_path / "out"
    # a configured API (never reached): no temporary server begins starting beside the checks
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        refused_before_work(main, out, capsys)


def refused_before_work(main, out, capsys):
    assert main(["build", str(CONFIGS / "demo.yaml"), "--set", f"output={out}", "--set", "generation.steps=1001"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("hdiff: generation.steps: 1001 steps are more than the 1000 training timesteps of hdiff/shapes's "
                   "scheduler; choose at most 1000")
    assert not out.exists()
    assert main(["build", str(CONFIGS / "demo.yaml"), "--set", f"output={out}", "--set", "model.device=cuda:7"]) == 2
    assert "'cuda:7' is not on this machine" in capsys.readouterr().err and not out.exists()
    assert main(["build", str(CONFIGS / "demo.yaml"), "--set", f"output={out}",
                 "--set", "generation.negative_prompt=blurry"]) == 2
    assert "the shapes adapter takes no negative prompt" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("extra, hint", [
    ("generation: {num_inference_steps: 20}\n", "generation.num_inference_steps: unknown key (did you mean generation.steps?)"),
    ("generation: {guidance: 3.0}\n", "generation.guidance: unknown key (did you mean generation.guidance_scale?)"),
    ("output_format: {height: 64}\n", "output_format.height: unknown key (did you mean generation.height?)"),
    ("generation: {scheduler: euler}\n", "generation.scheduler: unknown key (did you mean model.scheduler?)"),
])
def test_a_key_a_diffusers_user_would_guess_gets_a_hint(tmp_path, extra, hint):
    with pytest.raises(HdiffError, match=re.escape(hint)):
        load_config(write(tmp_path, MINIMAL + extra))
    section, key = hint.split(":")[0].split(".")
    with pytest.raises(HdiffError, match=re.escape(hint.split(": ", 1)[1].replace("unknown key", f"unknown key {key!r}"))):
        apply_overrides(load_config(CONFIGS / "demo.yaml"), {f"{section}.{key}": "1"})
