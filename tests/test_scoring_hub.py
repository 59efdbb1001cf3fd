"""Scorer models from a Hub-compatible server (tests/hub_server.py): tiny CLIP, safety-checker and aesthetic-predictor
twins served under the real repositories' ids (the predictor in the upstream key layout) are downloaded on first
use, cached, and used offline the second time with the same scores; offline with an empty cache, one line names the
missing model and the command that fetches it (checked in the offline process, before it reads the full cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tiny_scorers as ts
from hdiff.scoring.aesthetic import AESTHETIC_REPO
from hub_server import commit_all, model_folder

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CLIP = "openai/clip-vit-large-patch14"
CHECKER = "CompVis/stable-diffusion-safety-checker"
SCRIPT = """
import json, sys
import numpy as np
from huggingface_hub import constants
from hdiff.errors import HdiffError
from hdiff.scoring import load_scorer
found = {}
if len(sys.argv) > 1:  # offline: first with an empty cache, then the one the online run filled
    full, constants.HF_HUB_CACHE = constants.HF_HUB_CACHE, sys.argv[1]
    try:
        load_scorer("clip")
    except HdiffError as exc:
        found["empty_cache_error"] = str(exc)
    constants.HF_HUB_CACHE = full
images = [np.full((32, 32, 3), c, np.uint8) for c in ([255, 0, 0], [0, 0, 255])]
clip, nsfw, aesthetic = load_scorer("clip"), load_scorer("nsfw"), load_scorer("aesthetic")
found.update(clip=clip(images, ["red", "blue"]).tolist(), nsfw=nsfw(images, ["", ""]).tolist(),
             aesthetic=aesthetic(images, ["", ""]).tolist(),
             revisions=[clip.revision, nsfw.revision, aesthetic.revision])
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def served(hub_server):
    """The three twins committed under the real ids on the running server; repo id -> commit sha."""
    red = np.full((32, 32, 3), [255, 0, 0], np.uint8)
    commits = {CLIP: commit_all(ts.save_clip(model_folder(hub_server.mirrors, CLIP)), "tiny CLIP"),
               CHECKER: commit_all(ts.save_safety_checker(model_folder(hub_server.mirrors, CHECKER), flag_like=red),
                                   "tiny safety checker"),
               AESTHETIC_REPO: commit_all(ts.save_aesthetic(model_folder(hub_server.mirrors, AESTHETIC_REPO)),
                                          "tiny aesthetic predictor")}
    return commits


def score_in_subprocess(hub, home: Path, offline: bool, empty_cache: Path | None = None) -> dict:
    flag = "1" if offline else "0"
    env = {**os.environ, "HF_HOME": str(home), "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": flag,
           "TRANSFORMERS_OFFLINE": flag, "PYTHONPATH": f"{REPO}", "OMP_NUM_THREADS": "1"}
    extra = [str(empty_cache)] if empty_cache is not None else []
    done = subprocess.run([sys.executable, "-c", SCRIPT, *extra], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_scorer_models_download_cache_and_run_offline(hub_server, served, tmp_path):
    online = score_in_subprocess(hub_server, tmp_path / "home", offline=False)
    assert online["revisions"] == [served[CLIP], served[CHECKER], served[AESTHETIC_REPO]]
    assert online["nsfw"] == [1.0, 0.0] and all(0 <= s <= 100 for s in online["clip"])
    assert all(np.isfinite(online["aesthetic"])) and online["aesthetic"][0] != online["aesthetic"][1]
    fetched = list((tmp_path / "home" / "hub").glob("models--*/snapshots/*/*"))
    assert not any(p.suffix in (".bin", ".pth") for p in fetched)
    (tmp_path / "empty").mkdir()
    offline = score_in_subprocess(hub_server, tmp_path / "home", offline=True, empty_cache=tmp_path / "empty")
    error = offline.pop("empty_cache_error")
    assert "\n" not in error and f"scorer clip: model {CLIP!r}" in error and f"hf download {CLIP}" in error
    assert offline == online
