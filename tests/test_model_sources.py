"""Every model a pipeline needs, named by id or folder: a Kandinsky 2.2 decoder and prior both as local folders (no
Hub), the decoder's scheduler read from its folder, revisions recorded; offline, the missing ones are named."""

from __future__ import annotations

import shlex

import pytest
import tiny_models

from hdiff import hub
from hdiff.dataset.config import ModelConfig
from hdiff.errors import HdiffError
from hdiff.models import load_adapter
from hdiff.models.kandinsky import DEFAULT_PRIOR
from hdiff.models.loading import missing_model_commands


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A decoder whose scheduler folder names DDIM, and a prior, saved as local folders."""
    from diffusers import DDIMScheduler

    root = tmp_path_factory.mktemp("models")
    scheduler = DDIMScheduler.from_config(tiny_models.ddpm_scheduler().config)
    tiny_models.kandinsky_decoder(scheduler=scheduler).save_pretrained(root / "decoder")
    tiny_models.kandinsky_prior().save_pretrained(root / "prior")
    return root


def test_decoder_and_prior_from_folders_with_the_folders_scheduler(folders):
    adapter = load_adapter(str(folders / "decoder"), prior=str(folders / "prior"), device="cpu")
    assert type(adapter.scheduler).__name__ == "DDIMScheduler"  # as its scheduler_config.json names it
    assert adapter.provenance == {  # an absolute folder is named by its last part: no machine path in a dataset
        "model_revision": hub.folder_fingerprint(folders / "decoder"), "pipeline_class": "KandinskyV22Pipeline",
        "prior": "prior", "prior_revision": hub.folder_fingerprint(folders / "prior")}
    overridden = load_adapter(str(folders / "decoder"), prior=str(folders / "prior"), device="cpu", scheduler="ddpm")
    assert type(overridden.scheduler).__name__ == "DDPMScheduler"


def test_a_changed_weight_file_changes_the_folder_revision(folders, tmp_path):
    import shutil

    copy = shutil.copytree(folders / "prior", tmp_path / "prior")
    assert hub.folder_fingerprint(copy) == hub.folder_fingerprint(folders / "prior")
    (copy / "scheduler" / "scheduler_config.json").write_text("{}")
    assert hub.folder_fingerprint(copy) != hub.folder_fingerprint(folders / "prior")


def test_the_config_names_the_prior_and_other_adapters_refuse_it(folders):
    assert ModelConfig(prior="/models/prior").adapter_options() == {"prior": "/models/prior"}
    assert ModelConfig().adapter_options() == {}
    with pytest.raises(HdiffError, match=r"the shapes adapter has no option 'prior'; its options: cluster_on"):
        load_adapter("hdiff/shapes", prior=str(folders / "prior"))


def test_offline_names_the_decoder_and_its_prior(monkeypatch, tmp_path, folders):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    decoder = "kandinsky-community/kandinsky-2-2-decoder"
    commands = missing_model_commands(decoder)
    assert [shlex.split(c)[2] for c in commands] == [decoder, DEFAULT_PRIOR]
    assert shlex.split(commands[0])[3:] == ["--include", "*.json", "--include", "*.txt", "--include", "*.model",
                                            "--include", "*.safetensors", "--exclude", "*.fp16.safetensors"]
    assert missing_model_commands(str(folders / "decoder"), prior=str(folders / "prior")) == []
    with pytest.raises(HdiffError, match=r"^model 'someone/model' is not in the local Hugging Face cache and the Hub "
                                         r"is offline \(HF_HUB_OFFLINE=1\); fetch just what is needed on a connected "
                                         r"machine with `hf download someone/model --include"):
        load_adapter("someone/model")
