"""Zero-shot detectors: a caption ontology and a batch of images in, ``sv.Detections`` out.

::

    from detectors import load_detector
    from ontologies import CaptionOntology

    detector = load_detector("grounding-dino", device="cuda", box_threshold=0.3)
    ontology = CaptionOntology({"a dog": "dog", "puppy": "dog", "a person": "person"})
    per_image = detector.detect(["a.jpg", "b.jpg"], ontology)   # list[sv.Detections]

Every detector returns, per image, ``xyxy`` (float32, original pixels, clipped),
``confidence`` (float32), ``class_id`` (indexing ``ontology.classes()``) and
``data["class_name"]``, ``data["caption"]`` (the ontology caption that fired) and
``data["has_score"]`` (``False`` where the confidence is a constant, i.e. Florence-2).
Captions of one class are merged by class-wise NMS, per-class thresholds apply, negative
captions suppress overlapping detections of their class, long ontologies are split into
several passes (see :mod:`detectors.ontology_ops`). A detector may also return masks
(``returns_masks(detector)``; ``sam3`` does: ``mask`` ``(N, H, W)`` bool, and NMS and negative
captions compare masks) and take visual exemplars (``supports_exemplars(detector)``;
``detect(images, ontology, exemplars={"dog": [[x1, y1, x2, y2]]})``), see :mod:`detectors.base`.

Default checkpoints (``load_detector(name)`` without ``model_id``; any hub id of the same
family or a local ``save_pretrained`` directory may be given instead):

==================  ========================================  =====================================
name                default ``model_id``                      why
==================  ========================================  =====================================
``grounding-dino``  ``iSEE-Laboratory/llmdet_tiny``           LLMDet-T: GD-tiny's cost, LVIS
                                                              minival AP 44.7 vs 28.8 (Apache-2.0);
                                                              also runs GD and MM-GDINO ids
``owlv2``           ``google/owlv2-base-patch16-ensemble``    best OWLv2 at base size
``owlvit``          ``google/owlvit-base-patch32``            cheapest OWL-ViT, the docs' reference
``florence-2``      ``florence-community/Florence-2-base``    native (no remote code), MIT, 0.23B
``omdet-turbo``     ``omlab/omdet-turbo-swin-tiny-hf``        fastest; the only converted OmDet
``sam3``            ``facebook/sam3``                         SAM 3: masks, not only boxes; best
                                                              open-vocabulary accuracy (SA-Co
                                                              cgF1 54.1 vs OWLv2 24.6); exemplars;
                                                              840M, gated (SAM License)
==================  ========================================  =====================================

Plug in your own with :func:`register_detector`. Nothing here downloads or imports torch or
transformers at import time; the family classes load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from detectors.base import (
    DEFAULT_MODEL_IDS,
    Detector,
    DetectorFactory,
    DetectorSpec,
    available_detectors,
    default_model_id,
    detector_factory,
    detector_for_folder,
    detector_returns_masks,
    load_detector,
    register_detector,
    returns_masks,
    supports_exemplars,
)

__all__ = [
    "DEFAULT_MODEL_IDS",
    "Detector",
    "DetectorFactory",
    "DetectorSpec",
    "Florence2Detector",
    "GroundingDinoDetector",
    "OmDetTurboDetector",
    "OwlVitDetector",
    "Owlv2Detector",
    "Sam3Detector",
    "TransformersDetector",
    "available_detectors",
    "default_model_id",
    "detector_factory",
    "detector_for_folder",
    "detector_returns_masks",
    "load_detector",
    "register_detector",
    "returns_masks",
    "supports_exemplars",
]

_LAZY = {
    "GroundingDinoDetector": "detectors.grounding_dino",
    "Owlv2Detector": "detectors.owl",
    "OwlVitDetector": "detectors.owl",
    "Florence2Detector": "detectors.florence2",
    "OmDetTurboDetector": "detectors.omdet_turbo",
    "Sam3Detector": "detectors.sam3",
    "TransformersDetector": "detectors.transformers_base",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'detectors' has no attribute {name!r}")
