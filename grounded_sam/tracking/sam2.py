"""Text-prompted multi-object tracking: detect every N frames, track with SAM 2 memory.

Per frame ``t`` (frames streamed, never held as a whole):

1. the live tracks are propagated to ``t`` by the SAM 2 video predictor (one batch for all
   objects);
2. on a detection frame (``t % redetect_every == 0``) the detector runs on ``t``; each
   detection gets its SAM mask from ``t``'s features (no memory, all boxes in one batch:
   ``VideoPredictor.box_masks``), and is matched to a live track of the same class when their
   masks overlap (IoU >= ``match_iou``, greedy by IoU); the unmatched detections start new
   tracks, prompted by their boxes on frame ``t`` in one batch (``VideoPredictor.add_new_boxes``);
3. a track whose mask is empty for ``max_lost`` consecutive frames is retired and removed from
   the predictor. Tracker ids start at 1, grow monotonically and are never reused.

The video predictor's logits (torch tensors, or numpy arrays from the ONNX Runtime predictor of an
exported folder) are read back as numpy once per call.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import supervision as sv
import torch

if TYPE_CHECKING:
    from grounded_sam.pipeline import Pipeline
    from segmenter.video.predictor import VideoPredictor

__all__ = ["GroundedTracker", "Track"]


@dataclass
class Track:
    tracker_id: int
    class_id: int
    class_name: str
    caption: str
    confidence: float
    has_score: bool = True  # False for detectors without scores (Florence-2)
    lost: int = 0  # consecutive frames with an empty mask


class GroundedTracker:
    """Runs a :class:`~grounded_sam.pipeline.Pipeline`'s detector and its segmenter's video predictor together.

    Args:
        pipeline: supplies the ontology, the detector and the SAM 2 model (or an exported ONNX folder
            with the video graphs: tracked on ONNX Runtime).
        redetect_every: run the detector on frame 0 and every N frames (N >= 1).
        match_iou: mask IoU above which a detection belongs to a live track of its class.
        max_lost: retire a track after this many consecutive frames without mask pixels.
        fill_hole_area: the video predictor's hole filling (pixels of the low-res mask).
        memory: each track's memory policy (``"fifo"``: SAM 2's; ``"quality"``, ``"samurai"``,
            ``"distractor"``: :mod:`segmenter.video.policies`; an ONNX folder: ``"fifo"`` or ``"quality"``).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        redetect_every: int = 15,
        match_iou: float = 0.5,
        max_lost: int = 10,
        fill_hole_area: int = 8,
        video_predictor: VideoPredictor | None = None,
        memory: str = "fifo",
    ) -> None:
        if redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1, got {redetect_every}")
        if max_lost < 1:
            raise ValueError(f"max_lost must be >= 1, got {max_lost}")
        if video_predictor is None:
            video_predictor = _video_predictor(pipeline, fill_hole_area, memory)
        elif memory != "fifo":
            raise ValueError("give memory= to the video_predictor you pass (VideoPredictor(model, memory=...))")
        self.pipeline = pipeline
        self.predictor = video_predictor
        self.redetect_every = int(redetect_every)
        self.match_iou = float(match_iou)
        self.max_lost = int(max_lost)
        self.tracks: dict[int, Track] = {}
        self.retired: list[Track] = []
        self._next_id = 1

    def run(self, video: Any) -> Iterator[tuple[int, sv.Detections]]:
        """Yield ``(frame_index, sv.Detections)`` for every frame of ``video``."""
        for t, _, det in self.frames(video):
            yield t, det

    @torch.inference_mode()
    def frames(self, video: Any) -> Iterator[tuple[int, np.ndarray, sv.Detections]]:
        """Like :meth:`run`, also yielding each RGB frame (for annotation)."""
        from segmenter.video.frames import open_video

        vp = self.predictor
        state = vp.init_stream()
        with open_video(video) as source:
            t = 0
            while True:
                try:
                    frame = source.get(t)
                except IndexError:
                    break
                vp.add_frame(state, frame)
                ids, logits = self._propagate(state)
                masks = _to_masks(logits, frame.shape[:2])
                if t % self.redetect_every == 0:
                    ids, logits, masks = self._redetect(state, t, frame, ids, logits, masks)
                self._age(state, ids, masks)
                yield t, frame, self._detections(ids, logits, masks)
                t += 1
        self.retired.extend(self.tracks.values())

    # ------------------------------------------------------------------ steps
    def _propagate(self, state: Any) -> tuple[list[int], np.ndarray]:
        _, obj_ids, logits = self.predictor.track(state)  # (N, 1, H, W)
        return list(obj_ids), _logits_np(logits)

    def _redetect(
        self, state: Any, t: int, frame: np.ndarray, ids: list[int], logits: np.ndarray, masks: np.ndarray
    ) -> tuple[list[int], np.ndarray, np.ndarray]:
        onto = self.pipeline.ontology
        dets = self.pipeline.detector.detect([frame], onto)[0]
        if len(dets) == 0:
            return ids, logits, masks
        det_logits = _logits_np(self.predictor.box_masks(state, dets.xyxy, frame_idx=t))  # (D, 1, H, W), no memory
        det_masks = _to_masks(det_logits, frame.shape[:2])
        matched = self._match(ids, masks, dets.class_id, det_masks)
        for d, tid in matched.items():  # refresh the track's detector confidence
            self.tracks[tid].confidence = float(dets.confidence[d])
        new = [d for d in range(len(dets)) if d not in matched]
        if not new:
            return ids, logits, masks
        has_score = dets.data.get("has_score", np.ones(len(dets), bool))
        new_ids = []
        for d in new:
            tid = self._next_id
            self._next_id += 1
            self.tracks[tid] = Track(
                tid, int(dets.class_id[d]), str(dets.data["class_name"][d]), str(dets.data["caption"][d]),
                float(dets.confidence[d]), bool(has_score[d]),
            )
            new_ids.append(tid)
        _, obj_ids, logits = self.predictor.add_new_boxes(state, new_ids, dets.xyxy[new], frame_idx=t)
        logits = _logits_np(logits)
        return list(obj_ids), logits, _to_masks(logits, frame.shape[:2])

    def _match(
        self, ids: list[int], masks: np.ndarray, det_classes: np.ndarray, det_masks: np.ndarray
    ) -> dict[int, int]:
        """Detection index -> tracker id, greedy on mask IoU within a class."""
        if not ids:
            return {}
        iou = sv.mask_iou_batch(det_masks, masks)  # (D, N)
        classes = np.array([self.tracks[i].class_id for i in ids])
        iou = np.where(det_classes[:, None] == classes[None, :], iou, 0.0)
        out: dict[int, int] = {}
        used: set[int] = set()
        for d, n in sorted(np.argwhere(iou >= self.match_iou).tolist(), key=lambda p: -iou[p[0], p[1]]):
            if d in out or n in used:
                continue
            out[d] = ids[n]
            used.add(n)
        return out

    def _age(self, state: Any, ids: list[int], masks: np.ndarray) -> None:
        for i, tid in enumerate(ids):
            track = self.tracks.get(tid)
            if track is None:
                continue
            track.lost = 0 if masks[i].any() else track.lost + 1
            if track.lost >= self.max_lost:
                self.predictor.remove_object(state, tid, need_output=False)
                self.retired.append(self.tracks.pop(tid))

    def _detections(self, ids: list[int], logits: np.ndarray, masks: np.ndarray) -> sv.Detections:
        hw = masks.shape[1:] if masks.ndim == 3 else (0, 0)
        keep = [i for i, tid in enumerate(ids) if tid in self.tracks and masks[i].any()]
        if not keep:
            from grounded_sam.pipeline.core import empty_result

            return empty_result(hw, tracked=True)
        m = masks[keep]
        prob = torch.sigmoid(torch.from_numpy(logits[keep, 0])).numpy()  # (K, H, W)
        mask_score = np.array([prob[j][m[j]].mean() for j in range(len(keep))], dtype=np.float32)
        tracks = [self.tracks[ids[i]] for i in keep]
        return sv.Detections(
            xyxy=sv.mask_to_xyxy(m).astype(np.float32),
            mask=m,
            class_id=np.array([tr.class_id for tr in tracks], dtype=int),
            confidence=np.array([tr.confidence for tr in tracks], dtype=np.float32),
            tracker_id=np.array([tr.tracker_id for tr in tracks], dtype=int),
            data={
                "class_name": np.array([tr.class_name for tr in tracks]),
                "caption": np.array([tr.caption for tr in tracks]),
                "has_score": np.array([tr.has_score for tr in tracks], dtype=bool),
                "mask_score": mask_score,
            },
        )


