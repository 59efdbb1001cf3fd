"""Scorer models from a Hub-compatible server (tests/hub_server.py): tiny CLIP and safety-checker twins served under
the real repositories' ids are downloaded on first use, cached, and used offline the second time with the same
scores; offline with an empty cache, one line names the missing model and the command that fetches it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tiny_scorers as ts
from hub_server import commit_all, model_folder

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CLIP = "openai/clip-vit-large-patch14"
CHECKER = "CompVis/stable-diffusion-safety-checker"
SCRIPT = """
import json, sys
import numpy as np
from hdiff.errors import HdiffError
from hdiff.scoring import load_scorer
images = [np.full((32, 32, 3), c, np.uint8) for c in ([255, 0, 0], [0, 0, 255])]
try:
    clip = load_scorer("clip")
    nsfw = load_scorer("nsfw")
except HdiffError as exc:
    print(json.dumps({"error": str(exc)}))
    sys.exit(0)
print(json.dumps({"clip": clip(images, ["red", "blue"]).tolist(), "nsfw": nsfw(images, ["", ""]).tolist(),
                  "revisions": [clip.revision, nsfw.revision]}))
"""


@pytest.fixture(scope="module")
def served(hub_server):
    """The two twins committed under the real ids on the running server; repo id -> commit sha."""
    red = np.full((32, 32, 3), [255, 0, 0], np.uint8)
    commits = {CLIP: commit_all(ts.save_clip(model_folder(hub_server.mirrors, CLIP)), "tiny CLIP"),
               CHECKER: commit_all(ts.save_safety_checker(model_folder(hub_server.mirrors, CHECKER), flag_like=red),
                                   "tiny safety checker")}
    return commits


def score_in_subprocess(hub, home: Path, offline: bool) -> dict:
    flag = "1" if offline else "0"
    env = {**os.environ, "HF_HOME": str(home), "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": flag,
           "TRANSFORMERS_OFFLINE": flag, "PYTHONPATH": f"{REPO}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_scorer_models_download_cache_and_run_offline(hub_server, served, tmp_path):
    online = score_in_subprocess(hub_server, tmp_path / "home", offline=False)
    assert "error" not in online, online
    assert online["revisions"] == [served[CLIP], served[CHECKER]]
    assert online["nsfw"] == [1.0, 0.0] and all(0 <= s <= 100 for s in online["clip"])
    fetched = list((tmp_path / "home" / "hub").glob("models--*/snapshots/*/*"))
    assert not any(p.suffix in (".bin", ".pth") for p in fetched)
    assert score_in_subprocess(hub_server, tmp_path / "home", offline=True) == online


def test_an_uncached_scorer_model_offline_is_one_line_naming_it(hub_server, served, tmp_path):
    error = score_in_subprocess(hub_server, tmp_path / "empty", offline=True)["error"]
    assert "\n" not in error and f"scorer clip: model {CLIP!r}" in error and f"hf download {CLIP}" in error
