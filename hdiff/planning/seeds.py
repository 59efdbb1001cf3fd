"""Seeds for shared latents.

A leaf (one image) uses its own seed, so τ = 0 reproduces standard sampling with per-image generators.
A node shared by several images uses the seed derived from its members' seeds: the first 8 bytes of
BLAKE2b("hdiff-node" ‖ sorted member seeds as 8-byte little-endian), masked to 63 bits. It depends only on the
set of members, never on micro-batch size or on the order of the prompt list.
"""

from __future__ import annotations

import hashlib

import numpy as np


def node_seed(member_seeds) -> int:
    seeds = sorted(int(s) for s in member_seeds)
    if len(seeds) == 1:
        return seeds[0]
    digest = hashlib.blake2b(b"hdiff-node" + np.asarray(seeds, dtype="<u8").tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
