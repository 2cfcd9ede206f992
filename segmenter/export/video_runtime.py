"""The ONNX Runtime video predictor: the verbs of :class:`segmenter.VideoPredictor`, without torch.

``OnnxVideoPredictor(folder)`` loads a folder exported with ``parts=("image", "video")`` and runs
the PyTorch predictor's verbs with numpy and onnxruntime only: videos (``init_state``,
``add_new_points_or_box``, ``add_new_mask``, ``propagate_in_video``), live streams tracked frame
by frame (``init_stream``, ``add_frame``, ``track``; ``add_new_boxes`` / ``box_masks`` prompt
many boxes on the current frame in one batch) and editing (``clear_all_prompts_in_frame``,
``remove_object``, ``reset_state``). The graphs hold the tensor math of a tracking step, run by
:class:`~segmenter.export.video_tracker.OnnxTracker`; the bookkeeping is the PyTorch predictor's
own: per-object memory (:class:`ObjectMemory`, frame entries holding numpy arrays), frame and
pointer selection (:func:`select_memory` and the policies of :mod:`segmenter.video.policies`, here
in their numpy form), the bounded state's pruning (:func:`prune`), removing objects.

Scope: videos as the PyTorch predictor opens them (:func:`segmenter.video.frames.open_video`:
files, folders of frames, lists and arrays of RGB frames; iterators go to streams), the ``fifo`` and
``quality`` memory policies, no ``non_overlap_masks`` / ``add_all_frames_to_correct_as_cond``.
A stream is tracked with ``track`` only (not ``propagate_in_video``). ``add_new_mask`` needs an
export that records the model's ``mask_downsample`` weights.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segmenter.export.manifest import ExportError, ExportManifest
from segmenter.export.numpy_transforms import resize_masks_np
from segmenter.export.runtime import require_onnxruntime
from segmenter.export.video_policies import (
    NumpyFifoPolicy,
    SelectionContext,
    numpy_policy,
)
from segmenter.export.video_prompts import (
    box_prompt_np,
    mask_prompt_np,
    point_prompt_np,
)
from segmenter.export.video_tracker import (
    VIDEO_GRAPHS,
    Features,
    OnnxTracker,
    fill_holes_np,
    round_bfloat16,
)
from segmenter.video.frames import FrameSource, open_video
from segmenter.video.memory_bank import (
    FrameEntry,
    MemorySelection,
    ObjectMemory,
    RetentionPolicy,
    has_cond_prompt,
    new_object_ids,
    pending_prompt_entries,
    prune,
    remove_object_memory,
)

__all__ = ["OnnxVideoPredictor", "OnnxVideoState", "StreamFrames", "round_bfloat16"]

Result = tuple[int, list[Hashable], np.ndarray]  # frame index, object ids, (N, 1, H, W) logits
LOW_RES_CLAMP = 32.0  # previous logits fed back with new clicks are clamped first (as SAM 2 returns them)


class StreamFrames:
    """The frames of a live stream (``add_frame``): the untracked ones and the last tracked one."""

    def __init__(self) -> None:
        self._frames: dict[int, np.ndarray] = {}
        self.count = 0  # frames added so far
        self.hw: tuple[int, int] | None = None

    def push(self, frame: Any) -> int:
        img = np.asarray(frame)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
            raise ValueError(f"a video frame must be an (H, W, 3) uint8 RGB array, got {img.dtype} {img.shape}")
        if self.hw is None:
            self.hw = (int(img.shape[0]), int(img.shape[1]))
        elif img.shape[:2] != self.hw:
            raise ValueError(f"frame {self.count} has size {img.shape[1]}x{img.shape[0]}, but the stream's frames "
                             f"are {self.hw[1]}x{self.hw[0]}")
        self._frames[self.count] = img
        self.count += 1
        return self.count - 1

    def __getitem__(self, idx: int) -> np.ndarray:
        frame = self._frames.get(idx)
        if frame is None:
            raise ValueError(f"frame {idx} of the stream has been released (only untracked frames and the last "
                             "tracked one are kept)")
        return frame

    def release_before(self, idx: int) -> None:
        for t in [t for t in self._frames if t < idx]:
            del self._frames[t]


@dataclass(eq=False)
class OnnxVideoState:
    """A tracking session: the frames, every object's memory, the current frame's features."""

    frames: FrameSource | StreamFrames  # RGB (H, W, 3) uint8 frames
    num_frames: int | None  # None: a stream (no known end)
    keep_outputs: bool = False
    objects: dict[Hashable, ObjectMemory] = field(default_factory=dict)
    features: Features | None = None
    next_frame: int = 0  # streams: the next frame track() processes

    @property
    def is_stream(self) -> bool:
        return isinstance(self.frames, StreamFrames)

    @property
    def video_hw(self) -> tuple[int, int]:
        if self.is_stream:
            if self.frames.hw is None:
                raise RuntimeError("the stream has no frame yet; add one with add_frame(state, frame)")
            return self.frames.hw
        return int(self.frames.height), int(self.frames.width)

    @property
    def video_height(self) -> int:
        return self.video_hw[0]

    @property
    def video_width(self) -> int:
        return self.video_hw[1]

    @property
    def obj_ids(self) -> list[Hashable]:
        return list(self.objects)

    def object(self, obj_id: Hashable, create: bool = False) -> ObjectMemory:
        obj = self.objects.get(obj_id)
        if obj is None:
            if not create:
                raise ValueError(f"unknown object id {obj_id!r}; existing ids: {self.obj_ids}")
            obj = self.objects[obj_id] = ObjectMemory(obj_id)
        return obj


class OnnxVideoPredictor:
    """SAM 2 video tracking on ONNX Runtime with :class:`segmenter.VideoPredictor`'s verbs and outputs
    (numpy arrays where it returns tensors).

    Args:
        folder: an export folder with the video graphs (``to_onnx(model, out, parts=("image", "video"))``).
        fill_hole_area: fill each object's background holes up to this many low-res pixels (0: off).
        memory: ``"fifo"`` (SAM 2) or ``"quality"`` (:mod:`segmenter.export.video_policies`).
        providers, threads, verify: as for :class:`segmenter.export.runtime.OnnxImagePredictor`.
    """

    def __init__(
        self,
        folder: str | Path,
        fill_hole_area: int = 8,
        memory: str | NumpyFifoPolicy = "fifo",
        providers: list[str] | None = None,
        threads: int | None = None,
        verify: bool = True,
    ) -> None:
        require_onnxruntime()
        if fill_hole_area < 0:
            raise ValueError(f"fill_hole_area must be >= 0, got {fill_hole_area}")
        self.folder = Path(folder)
        self.manifest = ExportManifest.read(self.folder, verify=verify)
        missing = [g for g in VIDEO_GRAPHS if g not in self.manifest.graphs]
        if missing or "video" not in self.manifest.extra:
            raise ExportError(f"{str(folder)!r} has no video graphs {missing}; export with parts=('image', 'video')")
        video = self.manifest.extra["video"]
        self.ctx = SelectionContext(video["num_maskmem"], video["max_obj_ptrs"], video["signed_ptr_pos"])
        self.retention = RetentionPolicy(self.ctx.num_maskmem, self.ctx.max_obj_ptrs)
        self.memory = numpy_policy(memory)
        self.fill_hole_area = int(fill_hole_area)
        self.image_size = self.manifest.image_size
        self.tracker = OnnxTracker(self.folder, self.manifest, providers, threads)

    # ------------------------------------------------------------------ sessions
    def init_state(self, video: Any, keep_outputs: bool = False) -> OnnxVideoState:
        """Open a video as :class:`segmenter.VideoPredictor` does: an mp4/avi/mov path, a folder of frames,
        a list of RGB (H, W, 3) uint8 frames or a (T, H, W, 3) array. Frames are decoded when needed."""
        source = open_video(video)
        try:
            num_frames = source.count_frames()
        except ValueError as e:
            raise ValueError(f"{e}; track an iterator of frames with init_stream() and track(state, frame)") from None
        if num_frames == 0:
            raise ValueError(f"the video {source.name} has no frames")
        state = OnnxVideoState(source, num_frames, bool(keep_outputs))
        self._features(state, 0)  # as the PyTorch predictor: the first frame is encoded on opening
        return state

    def init_stream(self, keep_outputs: bool = False) -> OnnxVideoState:
        """A session for a live stream: feed frames with :meth:`add_frame` / :meth:`track`."""
        return OnnxVideoState(StreamFrames(), None, bool(keep_outputs))

    def add_frame(self, state: OnnxVideoState, frame: np.ndarray) -> int:
        """Append an RGB (H, W, 3) uint8 frame to a stream; returns its index."""
        if not state.is_stream:
            raise ValueError("add_frame needs a stream session from init_stream()")
        return state.frames.push(frame)

    def track(self, state: OnnxVideoState, frame: np.ndarray | None = None) -> Result:
        """Track the next frame of a stream (``frame`` appended first if given), as ``propagate_in_video``
        would; frames before the first prompt give an empty (0, 1, H, W) result."""
        if frame is not None:
            self.add_frame(state, frame)
        if not state.is_stream:
            raise ValueError("track needs a stream session from init_stream(); use propagate_in_video for videos")
        idx = state.next_frame
        if idx >= state.frames.count:
            raise RuntimeError("no new frame to track; pass one to track(state, frame) or add_frame first")
        if state.objects:
            self.propagate_in_video_preflight(state)
            masks = resize_masks_np(self._track_frame(state, idx, reverse=False), state.video_hw)
        else:
            masks = np.zeros((0, 1, *state.video_hw), np.float32)
        state.next_frame = idx + 1
        state.frames.release_before(idx)
        return idx, state.obj_ids, masks

    def reset_state(self, state: OnnxVideoState) -> None:
        """Remove every object, prompt and output (the video stays open)."""
        for obj in state.objects.values():
            obj.clear()
        state.objects.clear()

    # ------------------------------------------------------------------ prompts
    def add_new_points_or_box(
        self,
        state: OnnxVideoState,
        frame_idx: int,
        obj_id: Hashable,
        points: Any = None,
        labels: Any = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box: Any = None,
    ) -> Result:
        """Clicks (N, 2) with labels (N,) and/or a box (4,) xyxy for one object on one frame, in
        video pixels (or [0, 1] with ``normalize_coords=False``); returns all objects' masks there."""
        t = self._check_frame(state, frame_idx)
        if box is not None and not clear_old_points:
            raise ValueError("a box must come before any point: use clear_old_points=True with a box")
        pts, lab = point_prompt_np(points, labels, box, normalize_coords, state.video_hw, self.image_size)
        obj = state.object(obj_id, create=True)
        old = None if clear_old_points else obj.point_inputs.get(t)
        if old is not None:
            pts, lab = np.concatenate([old[0], pts], axis=1), np.concatenate([old[1], lab], axis=1)
        obj.point_inputs[t] = (pts, lab)
        obj.mask_frames.discard(t)
        reverse = obj.tracked.get(t)
        is_init = reverse is None
        prev = obj.output_at(t, is_init)
        prev_logits = None
        if prev is not None and prev.pred_masks is not None:
            prev_logits = np.clip(prev.pred_masks, -LOW_RES_CLAMP, LOW_RES_CLAMP)
        feats = self._features(state, t)
        if is_init:
            pix_feat = feats.image_embed
        else:
            pix_feat = self.tracker.condition(feats, [self._select(state, obj, t, bool(reverse))], state.num_frames)
        multimask = pts.shape[1] <= 1  # SAM 2: candidates for 0 or 1 click (a box counts 2)
        out = self.tracker.heads(pix_feat, feats, (pts, lab), prev_logits, multimask, self._thresholds([obj]))
        obj.temp(is_init)[t] = FrameEntry(out.ptr, out.score, self._fill(out.low))
        return t, state.obj_ids, self._consolidated(state, t, is_init)

    def add_new_mask(self, state: OnnxVideoState, frame_idx: int, obj_id: Hashable, mask: Any) -> Result:
        """Give one object's mask (H, W) (bool or 0/1, the video's size) on one frame."""
        t = self._check_frame(state, frame_idx)
        m = mask_prompt_np(mask, state.video_hw, self.image_size)  # (1, 1, S, S)
        obj = state.object(obj_id, create=True)
        obj.mask_frames.add(t)
        obj.point_inputs.pop(t, None)
        is_init = obj.tracked.get(t) is None
        out = self.tracker.mask_as_output(self._features(state, t), m, self._thresholds([obj]))
        obj.temp(is_init)[t] = FrameEntry(out.ptr, out.score, self._fill(out.low))
        return t, state.obj_ids, self._consolidated(state, t, is_init)

    def add_new_boxes(
        self, state: OnnxVideoState, obj_ids: Sequence[Hashable], boxes: Any, frame_idx: int | None = None
    ) -> Result:
        """Start N new objects, one box (N, 4) xyxy in video pixels each, decoded in one batch: each gets
        the mask :meth:`add_new_points_or_box` would give its box. ``frame_idx`` defaults to a stream's
        current frame (the one :meth:`track` returned last)."""
        t = self._boxes_frame(state, frame_idx)
        corners, labels = box_prompt_np(boxes, state.video_hw, self.image_size)  # (N, 2, 2), (N, 2)
        ids = list(obj_ids)
        if len(ids) != len(corners):
            raise ValueError(f"{len(corners)} boxes for {len(ids)} object ids; give one box per object")
        ids = new_object_ids(state.objects, ids)
        feats = self._features(state, t)
        no_memory = np.ascontiguousarray(np.broadcast_to(feats.image_embed, (len(ids), *feats.image_embed.shape[1:])))
        thresholds = np.full((len(ids), 1), self.memory.present_threshold, np.float32)  # new objects: the default
        out = self.tracker.heads(no_memory, feats, (corners, labels), None, False, thresholds)  # a box: one mask
        pred = self._fill(out.low)
        for j, obj_id in enumerate(ids):
            obj = state.object(obj_id, create=True)
            obj.point_inputs[t] = (corners[j : j + 1], labels[j : j + 1])
            obj.temp_cond[t] = FrameEntry(out.ptr[j : j + 1], out.score[j : j + 1], pred[j : j + 1])
        return t, state.obj_ids, self._consolidated(state, t, True)

    def box_masks(self, state: OnnxVideoState, boxes: Any, frame_idx: int | None = None) -> np.ndarray:
        """(N, 1, H, W) logits at video resolution of boxes (N, 4) xyxy in video pixels from the frame
        alone (no memory; nothing is added to the session); ``frame_idx`` as in :meth:`add_new_boxes`."""
        t = self._boxes_frame(state, frame_idx)
        corners, labels = box_prompt_np(boxes, state.video_hw, self.image_size)
        low = self.tracker.box_masks(self._features(state, t), corners, labels)  # (N, 1, h, w)
        return resize_masks_np(low, state.video_hw)

    def _boxes_frame(self, state: OnnxVideoState, frame_idx: int | None) -> int:
        if frame_idx is not None:
            return self._check_frame(state, frame_idx)
        if not state.is_stream or state.next_frame == 0:
            raise ValueError("give frame_idx (only a stream that has tracked a frame has a current one)")
        return state.next_frame - 1

    # ------------------------------------------------------------------ propagation
    def propagate_in_video_preflight(self, state: OnnxVideoState) -> None:
        """Encode the memories of new prompt outputs (binarised masks, one batch per frame) and file them."""
        if not state.objects:
            raise RuntimeError("No input points or masks are provided for any object; please add inputs first.")
        for t, entries in pending_prompt_entries(state.objects.values()).items():
            feats = self._features(state, t)
            low = np.concatenate([e.pred_masks for e in entries])
            scores = np.concatenate([e.object_score_logits for e in entries])
            maskmem = self.tracker.encode_memory(feats, low, scores, binarize=True)
            for j, e in enumerate(entries):
                e.maskmem = maskmem[j]
        for obj in state.objects.values():
            obj.file_prompt_outputs()

    def propagate_in_video(
        self,
        state: OnnxVideoState,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
    ) -> Iterator[Result]:
        """Track every object through the video; yields ``(frame_idx, obj_ids, (N, 1, H, W) logits)``."""
        if state.is_stream:
            raise ValueError("a stream is tracked one frame at a time with track(state, frame)")
        self.propagate_in_video_preflight(state)
        if start_frame_idx is None:
            start_frame_idx = min(t for obj in state.objects.values() for t in obj.cond)
        start = self._check_frame(state, start_frame_idx)
        span = state.num_frames if max_frame_num_to_track is None else int(max_frame_num_to_track)
        if reverse:
            order = range(start, max(start - span, 0) - 1, -1) if start > 0 else range(0)
        else:
            order = range(start, min(start + span, state.num_frames - 1) + 1)
        obj_ids = state.obj_ids
        for t in order:
            low = self._track_frame(state, t, reverse)
            yield t, obj_ids, resize_masks_np(low, state.video_hw)

    def _track_frame(self, state: OnnxVideoState, frame_idx: int, reverse: bool) -> np.ndarray:
        """One step over all objects: (N, 1, h, w) low-res logits."""
        objs = list(state.objects.values())
        todo = [i for i, obj in enumerate(objs) if frame_idx not in obj.cond]
        low: list[np.ndarray | None] = [None] * len(objs)
        if todo:
            feats = self._features(state, frame_idx)
            sels = [self._select(state, objs[i], frame_idx, reverse) for i in todo]
            pix_feat = self.tracker.condition(feats, sels, state.num_frames)
            out = self.tracker.heads(pix_feat, feats, None, None, True, self._thresholds([objs[i] for i in todo]))
            maskmem = self.tracker.encode_memory(feats, out.low, out.score, binarize=False)
            pred = self._fill(out.low)
            entries = []
            for j, i in enumerate(todo):
                entry = FrameEntry(out.ptr[j : j + 1], out.score[j : j + 1], pred[j : j + 1], maskmem[j])
                objs[i].non_cond[frame_idx] = entry
                entries.append(entry)
                low[i] = pred[j : j + 1]
            groups: dict[int, list[int]] = defaultdict(list)
            for j, i in enumerate(todo):
                groups[id(self._policy(objs[i]))].append(j)
            for rows in groups.values():
                self._policy(objs[todo[rows[0]]]).commit(
                    [entries[j] for j in rows], out.iou[rows].tolist(), out.score[rows, 0].tolist()
                )
        for i, obj in enumerate(objs):
            if low[i] is None:
                low[i] = obj.cond[frame_idx].pred_masks
            obj.tracked.mark(frame_idx, reverse)
        if not state.keep_outputs:
            retain = lambda o: self._policy(o).retain(o, frame_idx, reverse, self.ctx)
            prune(objs, frame_idx, reverse, self.retention, retain)
        return np.concatenate(low)

    # ------------------------------------------------------------------ editing
    def clear_all_prompts_in_frame(
        self, state: OnnxVideoState, frame_idx: int, obj_id: Hashable, need_output: bool = True
    ) -> Result | None:
        """Remove one object's clicks/mask on a frame; its output there becomes a tracked one."""
        t = self._check_frame(state, frame_idx)
        state.object(obj_id).clear_prompts(t)
        if not need_output:
            return None
        return t, state.obj_ids, self._consolidated(state, t, has_cond_prompt(state.objects.values(), t))

    def remove_object(
        self, state: OnnxVideoState, obj_id: Hashable, strict: bool = False, need_output: bool = True
    ) -> tuple[list[Hashable], list[tuple[int, np.ndarray]]]:
        """Forget an object; returns the remaining ids and the updated masks of its prompted frames."""
        report = (lambda t, is_cond: self._consolidated(state, t, is_cond)) if need_output else None
        updated = remove_object_memory(state.objects, obj_id, strict, report)
        return state.obj_ids, updated

    # ------------------------------------------------------------------ helpers
    def _features(self, state: OnnxVideoState, frame_idx: int) -> Features:
        feats = state.features
        if feats is None or feats.frame_idx != frame_idx:
            feats = state.features = self.tracker.encode_frame(frame_idx, state.frames[frame_idx])
        return feats

    def _policy(self, obj: ObjectMemory) -> NumpyFifoPolicy:
        return obj.policy if obj.policy is not None else self.memory

    def _thresholds(self, objs: list[ObjectMemory]) -> np.ndarray:
        """(B, 1) the objects' presence thresholds."""
        return np.array([[self._policy(o).present_threshold] for o in objs], dtype=np.float32)

    def _select(self, state: OnnxVideoState, obj: ObjectMemory, frame_idx: int, reverse: bool) -> MemorySelection:
        return self._policy(obj).select(obj, frame_idx, reverse, state.num_frames, self.ctx)

    def _fill(self, low: np.ndarray) -> np.ndarray:
        return fill_holes_np(low, self.fill_hole_area) if self.fill_hole_area > 0 else low

    def _check_frame(self, state: OnnxVideoState, frame_idx: Any) -> int:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise ValueError(f"frame_idx must be an int, got {type(frame_idx).__name__}")  # noqa: TRY004 - as VideoPredictor
        t = int(frame_idx)
        total, what = (state.frames.count, "the stream so far") if state.is_stream else (state.num_frames, "the video")
        if not 0 <= t < total:
            raise ValueError(f"frame index {t} is out of range ({what} has {total} frames)")
        return t

    def _consolidated(self, state: OnnxVideoState, frame_idx: int, is_cond: bool) -> np.ndarray:
        """(N, 1, H, W): every object's latest mask on the frame; objects without one get NO_OBJ_SCORE."""
        hw = state.video_hw
        out = np.full((len(state.objects), 1, *hw), self.manifest.extra["video"]["no_obj_score"], np.float32)
        for i, obj in enumerate(state.objects.values()):
            entry = obj.output_at(frame_idx, is_cond)
            if entry is not None and entry.pred_masks is not None:
                out[i : i + 1] = resize_masks_np(entry.pred_masks, hw)
        return out
