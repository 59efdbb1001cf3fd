"""The flow's Prefect options: typed parameters, run names, task timeouts, and publishing after the commit (against
the Hub stand-in, tests/hub_standin.py). The deployment path is tests/test_deployment.py."""

import httpx
import pytest
from test_build import DEMO_CORPUS, SHARDING
from test_publish import REPO, hub  # noqa: F401 - the stand-in fixture

from hdiff.dataset.config import BuildConfig
from hdiff.errors import HdiffError

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # huggingface_hub's LFS PUT


def config_for(tmp_path, model: str, **sections) -> BuildConfig:
    return BuildConfig.from_flow_parameters({
        "name": "pushed", "output": str(tmp_path / "out"), "source": {"path_or_id": str(DEMO_CORPUS)},
        "ingest": {"limit": 24}, "sharding": SHARDING, "model": {"id": model},
        "embedding": {"cache_dir": str(tmp_path / "embeddings")}, **sections})


@pytest.mark.parametrize("section, value", [
    ("push", {"repo": "not a repo id"}), ("push", {"repo": "someone/x", "token": "hf_x"}),
    ("runner", {"shard_timeout": 0}), ("runner", {"commit_timeout": -1})])
def test_bad_push_and_timeout_settings_are_refused(section, value):
    with pytest.raises(HdiffError, match=section):
        BuildConfig.from_flow_parameters({"name": "x", "output": "out", "source": {"path_or_id": "p"},
                                          section: value})


def test_parameter_schema_is_the_build_config_form():
    """What the UI shows and what the server checks a deployment run's parameters against."""
    from prefect.utilities.callables import parameter_schema

    from flows.build_dataset import build_dataset

    schema = parameter_schema(build_dataset).model_dump_for_openapi()
    assert schema["properties"]["config"]["anyOf"][0] == {"$ref": "#/definitions/BuildConfig"}
    runner = schema["definitions"]["RunnerConfig"]["properties"]
    assert runner["kind"]["enum"] == ["local", "ray"] and runner["shard_timeout"]["exclusiveMinimum"] == 0
    assert schema["definitions"]["PushConfig"]["additionalProperties"] is False


def test_a_build_with_push_repo_publishes_after_its_commit(tmp_path, tiny_shapes, prefect_api, hub):  # noqa: F811
    """The flow commits, then pushes what `hdiff push` would; its run is named after the dataset and version."""
    from flows.build_dataset import build_dataset

    cfg = config_for(tmp_path, tiny_shapes, push={"repo": REPO}, runner={"shard_timeout": 120})
    state = build_dataset(config=cfg, return_state=True)
    assert state.is_completed(), state
    files = hub.files(REPO)
    assert "manifest.json" in files and any(path.endswith(".tar") for path in files)
    assert hub.repos[REPO].tags.keys() == {"v1"}
    assert b"\npush:" not in files["hdiff.yaml"]  # a copy built elsewhere does not publish to this repo
    run = httpx.get(f"{prefect_api}/flow_runs/{state.state_details.flow_run_id}", timeout=10).json()
    assert run["name"] == "pushed v1"
    tasks = httpx.post(f"{prefect_api}/task_runs/filter", timeout=10,
                       json={"flow_runs": {"id": {"any_": [str(state.state_details.flow_run_id)]}}}).json()
    ends = {task["name"].rsplit("-", 1)[0]: task["end_time"] for task in tasks}
    assert ends["commit"] <= ends["publish"]
