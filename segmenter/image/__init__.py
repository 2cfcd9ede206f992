"""Single-image prompting: ``ImagePredictor`` (embed once, decode many prompts) and its input checks."""

from typing import Any

__all__ = ["ImagePredictor"]


def __getattr__(name: str) -> Any:
    # loaded on first use: the input checks (transforms) import without torch
    if name == "ImagePredictor":
        from segmenter.image.predictor import ImagePredictor

        globals()[name] = ImagePredictor
        return ImagePredictor
    raise AttributeError(f"module 'segmenter.image' has no attribute {name!r}")
