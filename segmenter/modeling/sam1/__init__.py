"""SAM 1 (ViT-B/L/H): image encoder, mask decoder, transforms and the model."""

from segmenter.modeling.sam1.sam import SAM1Model

__all__ = ["SAM1Model"]
