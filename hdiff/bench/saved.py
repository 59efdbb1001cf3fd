"""`hdiff bench saved`: UNet rows saved on the paper's prompt sets when clustering MiniLM sentence embeddings.

Per set: all-MiniLM-L6-v2 embeddings → hdiff's Ward tree (`build_tree`) → the paper's linear φ from τ to 0 over K
evaluations → the plan's accounting (Decatur et al., Sec. 3.2). Budget mode gives the τ for 50% saved. As a check,
the table also cuts a tree built with the reference code's own call, scipy Ward over pdist(metric="cosine"), which
`build_tree` must agree with; and it quotes the paper's figure, which used Kandinsky 2.2 prior image embeddings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hdiff.bench.common import (REPO_ROOT, check_output_file, integer, machine_line, markdown_table,
                                number)
from hdiff.errors import CommandParser, HdiffError
from hdiff.files import write_atomically
from hdiff.planning import ClusterTree, Schedule, build_tree, make_plan, plan_for_budget, tree_from_merges
from hdiff.prompts import read_prompt_file

# Compute saved at τ = 1, K = 40, from data/prompts/README.md (Kandinsky 2.2 prior embeddings).
PAPER_SAVED = {"genai_bench": 0.5043, "prompt_templates": 0.6925, "style_variations": 0.7393, "animals": 0.6280}
TAUS = (0.5, 1.0, 2.0)
BUDGET = 0.5
PROMPTS_DIR = REPO_ROOT / "data" / "prompts"  # the paper's four sets and the demo set, in the repository


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = CommandParser(prog="hdiff bench saved", description=__doc__.splitlines()[0])
    p.add_argument("--prompts-dir", type=Path, default=PROMPTS_DIR,
                   help="folder of .jsonl sets (default: the repository's data/prompts)")
    p.add_argument("--sets", nargs="+", default=None, help="set names to run (default: every .jsonl but demo)")
    p.add_argument("--tau", type=number(0), default=1.0, help="an extra τ column when not one of 0.5, 1, 2")
    p.add_argument("--steps", type=integer(1), default=40,
                   help="scheduler evaluations K the plan is made over (default 40, the paper's)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.json is not None:
        args.json = check_output_file(args.json, "--json")
    return args


def prompt_sets(folder: Path, names: list[str] | None) -> list[Path]:
    """The sets to run: the paper's four in the README's order, then any others by name; demo only when named."""
    if not folder.is_dir():
        raise HdiffError(f"prompts folder {folder} does not exist; pass --prompts-dir")
    available = {path.stem: path for path in folder.glob("*.jsonl")}
    if names is not None:
        missing = [name for name in names if name not in available]
        if missing:
            raise HdiffError(f"no set {missing[0]!r} in {folder}; it has {', '.join(sorted(available)) or 'none'}")
        return [available[name] for name in names]
    order = [name for name in PAPER_SAVED if name in available]
    order += sorted(name for name in available if name not in PAPER_SAVED and name != "demo")
    if not order:
        raise HdiffError(f"no .jsonl prompt sets in {folder}")
    return [available[name] for name in order]


def cosine_ward_tree(embeddings: np.ndarray) -> ClusterTree:
    """The paper's reference tree: scipy Ward over pdist(metric="cosine"), leaves in row order."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import pdist

    z = linkage(pdist(np.asarray(embeddings, dtype=np.float64), metric="cosine"), method="ward")
    return tree_from_merges(z[:, :2].astype(np.int64).tolist(), np.maximum.accumulate(z[:, 2]).tolist())


def saved_at(tree: ClusterTree, tau: float, evaluations: int) -> float:
    """The fraction of UNet rows a linear-φ plan at τ over `evaluations` evaluations saves."""
    return make_plan(tree, Schedule("linear", tau), evaluations).saved_fraction


def set_figures(embeddings: np.ndarray, taus: list[float], evaluations: int) -> dict:
    """Saved fractions at each τ, budget mode's τ for BUDGET saved, and the reference tree's saving at τ = 1."""
    tree = build_tree(embeddings)
    budget = plan_for_budget(tree, BUDGET, evaluations) if len(embeddings) > 1 else None
    reference = cosine_ward_tree(embeddings) if len(embeddings) > 1 else tree
    return {"saved": {f"{tau:g}": saved_at(tree, tau, evaluations) for tau in taus},
            "budget_tau": budget.schedule.tau if budget else None,
            "budget_saved": budget.saved_fraction if budget else 0.0,
            "reference_saved_tau1": saved_at(reference, 1.0, evaluations)}


def main(argv: list[str]) -> int:
    from hdiff.embedding import embed_texts

    args = parse_args(argv)
    paths = prompt_sets(args.prompts_dir, args.sets)
    taus = list(TAUS) + ([args.tau] if args.tau not in TAUS else [])
    started = time.perf_counter()
    results = []
    for path in paths:
        prompts = read_prompt_file(path)
        embed_started = time.perf_counter()
        embeddings = embed_texts(prompts)  # (N, 384) float32, unit rows
        embed_seconds = time.perf_counter() - embed_started
        results.append({"set": path.stem, "prompts": len(prompts), "embed_seconds": embed_seconds,
                        **set_figures(embeddings, taus, args.steps), "paper_saved_tau1": PAPER_SAVED.get(path.stem)})
    seconds = time.perf_counter() - started

    def percent(value: float | None, digits: int = 1) -> str:
        return "—" if value is None else f"{value:.{digits}%}"

    headers = (["set", "prompts"] + [f"τ={tau:g}" for tau in taus]
               + [f"τ for {BUDGET:.0%} (budget mode)", "τ=1, reference pdist tree", "paper τ=1 (Kandinsky prior)"])
    rows = [[r["set"], r["prompts"]] + [percent(r["saved"][f"{tau:g}"]) for tau in taus]
            + [f"{r['budget_tau']:.3f} ({r['budget_saved']:.1%})" if r["budget_tau"] is not None else "—",
               percent(r["reference_saved_tau1"]), percent(r["paper_saved_tau1"], 2)]
            for r in results]
    print(f"Compute saved (UNet rows), all-MiniLM-L6-v2 embeddings, hdiff's Ward tree, linear φ, K = {args.steps}; "
          "reference: scipy Ward over pdist(metric='cosine'), the paper's code")
    print(markdown_table(headers, rows))
    print(machine_line())
    embed_total = sum(r["embed_seconds"] for r in results)
    print(f"time: {seconds:.1f} s ({embed_total:.1f} s embedding {sum(r['prompts'] for r in results):,} prompts)")
    if args.json is not None:
        write_atomically(args.json, json.dumps({"steps": args.steps, "taus": taus, "sets": results,
                                                "machine": machine_line(), "seconds": seconds}, indent=1).encode())
    return 0
