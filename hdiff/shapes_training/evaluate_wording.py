"""How the model draws prompts in people's words: `python -m hdiff.shapes_training.evaluate_wording [--prompts N]`.

Standard sampling (τ = 0, or `--tau default`: the model's own) at the model's defaults on the reader's evaluation
sets (hdiff.shapes_training.train_reader: held-out attribute combinations; `phrasings` and `partial` in held-out
phrasings only) or the frozen wording evaluation set (`evaluation`, hdiff.shapes_training.wording_eval), each image
scored by the oracle against what its prompt asked: every attribute of a whole scene, only the named ones of a
partial prompt.
Prints one line per set and writes the figures as JSON (`--out`).

`--reader`: the reader alone, no images: the share of the frozen evaluation set, and of each robustness class derived
from it, read exactly, each beside issue 26's 90% bar; a missed bar is a one-line error (exit 2).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from hdiff.bench.common import integer, machine_line
from hdiff.devices import DEVICE_CHOICES, check_device
from hdiff.errors import CommandParser, run_as_command
from hdiff.files import check_writable_output, write_atomically
from hdiff.generate import GenerationSettings, ImageJob, generate
from hdiff.shapes.oracle import accuracy_figures, score
from hdiff.shapes.reader_sets import evaluation_sets
from hdiff.shapes_training.wording_eval import READER_BAR, eval_pairs, reader_scores


def evaluate(adapter, pairs, *, seed: int = 0, max_batch: int = 128, tau: float | None = 0.0) -> dict:
    """Oracle figures of sampling at the model's defaults on (prompt, target) pairs: standard sampling (τ = 0), or
    hdiff at `tau` (None: the model's default τ); `saved` is the share of UNet rows saved."""
    settings = GenerationSettings(tau=tau, max_batch=max_batch).for_model(adapter)
    with torch.inference_mode():
        generation = generate(adapter, ImageJob.from_prompts([p for p, _ in pairs], base_seed=seed), settings)
        images = [image for _, image in generation.images()]
    figures = accuracy_figures([score(image, target) for image, (_, target) in zip(images, pairs)])
    return {**figures, "saved": generation.plan.saved_fraction, "tau": settings.tau}


def all_sets(n: int) -> dict[str, list]:
    """The reader's evaluation sets (n prompts each) and the frozen wording evaluation set (all of it)."""
    return {**evaluation_sets(n), "evaluation": eval_pairs()}


def reader_report(model: str, device: str, out: str | None) -> None:
    """Print the reader's figures beside the bar; raise when one is missed (after writing them)."""
    from hdiff.errors import HdiffError
    from hdiff.models import load_adapter

    if out is not None:
        check_writable_output(out)
    adapter = load_adapter(model, device=device)
    print(machine_line())
    scores = reader_scores(adapter.info["reader"], adapter.sentence_model, eval_pairs())
    for name, value in scores.items():
        print(f"reader, {name}: {100 * value:.1f}% read exactly (bar {100 * READER_BAR:.0f}%"
              f"{'' if value >= READER_BAR else ': MISSED'})")
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_atomically(Path(out) / "reader.json", (json.dumps({"machine": machine_line(), "model": model,
                                                                  "bar": READER_BAR, "scores": scores}, indent=1)
                                                      + "\n").encode())
    missed = [name for name, value in scores.items() if value < READER_BAR]
    if missed:
        raise HdiffError(f"the reader misses the {100 * READER_BAR:.0f}% bar on {', '.join(missed)}")


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m hdiff.shapes_training.evaluate_wording",
                           description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hdiff/shapes")
    parser.add_argument("--prompts", type=integer(1), default=200, help="prompts per set (default 200)")
    parser.add_argument("--sets", default="phrasings,partial,templates,two_object",
                        help="comma-separated sets to run (default the grammar's four; also free, and evaluation: "
                             "the frozen wording set of tests/data/wording_eval, all its prompts)")
    parser.add_argument("--tau", default="0", help="τ: 0 (standard sampling, the default) or 'default' (the "
                        "model's own)")
    parser.add_argument("--device", type=check_device, default="auto", help=f"one of {', '.join(DEVICE_CHOICES)}")
    parser.add_argument("--out", default=None, help="a folder to write the figures into (wording.json)")
    parser.add_argument("--reader", action="store_true", help="the reader alone on the frozen evaluation set and its "
                        "robustness classes, against the 90%% bar (no images; --prompts, --sets, --tau unused)")
    args = parser.parse_args(argv)
    if args.reader:
        return run_as_command(lambda: reader_report(args.model, args.device, args.out))

    def body() -> None:
        from hdiff.errors import HdiffError
        from hdiff.models import load_adapter

        sets = all_sets(args.prompts)
        tau = None if args.tau == "default" else float(args.tau)
        wanted = args.sets.split(",")
        unknown = [name for name in wanted if name not in sets]
        if unknown:
            raise HdiffError(f"unknown set {', '.join(unknown)}; choose from {', '.join(sets)}")
        if args.out is not None:
            check_writable_output(args.out)
        adapter = load_adapter(args.model, device=args.device)
        print(machine_line())
        report = {"machine": machine_line(), "model": args.model, "prompts": args.prompts, "sets": {}}
        for name in wanted:
            started = time.perf_counter()
            figures = evaluate(adapter, sets[name], tau=tau)
            report["sets"][name] = figures
            print(f"{name}: {100 * figures['all']:.1f}% all-attribute accuracy (n={figures['n']}, τ = "
                  f"{figures['tau']:g}, {100 * figures['saved']:.1f}% saved; "
                  + ", ".join(f"{k} {100 * v:.1f}%" for k, v in figures.items()
                              if k not in ("all", "n", "saved", "tau"))
                  + f"; {time.perf_counter() - started:.0f} s)", flush=True)
        if args.out is not None:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            write_atomically(Path(args.out) / "wording.json", (json.dumps(report, indent=1) + "\n").encode())

    return run_as_command(body)


if __name__ == "__main__":
    sys.exit(main())
