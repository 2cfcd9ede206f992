"""One pass of a pipeline over the ground truth's images keeping every candidate, which tuning
and comparison then sweep offline; and the ontology settings they read and write."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grounded_sam.evaluation.data import EvalInputError, EvalSet
from grounded_sam.evaluation.operating import ClassOutcomes

__all__ = ["candidate_pass", "Candidates", "candidate_outcomes", "with_settings", "current_thresholds",
           "check_classes"]


@contextlib.contextmanager
def candidate_pass(pipeline: Any, floor: float, ontology: Any = None, merge_captions: bool = True) -> Iterator[Any]:
    """``pipeline`` with its detector keeping everything scoring ``>= floor`` and its ontology
    (or ``ontology``) without per-class thresholds, for the duration of the block.
    ``merge_captions=False`` also turns the detector's class-wise NMS off, so that every caption's
    detections stay apart (caption search)."""
    detector = pipeline.detector
    if not hasattr(detector, "box_threshold") or not getattr(detector, "has_scores", True):
        raise EvalInputError(f"tuning needs a detector that scores its boxes (a box_threshold); "
                             f"{type(detector).__name__} has none")
    if not merge_captions and not hasattr(detector, "nms_iou"):
        raise EvalInputError(f"caption search needs a detector with a class-wise NMS (nms_iou); "
                             f"{type(detector).__name__} has none")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor}")
    stripped = with_settings(ontology if ontology is not None else pipeline.ontology, {}, strip=True)
    saved = detector.box_threshold, pipeline.ontology, getattr(detector, "nms_iou", None)
    detector.box_threshold, pipeline.ontology = floor, stripped
    if not merge_captions:
        detector.nms_iou = None
    try:
        yield pipeline
    finally:
        detector.box_threshold, pipeline.ontology = saved[:2]
        if not merge_captions:
            detector.nms_iou = saved[2]


@dataclass
class Candidates:
    """One pass of a pipeline at the floor over the ground truth's images: what it found (class
    names mapped to the ground truth's), each class's outcomes, and the IoU type they use."""

    found: EvalSet
    outcomes: dict[str, ClassOutcomes]
    iou_type: str
    seconds: float  # the model pass alone (images decoded, detector, segmenter)


def candidate_outcomes(pipeline: Any, gt: EvalSet, ground_truth: Any, images: Any, floor: float,
                       class_map: Mapping[str, str] | None = None, iou_threshold: float = 0.5,
                       batch_size: int = 1, ontology: Any = None, merge_captions: bool = True) -> Candidates:
    """Run ``pipeline`` once over ``gt``'s images keeping every candidate ``>= floor``
    (:func:`candidate_pass`), check the result against ``gt`` and match it (what ``tune`` and
    ``compare`` sweep). With ``merge_captions=False`` the outcomes are left empty: the captions'
    detections overlap until a caption set is chosen (:mod:`~grounded_sam.evaluation.captions`)."""
    from grounded_sam.evaluation.evaluate import check_pair
    from grounded_sam.evaluation.matching import iou_type_for
    from grounded_sam.evaluation.operating import class_outcomes
    from grounded_sam.evaluation.run import predict_ground_truth

    start = time.perf_counter()
    with candidate_pass(pipeline, floor, ontology, merge_captions):
        found, _ = predict_ground_truth(pipeline, gt, ground_truth, images, batch_size)
    seconds = time.perf_counter() - start
    found = check_pair(gt, found.rename(class_map) if class_map else found)
    iou_type = iou_type_for(gt, found)
    outcomes = class_outcomes(gt, found, iou_type, iou_threshold).outcomes if merge_captions else {}
    return Candidates(found, outcomes, iou_type, seconds)


def with_settings(ontology: Any, thresholds: Mapping[str, float], captions: Mapping[str, Sequence[str]] | None = None,
                  strip: bool = False) -> Any:
    """``ontology`` (a CaptionOntology) with per-class ``thresholds`` and ``captions`` where given
    (negatives kept); ``strip``: without the thresholds it had."""
    from ontologies import CaptionOntology, OntologyClass

    captions = captions or {}
    return CaptionOntology.from_classes([
        OntologyClass(e.name, tuple(captions.get(e.name, e.captions)),
                      float(thresholds[e.name]) if e.name in thresholds else None if strip else e.threshold, e.negative)
        for e in ontology.entries])


def current_thresholds(pipeline: Any) -> dict[str, float]:
    """Each class's threshold as the pipeline runs now: its own, else the detector's."""
    default = float(getattr(pipeline.detector, "box_threshold", 0.0))
    return {name: (pipeline.ontology.threshold(name) if pipeline.ontology.threshold(name) is not None else default)
            for name in pipeline.ontology.classes()}


def check_classes(gt: EvalSet, classes: list[str]) -> None:
    missing = [c for c in classes if c not in gt.classes]
    if missing:
        raise EvalInputError(f"the ground truth has no class {missing[0]!r} (its classes: {gt.classes}); "
                             "tuning needs every class of the ontology in the ground truth")
