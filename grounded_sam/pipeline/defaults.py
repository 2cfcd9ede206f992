"""The pipeline's default models, importable without torch (the CLI's help and its checks read them).

``GroundedSAM(ontology)`` runs the detector family ``DEFAULT_DETECTOR`` with its default checkpoint
(:data:`detectors.DEFAULT_MODEL_IDS`) and the segmenter config ``DEFAULT_SEGMENTER`` with Meta's
weights from the hub (the config's first ``hf_ids`` entry).
"""

from __future__ import annotations

__all__ = ["DEFAULT_DETECTOR", "DEFAULT_NMS_IOU", "DEFAULT_SEGMENTER", "DEFAULT_REDETECT_EVERY", "DEFAULT_MEMORY"]

DEFAULT_DETECTOR = "grounding-dino"  # with iSEE-Laboratory/llmdet_tiny (LLMDet-T) by default
DEFAULT_SEGMENTER = "sam2.1_hiera_tiny"
DEFAULT_NMS_IOU = 0.5  # class-wise NMS merging the boxes that captions of one class find
DEFAULT_REDETECT_EVERY = 15  # the sam2 tracker runs the detector every N frames
DEFAULT_MEMORY = "fifo"  # the sam2 tracker's memory policy per object: SAM 2's own
