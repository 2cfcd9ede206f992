"""A tracked video being corrected, without a browser: per-frame masks, clicks, re-propagation.

:class:`VideoSession` keeps every frame's objects as compressed RLE masks keyed by track id
(memory stays small; frames are decoded from the file when shown). :meth:`VideoSession.run_tracker`
fills it from ``GroundedSAM.make_tracker(...).frames(video)`` (the ``sam2`` or ``sam3`` tracker).

A correction happens on one frame ``k`` for one track (the selected one, or a new one of the
current class) with the segmenter's :class:`~segmenter.video.predictor.VideoPredictor`: the
track's current mask on ``k`` is given as a mask prompt (``add_new_mask``), each click or box
is added on top (``add_new_points_or_box``, which feeds the previous mask back to the decoder),
and :meth:`VideoSession.propagate` tracks the object from ``k`` to the end
(``propagate_in_video(start_frame_idx=k)``), replacing its masks there. Frames before ``k`` and
the other tracks are left as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from grounded_sam.app.session import MANUAL
from gsam_runtime.rle import Rle, decode_rle, encode_masks

__all__ = ["VideoSession", "TrackInfo", "VideoEdit"]


@dataclass
class TrackInfo:
    class_id: int
    caption: str = MANUAL
    score: float = 1.0


@dataclass
class VideoEdit:
    """The correction in progress: one track on one frame."""

    frame: int
    track_id: int
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


class VideoSession:
    """One video, its tracks and the correction in progress (module docs)."""

    def __init__(self, path: str | Path, classes: list[str]) -> None:
        from segmenter.video.frames import open_video

        self.path = str(path)
        self.source = open_video(self.path)
        self.num_frames = self.source.count_frames()
        first = self.source.get(0)
        self.hw = (int(first.shape[0]), int(first.shape[1]))
        self.fps = float(self.source.fps or 30.0)
        self.classes = list(classes)
        self.masks: list[dict[int, Rle]] = [{} for _ in range(self.num_frames)]
        self.tracks: dict[int, TrackInfo] = {}
        self.selected: int | None = None
        self.current_class = 0
        self.corner: tuple[float, float] | None = None
        self.edit: VideoEdit | None = None
        self._predictor: Any = None
        self._state: Any = None

    # ------------------------------------------------------------------ tracking
    def run_tracker(self, frames: Any) -> int:
        """Fill the session from a tracker's ``(t, frame, sv.Detections)``; returns the frames seen."""
        seen = 0
        for t, _, det in frames:
            if t >= self.num_frames:
                break
            if len(det) and det.tracker_id is not None:
                rles = encode_masks(det.mask.astype(bool))
                for i, tid in enumerate(int(v) for v in det.tracker_id):
                    self.masks[t][tid] = rles[i]
                    caption = str(det.data["caption"][i]) if "caption" in det.data else MANUAL
                    score = float(det.confidence[i]) if det.confidence is not None else 1.0
                    self.tracks[tid] = TrackInfo(int(det.class_id[i]), caption, score)
            seen += 1
        return seen

    def frame(self, t: int) -> np.ndarray:
        return self.source.get(self._check_frame(t))

    def _check_frame(self, t: int) -> int:
        if not 0 <= int(t) < self.num_frames:
            raise ValueError(f"frame {t} is outside the video (0..{self.num_frames - 1})")
        return int(t)

    def mask(self, t: int, track_id: int) -> np.ndarray | None:
        rle = self.masks[self._check_frame(t)].get(track_id)
        return None if rle is None else decode_rle(rle).astype(bool)

    def frames_with(self, track_id: int) -> list[int]:
        """The frames where ``track_id`` has a mask."""
        return [t for t, m in enumerate(self.masks) if track_id in m]

    def detections(self, t: int) -> sv.Detections:
        """Frame ``t``'s objects (``tracker_id`` = track id), in track order."""
        from grounded_sam.pipeline.core import empty_result

        ids = sorted(self.masks[self._check_frame(t)])
        if not ids:
            return empty_result(self.hw, tracked=True)
        mask = np.stack([decode_rle(self.masks[t][i]).astype(bool) for i in ids])
        info = [self.tracks[i] for i in ids]
        return sv.Detections(
            xyxy=sv.mask_to_xyxy(mask).astype(np.float32), mask=mask,
            confidence=np.array([x.score for x in info], np.float32),
            class_id=np.array([x.class_id for x in info], int), tracker_id=np.array(ids, int),
            data={"class_name": np.array([self.classes[x.class_id] for x in info]),
                  "caption": np.array([x.caption for x in info])},
        )

    # ------------------------------------------------------------------ corrections
    def select_at(self, t: int, x: float, y: float) -> int | None:
        hits = [(int(m.sum()), tid) for tid in self.masks[self._check_frame(t)]
                if (m := self.mask(t, tid)) is not None and m[int(y), int(x)]]
        self.selected = min(hits)[1] if hits else None
        self.corner = None
        return self.selected

    def _set_mask(self, t: int, track_id: int, mask: np.ndarray) -> None:
        if mask.any():
            self.masks[t][track_id] = encode_masks(mask[None].astype(bool))[0]
        else:
            self.masks[t].pop(track_id, None)

    def _begin(self, predictor: Any, t: int) -> VideoEdit:
        """The correction for (frame ``t``, selected track), started if it is not the one in progress."""
        if self.edit is not None and self.edit.frame == t and self.edit.track_id == self.selected:
            return self.edit
        if self._predictor is not predictor or self._state is None:
            self._predictor, self._state = predictor, predictor.init_state(self.path)
        predictor.reset_state(self._state)
        if self.selected is None:
            if not 0 <= self.current_class < len(self.classes):
                raise ValueError(f"class {self.current_class} is not one of {self.classes}")
            tid = max(self.tracks, default=0) + 1
            self.tracks[tid] = TrackInfo(self.current_class)
            self.selected = tid
        else:
            current = self.mask(t, self.selected)
            if current is not None:
                predictor.add_new_mask(self._state, t, self.selected, current)
        self.edit = VideoEdit(t, self.selected)
        return self.edit

    def click(self, predictor: Any, t: int, x: float, y: float, positive: bool) -> np.ndarray:
        """A + / - click on frame ``t`` for the selected (or a new) track; returns its new mask there."""
        t = self._check_frame(t)
        if self.selected is None and not positive:
            raise ValueError("select an object before a background click (a new object starts with a + click)")
        edit = self._begin(predictor, t)
        edit.points.append((float(x), float(y)))
        edit.labels.append(1 if positive else 0)
        _, ids, logits = predictor.add_new_points_or_box(
            self._state, t, edit.track_id, points=[[float(x), float(y)]], labels=[edit.labels[-1]], clear_old_points=False)
        return self._store(t, edit.track_id, ids, logits)

    def box(self, predictor: Any, t: int, box: np.ndarray) -> np.ndarray:
        """A box prompt on frame ``t`` for the selected (or a new) track (it replaces the clicks there)."""
        t = self._check_frame(t)
        edit = self._begin(predictor, t)
        edit.points.clear()
        edit.labels.clear()
        _, ids, logits = predictor.add_new_points_or_box(self._state, t, edit.track_id,
                                                         box=np.asarray(box, np.float32), clear_old_points=True)
        return self._store(t, edit.track_id, ids, logits)

    def _store(self, t: int, track_id: int, ids: list[Any], logits: Any) -> np.ndarray:
        mask = (logits[list(ids).index(track_id), 0] > 0).cpu().numpy()  # (H, W)
        self._set_mask(t, track_id, mask)
        return mask

    def propagate(self) -> tuple[int, int]:
        """Track the corrected object from its frame to the end; returns (first frame, frames updated)."""
        if self.edit is None:
            raise ValueError("click on a frame first: there is no correction to propagate")
        edit, count = self.edit, 0
        for t, ids, logits in self._predictor.propagate_in_video(self._state, start_frame_idx=edit.frame):
            self._store(t, edit.track_id, ids, logits)
            count += 1
        self.edit = None
        return edit.frame, count

    def delete_selected(self, from_frame: int = 0) -> int:
        """Remove the selected track from ``from_frame`` on; returns the frames it left."""
        if self.selected is None:
            raise ValueError("nothing is selected")
        removed = sum(1 for t in range(from_frame, self.num_frames) if self.masks[t].pop(self.selected, None))
        if not self.frames_with(self.selected):
            self.tracks.pop(self.selected, None)
        self.selected, self.edit = None, None
        return removed

    def relabel_selected(self, class_id: int) -> None:
        if self.selected is None:
            raise ValueError("nothing is selected")
        if not 0 <= class_id < len(self.classes):
            raise ValueError(f"class {class_id} is not one of {self.classes}")
        self.tracks[self.selected].class_id = int(class_id)

    # ------------------------------------------------------------------ output
    def summary(self, t: int) -> dict[str, Any]:
        det_ids = sorted(self.masks[self._check_frame(t)])
        return {
            "video": {"frames": self.num_frames, "width": self.hw[1], "height": self.hw[0], "fps": self.fps},
            "frame": t, "selected": self.selected,
            "editing": None if self.edit is None else {"frame": self.edit.frame, "track_id": self.edit.track_id},
            "tracks": {str(tid): {"class": self.classes[info.class_id], "frames": self.frames_with(tid)}
                       for tid, info in sorted(self.tracks.items())},
            "on_this_frame": det_ids,
        }

    def export(self, folder: Path) -> list[Path]:
        """``tracked.mp4`` (H.264, annotated) and ``annotations.json`` (COCO with video frames) in ``folder``."""
        from grounded_sam.export.annotate import VideoWriter, annotate_image
        from grounded_sam.export.coco import CocoWriter

        folder = Path(folder)
        h, w = self.hw
        stem = Path(self.path).stem
        mp4, coco = folder / "tracked.mp4", folder / "annotations.json"
        with VideoWriter(mp4, fps=self.fps) as writer, CocoWriter(coco, self.classes) as cw:
            video_id = cw.add_video(Path(self.path).name, w, h, fps=self.fps)
            for t in range(self.num_frames):
                det = self.detections(t)
                writer.write(annotate_image(self.frame(t), det, self.classes))
                cw.add_image(f"{stem}/{t:06d}.jpg", w, h, det, video_id=video_id, frame_index=t)
        return [mp4, coco]
