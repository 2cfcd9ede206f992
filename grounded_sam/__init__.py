"""grounded-sam: text-prompted segmentation and tracking.

Heavy submodules (torch, supervision, transformers) load lazily, on first attribute access,
so that ``import grounded_sam`` and the CLI's ``--help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "GroundedSAM": "grounded_sam.api",
    "GroundedSAM2": "grounded_sam.api",
    "CaptionOntology": "ontologies",
    "resolve_device": "gsam_runtime.device",
    "autocast": "gsam_runtime.device",
    "plot": "grounded_sam.export.annotate",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'grounded_sam' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
