"""Which tracker runs a pipeline's video: :func:`tracker_kind` and :func:`make_tracker`.

``"sam2"``: detect every ``redetect_every`` frames and track with the segmenter's memory
(:class:`~grounded_sam.tracking.sam2.GroundedTracker`); ``"sam3"``: SAM 3's concept tracker with
every caption in one session (:class:`~grounded_sam.tracking.sam3.Sam3ConceptTracker`);
``"auto"``: ``"sam3"`` for the ``sam3`` detector, ``"sam2"`` otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from grounded_sam.pipeline.defaults import DEFAULT_REDETECT_EVERY

if TYPE_CHECKING:
    from grounded_sam.pipeline import Pipeline

__all__ = ["Tracker", "TRACKERS", "tracker_kind", "make_tracker"]

Tracker = Literal["auto", "sam2", "sam3"]
TRACKERS: tuple[str, ...] = ("auto", "sam2", "sam3")


def tracker_kind(pipeline: Pipeline, tracker: str = "auto") -> str:
    """The tracker ``tracker`` stands for with ``pipeline``."""
    if tracker not in TRACKERS:
        raise ValueError(f"tracker must be 'auto', 'sam2' or 'sam3', got {tracker!r}")
    if tracker == "auto":
        return "sam3" if pipeline.detector_name == "sam3" else "sam2"
    return tracker


def make_tracker(pipeline: Pipeline, tracker: str = "auto", redetect_every: int | None = None,
                 **options: Any) -> Any:
    """The video tracker for ``pipeline`` (its ``frames(video)`` yields ``(index, frame, detections)``);
    ``options`` go to the tracker's constructor."""
    kind = tracker_kind(pipeline, tracker)
    if kind == "sam3":
        from grounded_sam.tracking.sam3 import DEFAULT_MODEL_ID, Sam3ConceptTracker

        if redetect_every is not None:
            raise ValueError("SAM 3's concept tracker detects on every frame; redetect_every applies to tracker='sam2'")
        if options.get("memory") is not None:
            raise ValueError("memory policies apply to tracker='sam2' (SAM 3's concept tracker has its own memory)")
        options.pop("memory", None)
        model_id = getattr(pipeline.detector, "model_id", None) if pipeline.detector_name == "sam3" else None
        options.setdefault("score_threshold", pipeline.score_threshold)
        options.setdefault("nms_iou", pipeline.nms_iou)
        return Sam3ConceptTracker(pipeline.ontology, options.pop("model_id", model_id or DEFAULT_MODEL_ID),
                                  device=pipeline.device, **options)
    from grounded_sam.tracking.sam2 import GroundedTracker

    if pipeline.predictor is None:
        raise ValueError("tracker='sam2' tracks with a SAM 2 segmenter, and this pipeline has none (its detector "
                         "segments by itself): give segmenter='sam2.1_hiera_tiny' or use tracker='sam3'")
    every = DEFAULT_REDETECT_EVERY if redetect_every is None else redetect_every
    return GroundedTracker(pipeline, redetect_every=every, **options)
