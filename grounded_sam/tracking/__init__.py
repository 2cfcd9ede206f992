"""Video tracking on top of the pipeline: detect, then follow each object through the frames.

- :mod:`~grounded_sam.tracking.factory` — :func:`make_tracker` / :func:`tracker_kind`: which tracker runs.
- :mod:`~grounded_sam.tracking.sam2` — :class:`GroundedTracker`: the detector every N frames, SAM 2's
  memory (with a per-object memory policy) in between.
- :mod:`~grounded_sam.tracking.sam3` (+ ``sam3_memory``) — SAM 3's concept tracker over transformers.
- :mod:`~grounded_sam.tracking.outputs` — a tracked video written as annotated MP4, JSONL and video COCO.
"""

from grounded_sam.tracking.factory import TRACKERS, Tracker, make_tracker, tracker_kind

__all__ = ["TRACKERS", "Tracker", "make_tracker", "tracker_kind"]
