"""The pipeline's core: images -> detector -> segmenter -> ``sv.Detections``, and what it rests on.

- :mod:`~grounded_sam.pipeline.core` — :class:`Pipeline` (``predict``, ``predict_batch``, ``spec``,
  ``fingerprint``), :func:`make_predictor`, :func:`empty_result`.
- :mod:`~grounded_sam.pipeline.fingerprint` / :mod:`~grounded_sam.pipeline.weights` — what the labels
  depend on, the weights by content.
- :mod:`~grounded_sam.pipeline.defaults`, :mod:`~grounded_sam.pipeline.presets`,
  :mod:`~grounded_sam.pipeline.configs` — the default models and the YAML presets.
- :mod:`~grounded_sam.pipeline.hub` — the models a pipeline needs, the cache and downloads, and the
  message for a model that fails to load; :mod:`~grounded_sam.pipeline.prompts` — prompt text to an
  ontology; :mod:`~grounded_sam.pipeline.files` — a folder's images.

Nothing here imports tracking, labeling, the app or the CLI. Importing the package is light (no torch):
:class:`Pipeline` loads from :mod:`~grounded_sam.pipeline.core` on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Pipeline", "empty_result", "make_predictor"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("grounded_sam.pipeline.core"), name)
    raise AttributeError(f"module 'grounded_sam.pipeline' has no attribute {name!r}")
