"""Single-image prompting: ``ImagePredictor`` (embed once, decode many prompts) and its input checks."""

from segmenter.image.predictor import ImagePredictor

__all__ = ["ImagePredictor"]