def _video_predictor(pipeline: Pipeline, fill_hole_area: int, memory: str) -> Any:
    """The video predictor of the pipeline's segmenter: :class:`segmenter.VideoPredictor` on its SAM 2
    model, or the ONNX Runtime video predictor of an exported folder (``fifo`` / ``quality`` memory)."""
    from grounded_sam.pipeline.onnx_segmenter import OnnxSegmenter

    segmenter = pipeline.predictor
    if isinstance(segmenter, OnnxSegmenter):
        return segmenter.video_predictor(fill_hole_area=fill_hole_area, memory=memory)
    from segmenter.video.predictor import VideoPredictor

    model = segmenter.model
    if not getattr(model, "with_memory", False):
        raise ValueError(
            "tracking needs a SAM 2 model with its memory modules (an official .pt or a "
            "transformers Sam2VideoModel checkpoint); this segmenter is image-only"
        )
    return VideoPredictor(model, fill_hole_area=fill_hole_area, memory=memory)


def _logits_np(logits: Any) -> np.ndarray:
    """A video predictor's (N, 1, H, W) logits (a torch tensor on any device, or a numpy array from the
    ONNX Runtime predictor) as float32 numpy."""
    if isinstance(logits, torch.Tensor):
        return logits.detach().float().cpu().numpy()
    return np.asarray(logits, dtype=np.float32)


def _to_masks(logits: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(N, 1, h, w) logits -> (N, H, W) bool masks at the frame's size."""
    if logits.shape[0] == 0:
        return np.zeros((0, *hw), dtype=bool)
    if tuple(logits.shape[-2:]) != tuple(hw):
        from segmenter.export.numpy_transforms import resize_masks_np  # bilinear, as F.interpolate

        logits = resize_masks_np(logits, tuple(hw))
    return logits[:, 0] > 0
