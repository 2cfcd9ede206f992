"""Drop-in compatibility layers: code written for other packages runs with its imports changed.

- :mod:`segmenter.compat.sam2` — Meta's ``sam2`` (``build_sam2``, ``build_sam2_video_predictor``,
  ``build_sam2_hf``, ``SAM2ImagePredictor``, ``SAM2VideoPredictor``, ``SAM2AutomaticMaskGenerator``);
- :mod:`segmenter.compat.segment_anything` — Meta's ``segment_anything`` (``sam_model_registry``,
  ``SamPredictor``, ``SamAutomaticMaskGenerator``, ``ResizeLongestSide``).

autodistill's ``GroundedSAM2``, ``CaptionOntology`` and ``plot`` are exported by ``grounded_sam``.
The submodules load on import (``from segmenter.compat.sam2 import build_sam2``).
"""

__all__ = ["sam2", "segment_anything"]
