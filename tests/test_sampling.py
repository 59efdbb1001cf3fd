"""Hierarchical sampling with τ > 0: accounting, invariance to batching and order, records, copies."""

import numpy as np
import pytest

import tiny_models as tm
from hdiff.errors import HdiffError
from hdiff.generate import GenerationSettings, ImageJob, generate
from hdiff.models import make_scheduler
from hdiff.models.kandinsky import Kandinsky22Adapter
from hdiff.models.stable_diffusion import StableDiffusionAdapter
from hdiff.sampling.sampler import micro_batches

PROMPTS = ["a red cat", "a red cat on a mat", "a blue dog", "a blue dog on a log", "a green tree",
           "a green tree in fog", "the sea", "a boat at sea"]


def sd_adapter(scheduler="dpm++"):
    pipe = tm.stable_diffusion()
    pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    return StableDiffusionAdapter("tiny-sd", pipe)


def count_rows(adapter):
    seen = []
    adapter.denoiser.register_forward_hook(
        lambda module, args, kwargs, out: seen.append((args[0] if args else kwargs["sample"]).shape[0]),
        with_kwargs=True)
    return seen


def settings(**kw):
    base = dict(steps=6, guidance_scale=5.0, height=32, width=32, tau=None, budget=0.5, max_batch=64)
    base.update(kw)
    return GenerationSettings(**base)


def test_plan_accounting_equals_rows_evaluated_and_records_sum_to_it():
    adapter = sd_adapter()
    rows = count_rows(adapter)
    generation = generate(adapter, ImageJob.from_prompts(PROMPTS, base_seed=1), settings(max_batch=3))
    plan = generation.plan
    assert plan.saved_fraction > 0.3
    assert sum(rows) == plan.unet_rows
    assert max(rows) <= 2 * 3  # micro-batches of at most 3 clusters, guidance doubles the rows
    assert sum(r.unet_rows for r in generation.records) == pytest.approx(plan.unet_rows, rel=1e-12)
    for record in generation.records:
        assert record.cluster_path[-1].size == 1 and record.cluster_path[0].from_step == 0
        assert record.split_evaluation == record.cluster_path[-1].from_step
        assert record.shared_evaluations == record.split_evaluation


@pytest.mark.parametrize("scheduler", ["dpm++", "euler-ancestral", "unipc", "heun"])
def test_images_do_not_depend_on_micro_batch_size_or_prompt_order(scheduler):
    adapter = sd_adapter(scheduler)
    reference = generate(adapter, ImageJob.from_prompts(PROMPTS, base_seed=3), settings(max_batch=64))
    assert reference.plan.saved_fraction > 0.3
    expected = dict(zip(PROMPTS, reference.float_images()))
    order = np.random.default_rng(0).permutation(len(PROMPTS))
    shuffled = [PROMPTS[i] for i in order]
    for max_batch, prompts in [(1, PROMPTS), (3, shuffled)]:
        other = generate(adapter, ImageJob.from_prompts(prompts, base_seed=3), settings(max_batch=max_batch))
        assert other.plan.unet_rows == reference.plan.unet_rows
        for prompt, image in zip(prompts, other.float_images()):
            assert np.abs(image - expected[prompt]).max() <= 1e-5, prompt


def test_copies_of_a_prompt_get_their_own_images():
    adapter = sd_adapter("ddpm")
    job = ImageJob.from_prompts(["a red cat", "a blue dog"], images_per_prompt=3, base_seed=0)
    generation = generate(adapter, job, settings(tau=1000.0, budget=None, copy_max_shared=0.25))
    assert len(set(job.seeds)) == 6
    for record in generation.records:
        assert record.split_evaluation <= 1  # floor(0.25 * 6)
    images = generation.float_images()
    for i in range(6):
        for j in range(i + 1, 6):
            assert np.abs(images[i] - images[j]).mean() > 1e-3


def test_kandinsky_hierarchical_run_counts_its_rows():
    prior, decoder = tm.kandinsky_prior(), tm.kandinsky_decoder()
    adapter = Kandinsky22Adapter("tiny-kandinsky", prior, decoder.unet, decoder.movq, decoder.scheduler,
                                 prior_steps=2)
    rows = count_rows(adapter)
    generation = generate(adapter, ImageJob.from_prompts(PROMPTS, base_seed=0), settings(budget=0.6, max_batch=4))
    assert abs(generation.plan.saved_fraction - 0.6) <= 0.07
    assert sum(rows) == generation.plan.unet_rows
    assert np.isfinite(generation.float_images()).all()


