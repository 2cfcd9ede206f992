"""Export of the segmenter's models to other runtimes (today: ONNX, image and video parts).

``to_onnx`` (needs torch + onnx + onnxscript) writes the graphs and their ``manifest.json``;
``OnnxImagePredictor`` and ``OnnxVideoPredictor`` (need numpy + onnxruntime, never torch) run them.
Names load on first use, so ``import segmenter.export.runtime`` (or ``.video_runtime``) in a process
without torch works.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "to_onnx": "segmenter.export.onnx",
    "OnnxExportOptions": "segmenter.export.onnx",
    "OnnxImagePredictor": "segmenter.export.runtime",
    "OnnxVideoPredictor": "segmenter.export.video_runtime",
    "ExportManifest": "segmenter.export.manifest",
    "ExportError": "segmenter.export.manifest",
    "EXPORT_VERSION": "segmenter.export.manifest",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'segmenter.export' has no attribute {name!r}")
