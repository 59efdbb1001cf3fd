"""Executing a plan: one latent per active cluster, stepped together by one scheduler, split as the plan says.

Legend (Decatur et al. 2025, Alg. 1):
    k          scheduler evaluation index, 0 ≤ k < K
    A_k        active nodes at k (plan.active[k]); |A_k| latents x_k, one per node
    c_n        conditioning of node n: its members' conditioning rows averaged ("mean"), or its medoid member's
    π_k        parent index (plan.parent_index[k]): x_k's rows continue from x_{k-1}[π_k]
    g_n        node n's noise generator, seeded by hdiff.planning.seeds.node_seed over its members

Noise is drawn on the CPU by default (the same images on every machine) or on the model's device
(`noise_device: device`: no host-side sampling and copies, but images then depend on the device's generator).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from hdiff.models.base import Adapter, Conditioning, stack_rows
from hdiff.planning.plan import Plan
from hdiff.planning.seeds import node_seed
from hdiff.settings import GenerationSettings
from hdiff.sampling.state import gather_scheduler_history, step_accepts_generator


def sample_plan(plan: Plan, adapter: Adapter, cond: Conditioning, seeds: np.ndarray, settings: GenerationSettings,
                on_evaluation: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Final latents (N, C, h, w), row i for input row i. `seeds[i]` is input row i's seed.

    `settings` are resolved for the model (`GenerationSettings.for_model`): steps, guidance scale and size; a shared
    node's conditioning (`Conditioning.for_node`: "mean" or "medoid"); where noise is drawn; micro-batches of at
    most `max_batch` clusters, each padded to a multiple of `batch_multiple` clusters (repeating its last row,
    whose extra outputs are dropped) so that GPU kernels for a few batch sizes are reused and run at full speed."""
    s = settings
    tree = plan.tree
    row_of_leaf = np.argsort(tree.leaf_of_row)  # leaf id -> input row
    leaf_seeds = np.asarray(seeds)[row_of_leaf]
    scheduler = copy.deepcopy(adapter.scheduler)
    adapter.set_timesteps(scheduler, s.steps, s.height, s.width)
    timesteps = scheduler.timesteps
    if len(timesteps) != plan.num_evaluations:
        raise ValueError(f"plan has {plan.num_evaluations} evaluations, scheduler {len(timesteps)}")
    negative = {name: value.to(adapter.device) for name, value in adapter.negative(s.negative_prompt).items()}
    pass_generator = step_accepts_generator(scheduler)

    noise_device = adapter.noise_generator_device(s.noise_device == "device")
    generators: dict[int, torch.Generator] = {}
    node_cond: dict[int, dict[str, torch.Tensor]] = {}

    def generator(node: int) -> torch.Generator:  # g_n, created when n first needs noise
        if node not in generators:
            members = tree.members(node)
            generators[node] = torch.Generator(noise_device).manual_seed(node_seed(leaf_seeds[members]))
        return generators[node]

    def conditioning(node: int) -> dict[str, torch.Tensor]:  # c_n
        if node not in node_cond:
            node_cond[node] = cond.for_node(row_of_leaf[tree.members(node)], s.node_condition)
        return node_cond[node]

    def cluster_rows(active: np.ndarray) -> dict[str, torch.Tensor]:  # c_n for n in A_k, (|A_k|, ...)
        rows = stack_rows([conditioning(n) for n in active])
        return {name: value.to(adapter.device, adapter.dtype) for name, value in rows.items()}

    latents = rows = None
    for k, t in enumerate(timesteps):
        active = plan.active[k]
        # 1. x_k: fresh noise at the first evaluation, else the parents' latents (and solver history) copied;
        #    the clusters' conditioning rows change only when clusters split.
        if k == 0:
            shape = (len(active), *adapter.latent_shape(s.height, s.width))
            latents = adapter.initial_latents(scheduler, shape, [generator(n) for n in active])
            rows = cluster_rows(active)
        elif len(active) != len(plan.active[k - 1]):
            index = torch.as_tensor(plan.parent_index[k], device=latents.device)
            gather_scheduler_history(scheduler, index, batch=len(latents))
            latents = latents[index]
            for node in set(node_cond) - set(active.tolist()):
                del node_cond[node]
            rows = cluster_rows(active)
        # 2. model output for every active cluster, in near-equal micro-batches of at most `max_batch` clusters.
        outputs = []
        for lo, hi in micro_batches(len(active), s.max_batch, s.batch_multiple):
            pad = -(hi - lo) % s.batch_multiple
            chunk = {name: padded(value[lo:hi], pad) for name, value in rows.items()}
            output = adapter.predict(scheduler, padded(latents[lo:hi], pad), t, chunk, negative, s.guidance_scale)
            outputs.append(output[:hi - lo])
        model_output = torch.cat(outputs)
        # 3. one scheduler step for all clusters; noise drawn per cluster from g_n.
        extra = {"generator": [generator(n) for n in active]} if pass_generator else {}
        latents = scheduler.step(model_output, t, latents, **extra, return_dict=False)[0]
        if on_evaluation is not None:
            on_evaluation(k, len(active))
    # The last evaluation has every leaf active, in leaf order: reorder to input rows.
    return latents[torch.as_tensor(tree.leaf_of_row, device=latents.device)]


def padded(batch: torch.Tensor, pad: int) -> torch.Tensor:
    """`batch` with its last row repeated `pad` more times."""
    return torch.cat([batch, batch[-1:].expand(pad, *batch.shape[1:])]) if pad else batch


def micro_batches(n: int, max_batch: int, multiple: int = 1) -> list[tuple[int, int]]:
    """[lo, hi) bounds of the fewest micro-batches of at most `max_batch` rows, near-equal: 130 rows at 64 are
    43 + 44 + 43, not 64 + 64 + 2 (a 2-row forward runs far below the GPU's throughput). With `multiple` > 1 each
    batch but the last is a multiple of it and the cap is rounded down to one (padded, no batch exceeds
    `max_batch` unless `max_batch` < `multiple`): 130 at 64 by 8 are 48 + 48 + 34."""
    if multiple == 1:
        count = -(-n // max_batch)
        bounds = [round(i * n / count) for i in range(count + 1)]
        return list(zip(bounds[:-1], bounds[1:]))
    cap = max(multiple, max_batch // multiple * multiple)
    count = -(-n // cap)
    size = min(cap, -(-(-(-n // count)) // multiple) * multiple)  # ceil(n / count) rounded up to the multiple
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]
