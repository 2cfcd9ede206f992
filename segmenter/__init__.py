"""The bundled promptable segmentation models (SAM 2 / SAM 2.1, SAM 1) and their predictors.

Models come from one builder (:func:`build_model`, behind :func:`build_sam`, :func:`from_pretrained`
and the drop-in builders of :mod:`segmenter.compat`); the predictors are typed against one model
interface, :class:`SegmentationModel`, that both families implement.

Names load on first use: ``import segmenter.config`` (the model YAML files, their hub ids) needs
no torch, so a command line can check its inputs and weights before paying for the import.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_LAZY = {
    "build_sam": "segmenter.build",
    "build_model": "segmenter.build",
    "from_pretrained": "segmenter.build",
    "load_weights": "segmenter.build",
    "ModelSpec": "segmenter.build",
    "ImagePredictor": "segmenter.image.predictor",
    "VideoPredictor": "segmenter.video.predictor",
    "AutomaticMaskGenerator": "segmenter.amg.generator",
    "SegmentationModel": "segmenter.modeling.interface",
    "SAM2Model": "segmenter.modeling.sam2",
    "SAM2Config": "segmenter.config",
    "SAM1Model": "segmenter.modeling.sam1",
    "SAM1Config": "segmenter.config",
    "ImageEmbeddings": "segmenter.modeling.sam2",
    "load_model_config": "segmenter.config",
    "list_model_configs": "segmenter.config",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'segmenter' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
