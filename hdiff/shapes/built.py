"""The oracle on a built dataset: the accuracy a build's manifest and card report beside the compute saved.

Only the shapes world has an oracle; for any other model `built_accuracy` is None and the field is left out.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

import numpy as np

from hdiff.shapes.model import METADATA_FILE, model_folder
from hdiff.shapes.oracle import prompt_accuracy
from hdiff.shapes.wording import not_understood

IMAGE_EXTENSIONS = ("png", "jpg", "webp")


def has_oracle(model_id: str | None) -> bool:
    """Whether images of `model_id` are of the shapes world: the embedded model or a shapes model folder."""
    return model_id is not None and (model_folder(model_id) / METADATA_FILE).is_file()


def built_accuracy(model_id: str | None, samples: Iterable[tuple[str, dict[str, bytes]]]) -> dict | None:
    """The oracle's accuracy on a build's samples ((key, {extension: bytes}) as the tars hold them), each image
    scored on what its prompt names (hdiff.shapes.oracle.prompt_accuracy), and `not_understood`: how many prompts
    name what the world does not have (hdiff.shapes.wording.not_understood; warned about when sampled). None for a
    model without an oracle or when no prompt names anything the oracle reads."""
    if not has_oracle(model_id):
        return None
    prompts: list[str] = []

    def remembered(pairs):
        for image, prompt in pairs:
            prompts.append(prompt)
            yield image, prompt

    figures = prompt_accuracy(remembered(_images_and_prompts(samples)))
    if figures is not None:
        figures["not_understood"] = sum(bool(not_understood(prompt)) for prompt in prompts)
    return figures


def _images_and_prompts(samples: Iterable[tuple[str, dict[str, bytes]]]) -> Iterator[tuple[np.ndarray, str]]:
    from PIL import Image

    for _, files in samples:
        extension = next((e for e in IMAGE_EXTENSIONS if e in files), None)
        if extension is None or "txt" not in files:
            continue
        image = np.asarray(Image.open(io.BytesIO(files[extension])).convert("RGB"))
        yield image, files["txt"].decode("utf-8")