def test_packed_shards_give_the_same_images_and_accounting_as_separate_runs():
    from hdiff.generate import generate_packed

    adapter = sd_adapter("dpm++")
    jobs = [ImageJob.from_prompts(PROMPTS[:5], base_seed=4), ImageJob.from_prompts(PROMPTS[5:], base_seed=4)]
    run = settings(tau=3.0, budget=None, max_batch=64)
    separate = [generate(adapter, job, run) for job in jobs]
    rows = count_rows(adapter)
    packed = generate_packed(adapter, jobs, run)
    assert sum(rows) == sum(g.plan.unet_rows for g in separate)
    assert len(rows) < sum(len(g.plan.active) for g in separate)  # fewer, fuller UNet calls
    for alone, together in zip(separate, packed):
        assert together.unet_rows == alone.plan.unet_rows
        assert np.abs(together.float_images() - alone.float_images()).max() <= 1e-5


@pytest.mark.parametrize("n, max_batch", [(1, 1), (5, 64), (64, 64), (65, 64), (130, 64), (257, 64), (7, 3)])
def test_micro_batches_are_fewest_and_near_equal(n, max_batch):
    bounds = micro_batches(n, max_batch)
    sizes = [hi - lo for lo, hi in bounds]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, nothing skipped
    assert len(bounds) == -(-n // max_batch)
    assert max(sizes) <= max_batch and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("n, max_batch, multiple", [(130, 64, 8), (60, 64, 8), (200, 64, 8), (5, 64, 8),
                                                    (64, 64, 8), (100, 60, 8), (17, 3, 4)])
def test_padded_micro_batches_stay_under_the_cap(n, max_batch, multiple):
    bounds = micro_batches(n, max_batch, multiple)
    sizes = [hi - lo for lo, hi in bounds]
    assert bounds[0][0] == 0 and bounds[-1][1] == n and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    padded = [-(-s // multiple) * multiple for s in sizes]
    assert all(s % multiple == 0 for s in sizes[:-1])  # only the last batch needs padding
    assert max(padded) <= max(max_batch // multiple * multiple, multiple)
    assert len(bounds) == -(-n // max(max_batch // multiple * multiple, multiple))  # as few as the cap allows


def test_padded_micro_batches_give_the_same_images_and_accounting():
    adapter = sd_adapter("dpm++")
    job = ImageJob.from_prompts(PROMPTS, base_seed=5)
    reference = generate(adapter, job, settings(max_batch=3))
    rows = count_rows(adapter)
    # (on a CPU, noise_device="device" draws on the CPU too: this checks the path runs, not GPU generators)
    padded = generate(adapter, job, settings(max_batch=3, batch_multiple=4, noise_device="device"))
    assert all(r % (2 * 4) == 0 for r in rows)  # every forward padded to 4 clusters = 8 guided rows
    assert sum(rows) > padded.plan.unet_rows  # the padding was evaluated ...
    assert padded.unet_rows == reference.unet_rows == padded.plan.unet_rows  # ... but is not charged to images
    assert np.abs(padded.float_images() - reference.float_images()).max() <= 1e-5


@pytest.mark.parametrize("bad", [{"batch_multiple": 0}, {"noise_device": "gpu"}, {"max_batch": 0}])
def test_settings_reject_bad_values(bad):
    with pytest.raises(HdiffError, match=f"^generation settings: {next(iter(bad))}: "):
        GenerationSettings.checked(**bad)


def test_channels_last_and_compiled_denoiser_give_the_same_images(monkeypatch):
    """The GPU habits path (Adapter.accelerate), run on the CPU: torch.compile of the UNet's forward and channels_last
    memory leave the images unchanged, and row-counting hooks on the module still see every call.

    accelerate() asks for torch's default backend (inductor), checked on the call; the test then compiles with
    "aot_eager": the same dynamo capture of the forward (graphs, guards, one graph per batch size) and AOT
    functionalization, without inductor's C++ code generation, which runs a compiler for 40 s with a cold cache
    and is torch's to test."""
    import torch
    from torch._dynamo.utils import counters

    adapter = sd_adapter("ddim")
    job = ImageJob.from_prompts(PROMPTS[:6], base_seed=1)
    run = settings(steps=3, tau=1.0, budget=None, max_batch=4, batch_multiple=4)  # every forward: 4 clusters, 8 rows
    reference = generate(adapter, job, run).float_images()

    compile_calls = []
    real_compile = torch.compile

    def compile_eagerly(model, **options):
        compile_calls.append((model, options))
        return real_compile(model, **{**options, "backend": "aot_eager"})

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    counters.clear()
    dynamo_settings = torch._dynamo.config.get_config_copy()
    forward = adapter.denoiser.forward
    adapter.accelerate(channels_last=True, compile=True).accelerate(compile=True)  # a second call changes nothing
    assert [(model, options) for model, options in compile_calls] == [(forward, {"dynamic": False})]  # default backend
    assert adapter.denoiser.forward is not forward
    assert torch._dynamo.config.get_config_copy() == dynamo_settings  # the process's dynamo settings are its own
    assert adapter.denoiser.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert adapter.decoder.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    rows = count_rows(adapter)
    generation = generate(adapter, job, run)
    assert counters["stats"]["unique_graphs"] >= 1  # the forward really ran compiled
    assert set(rows) == {8} and len(rows) > 0
    assert np.abs(generation.float_images() - reference).max() <= 1e-4
