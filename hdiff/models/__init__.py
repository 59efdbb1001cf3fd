"""Model adapters behind one interface (hdiff.models.base.Adapter), chosen through a registry (hdiff.models.loading).

Importing this package is cheap: the adapters (and diffusers) load on first use of a name below, so that the
command line and config validation can read the scheduler registry (hdiff.models.schedulers) without them.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"ADAPTERS": "hdiff.models.loading", "Adapter": "hdiff.models.base", "Conditioning": "hdiff.models.base",
            "adapter_name_for": "hdiff.models.loading", "load_adapter": "hdiff.models.loading",
            "SCHEDULERS": "hdiff.models.schedulers", "make_scheduler": "hdiff.models.schedulers"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hdiff.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
