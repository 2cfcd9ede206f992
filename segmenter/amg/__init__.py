"""Automatic mask generation: a grid of point prompts -> distinct, good masks (the official AMG)."""

from segmenter.amg.generator import AutomaticMaskGenerator

__all__ = ["AutomaticMaskGenerator"]
