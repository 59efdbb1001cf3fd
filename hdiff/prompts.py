"""What names a prompt and its images, everywhere in hdiff: the prompt id, the image seed, the sample key; and
reading a prompt file.

Ids and seeds are content, not position: a prompt's id is a hash of its text, and image i of a prompt gets a seed
hashed from that id, i and the build's base seed, so an image never depends on the order of the prompt list or on
which other prompts share its batch or shard.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hdiff.errors import HdiffError


def prompt_id(text: str) -> str:
    """A stable id for a prompt: the first 16 hex digits of SHA-1 over its UTF-8 text."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def image_seed(pid: str, copy_index: int, base_seed: int) -> int:
    """The seed of image `copy_index` of prompt `pid` in a run with `base_seed`: a 63-bit hash of the three."""
    digest = hashlib.blake2b(f"{pid}/{copy_index}/{base_seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def sample_key(pid: str, copy_index: int) -> str:
    """The WebDataset key of image `copy_index` of prompt `pid`: `<id>-<copy, 3 digits>`."""
    return f"{pid}-{copy_index:03d}"


def parse_sample_key(key: str) -> tuple[str, int]:
    """(prompt id, copy index) of a sample key made by `sample_key`; HdiffError for any other string."""
    pid, sep, copy_index = key.rpartition("-")
    if not sep or not pid or not copy_index.isdigit():
        raise HdiffError(f"{key!r} is not a sample key (<prompt id>-<copy>)")
    return pid, int(copy_index)


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a .txt (one a line) or .jsonl/.json ({"prompt": ...} a line) file, UTF-8; HdiffError naming the
    file (and line) otherwise."""
    file = Path(path)
    if not file.is_file():
        raise HdiffError(f"prompt file {path} does not exist")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise HdiffError(f"prompt file {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise HdiffError(f"prompt file {path} cannot be read: {exc.strerror or exc}") from None
    if file.suffix in (".jsonl", ".json"):
        prompts = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise HdiffError(f"{path}:{number}: not a JSON object") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise HdiffError(f"{path}:{number}: expected an object with a string \"prompt\"")
            prompts.append(row["prompt"])
    else:
        prompts = text.splitlines()
        while prompts and not prompts[-1].strip():
            prompts.pop()
    if not prompts:
        raise HdiffError(f"prompt file {path} holds no prompts")
    for number, prompt in enumerate(prompts, 1):
        if not prompt.strip():
            raise HdiffError(f"{path}: prompt {number} is empty or whitespace only")
    return prompts
