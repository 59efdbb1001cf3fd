import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
sys.path.insert(0, str(Path(__file__).parent))


# datasets binds its log handler to the stderr of the moment it is first imported: import it here, outside any
# test's captured (and later closed) stream
import datasets  # noqa: E402,F401


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_torch_thread():
    """For a module of tiny-model runs: they gain nothing from intra-op threads, and on a busy 2-core machine two
    spinning threads made them several times slower. Per module, not per session: a build compared byte for byte
    with one made in a subprocess must use the subprocess's thread count. Restored after the module."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    """The Hub-compatible server (tests/hub_server.py) with the tiny model repositories and the prompt corpus, one
    per session; `commits` maps each repo id (and the corpus's revisions) to its commit sha."""
    from hub_server import (PARTI_PROMPTS, PROMPT_DATASET, HubServer, build_corpus_repo, build_model_repos,
                            build_parti_repo)

    root = tmp_path_factory.mktemp("hub")
    mirrors = root / "mirrors"
    commits = build_model_repos(mirrors)
    commits.update({f"{PROMPT_DATASET}@{rev}": sha for rev, sha in build_corpus_repo(mirrors).items()})
    commits[PARTI_PROMPTS] = build_parti_repo(mirrors)
    server = HubServer(mirrors, root).start()
    server.commits = commits
    yield server
    server.stop()
