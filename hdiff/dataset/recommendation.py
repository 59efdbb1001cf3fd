"""The pilot's recommendation as a build reads it (`generation.budget: pilot`): OUTPUT-pilot/recommendation.json,
written by `hdiff pilot CONFIG` beside the dataset folder (never in it: a build owns its folder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECOMMENDATION_NAME = "recommendation.json"


def pilot_folder(output: str | Path) -> Path:
    """Where `hdiff pilot` writes by default for a build into `output`: the sibling folder `<output>-pilot`."""
    output = Path(output)
    return output.with_name(f"{output.name}-pilot")


def read_recommendation(output: str | Path, model: str) -> dict[str, float]:
    """The generation setting the pilot recommended for a build into `output` ({"budget": b} or {"tau": t});
    ValueError (one line) when there is none, or it was made for another model."""
    path = pilot_folder(output) / RECOMMENDATION_NAME
    try:
        found: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"generation.budget: pilot reads {path}, which does not exist; run `hdiff pilot CONFIG` "
                         "first, or give a budget") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"generation.budget: pilot: {path} is unreadable ({type(exc).__name__})") from None
    if found.get("model") != model:
        raise ValueError(f"generation.budget: pilot: {path} was made for model {found.get('model')!r}, not "
                         f"{model!r}; run `hdiff pilot CONFIG` again")
    setting = found.get("generation")
    if not (isinstance(setting, dict) and len(setting) == 1 and set(setting) <= {"budget", "tau"}):
        raise ValueError(f"generation.budget: pilot: {path} holds no budget or tau")
    return setting


def write_recommendation(folder: Path, model: str, steps: int, setting: dict[str, float], evidence: dict) -> Path:
    from hdiff.files import write_atomically

    path = Path(folder) / RECOMMENDATION_NAME
    data = {"model": model, "steps": steps, "generation": setting, "evidence": evidence}
    write_atomically(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    return path
