"""The ONNX Runtime video predictor: the verbs of :class:`segmenter.VideoPredictor`, without torch.

``OnnxVideoPredictor(folder)`` loads a folder exported with ``parts=("image", "video")`` and runs
``init_state`` / ``add_new_points_or_box`` / ``propagate_in_video`` with numpy and onnxruntime
only. The graphs hold the tensor math of a tracking step (:mod:`segmenter.export.video_graphs`);
the bookkeeping is the PyTorch predictor's own: per-object memory (:class:`ObjectMemory`, frame
entries holding numpy arrays), frame and pointer selection (:func:`select_memory` and the
policies of :mod:`segmenter.video.policies`, here in their numpy form), the bounded state's
pruning (:func:`prune`). Memories are stored rounded to bfloat16 values, as the PyTorch tracker
stores them.

Scope: offline videos (a list or (T, H, W, 3) array of RGB frames), points and boxes (no mask
prompts), the ``fifo`` and ``quality`` memory policies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segmenter.export.manifest import ExportError, ExportManifest
from segmenter.export.numpy_transforms import preprocess_video_frame_np, resize_masks_np
from segmenter.export.runtime import open_sessions, require_onnxruntime
from segmenter.export.video_policies import (
    NumpyFifoPolicy,
    SelectionContext,
    numpy_policy,
)
from segmenter.video.memory_bank import (
    FrameEntry,
    MemorySelection,
    ObjectMemory,
    RetentionPolicy,
    pending_prompt_entries,
    prune,
)

__all__ = ["OnnxVideoPredictor", "OnnxVideoState"]

Result = tuple[int, list[Hashable], np.ndarray]  # frame index, object ids, (N, 1, H, W) logits
VIDEO_GRAPHS = ("image_encoder", "memory_attention", "video_heads", "memory_encoder")
LOW_RES_CLAMP = 32.0  # previous logits fed back with new clicks are clamped first (as SAM 2 returns them)


def round_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), kept as float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    bits = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    return (bits & np.uint32(0xFFFF0000)).view(np.float32)


def fill_holes_np(low: np.ndarray, max_area: int, fill_value: float = 0.1) -> np.ndarray:
    """(N, 1, h, w) logits: 8-connected background components of <= ``max_area`` pixels -> ``fill_value``
    (:func:`segmenter.postprocess.fill_holes`)."""
    import cv2

    n, _, h, w = low.shape
    canvas = np.zeros((n, h + 1, w), dtype=np.uint8)  # a False row between masks
    canvas[:, :h] = low[:, 0] <= 0
    count, labels = cv2.connectedComponents(canvas.reshape(n * (h + 1), w), connectivity=8, ltype=cv2.CV_32S)
    small = np.bincount(labels.ravel(), minlength=count) <= max_area
    small[0] = False
    holes = small[labels.reshape(n, h + 1, w)[:, :h]][:, None]  # (N, 1, h, w)
    return np.where(holes, np.float32(fill_value), low).astype(np.float32)


@dataclass(eq=False)
class Features:
    """One frame's image-encoder outputs (batch 1)."""

    frame_idx: int
    vision: np.ndarray  # (1, C, h, w)
    image_embed: np.ndarray  # (1, C, h, w) vision + no-memory embedding
    high_res: tuple[np.ndarray, np.ndarray]  # (1, C/8, 4h, 4w), (1, C/4, 2h, 2w)


@dataclass(eq=False)
class OnnxVideoState:
    """A tracking session: the frames, every object's memory, the current frame's features."""

    frames: Sequence[np.ndarray]  # RGB (H, W, 3) uint8
    num_frames: int
    video_height: int
    video_width: int
    keep_outputs: bool = False
    objects: dict[Hashable, ObjectMemory] = field(default_factory=dict)
    features: Features | None = None

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


@dataclass(eq=False)
class HeadChoice:
    """The kept candidate of B objects."""

    low: np.ndarray  # (B, 1, 4h, 4w) gated logits
    iou: np.ndarray  # (B,) its predicted IoU
    ptr: np.ndarray  # (B, C) gated object pointer
    score: np.ndarray  # (B, 1) object score logits


class OnnxVideoPredictor:
    """SAM 2 video tracking on ONNX Runtime with :class:`segmenter.VideoPredictor`'s verbs and outputs.

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
        self._sessions = open_sessions(self.folder, self.manifest, VIDEO_GRAPHS, providers, threads)
        spec = {t.name: t for t in self.manifest.graphs["video_heads"].inputs}
        self._low_hw = tuple(int(d) for d in spec["mask_input"].shape[-2:])

    def _run(self, graph: str, **feeds: np.ndarray) -> list[np.ndarray]:
        return self._sessions[graph].run(None, feeds)

    # ------------------------------------------------------------------ sessions
    def init_state(self, video: Sequence[np.ndarray] | np.ndarray, keep_outputs: bool = False) -> OnnxVideoState:
        """Open a video given as RGB (H, W, 3) uint8 frames (a list, or a (T, H, W, 3) array)."""
        if len(video) == 0:
            raise ValueError("the video has no frames; pass a list of (H, W, 3) uint8 RGB frames")
        h, w = np.asarray(video[0]).shape[:2]
        state = OnnxVideoState(video, len(video), int(h), int(w), bool(keep_outputs))
        self._features(state, 0)  # as the PyTorch predictor: the first frame is encoded on opening
        return state

    def reset_state(self, state: OnnxVideoState) -> None:
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
        pts, lab = self._prompt(points, labels, box, normalize_coords, (state.video_height, state.video_width))
        obj = state.object(obj_id, create=True)
        old = None if clear_old_points else obj.point_inputs.get(t)
        if old is not None:
            pts, lab = np.concatenate([old[0], pts], axis=1), np.concatenate([old[1], lab], axis=1)
        obj.point_inputs[t] = (pts, lab)
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
            pix_feat = self._condition(feats, [self._select(state, obj, t, bool(reverse))], state.num_frames)
        multimask = pts.shape[1] <= 1  # SAM 2: candidates for 0 or 1 click (a box counts 2)
        out = self._heads(pix_feat, feats, (pts, lab), prev_logits, multimask, [self.memory])
        obj.temp(is_init)[t] = FrameEntry(out.ptr, out.score, self._fill(out.low))
        return t, state.obj_ids, self._consolidated(state, t, is_init)

    def _prompt(
        self, points: Any, labels: Any, box: Any, normalize_coords: bool, hw: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """-> coords (1, M, 2) float32 in model-input pixels, labels (1, M) int64, a box first."""
        if points is None and box is None:
            raise ValueError("at least one of points or box must be provided as input")
        coords = np.zeros((0, 2), np.float32)
        lab = np.zeros(0, np.int64)
        if points is not None:
            coords = np.asarray(points, dtype=np.float32).reshape(-1, 2)
            lab = np.asarray(labels).reshape(-1)
            if labels is None or lab.shape[0] != coords.shape[0] or not np.isin(lab, (0, 1)).all():
                raise ValueError("points (N, 2) need labels (N,) of 1 (foreground) / 0 (background)")
        if box is not None:
            b = np.asarray(box, dtype=np.float32).reshape(-1)
            if b.shape != (4,) or b[2] < b[0] or b[3] < b[1]:
                raise ValueError(f"box must be one xyxy box (4,), got {np.shape(box)}")
            coords = np.concatenate([b.reshape(2, 2), coords])
            lab = np.concatenate([np.array([2, 3]), lab])
        if normalize_coords:  # pixels -> [0, 1], dividing by (W, H)
            coords = coords / np.array([hw[1], hw[0]], dtype=np.float32)
        return (coords * np.float32(self.image_size))[None].astype(np.float32), lab[None].astype(np.int64)

    # ------------------------------------------------------------------ propagation
    def propagate_in_video_preflight(self, state: OnnxVideoState) -> None:
        """Encode the memories of new prompt outputs (binarised masks, one batch per frame) and file them."""
        if not state.objects:
            raise RuntimeError("No input points or masks are provided for any object; please add inputs first.")
        for t, entries in pending_prompt_entries(state.objects.values()).items():
            feats = self._features(state, t)
            low = np.concatenate([e.pred_masks for e in entries])
            scores = np.concatenate([e.object_score_logits for e in entries])
            maskmem = self._encode_memory(feats, low, scores, binarize=True)
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
            yield t, obj_ids, resize_masks_np(low, (state.video_height, state.video_width))

    def _track_frame(self, state: OnnxVideoState, frame_idx: int, reverse: bool) -> np.ndarray:
        """One step over all objects: (N, 1, h, w) low-res logits."""
        objs = list(state.objects.values())
        todo = [i for i, obj in enumerate(objs) if frame_idx not in obj.cond]
        low: list[np.ndarray | None] = [None] * len(objs)
        if todo:
            feats = self._features(state, frame_idx)
            sels = [self._select(state, objs[i], frame_idx, reverse) for i in todo]
            pix_feat = self._condition(feats, sels, state.num_frames)
            out = self._heads(pix_feat, feats, None, None, True, [self._policy(objs[i]) for i in todo])
            maskmem = self._encode_memory(feats, out.low, out.score, binarize=False)
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

    # ------------------------------------------------------------------ the graphs
    def _features(self, state: OnnxVideoState, frame_idx: int) -> Features:
        feats = state.features
        if feats is None or feats.frame_idx != frame_idx:
            image = preprocess_video_frame_np(np.asarray(state.frames[frame_idx]), self.image_size)
            embed, f0, f1, vision = self._run("image_encoder", image=image)
            feats = state.features = Features(frame_idx, vision, embed, (f0, f1))
        return feats

    def _condition(self, feats: Features, sels: list[MemorySelection], num_frames: int | None) -> np.ndarray:
        """(B, C, h, w) memory-conditioned features, one memory-attention run per memory layout."""
        cap = self.ctx.max_obj_ptrs if num_frames is None else min(num_frames, self.ctx.max_obj_ptrs)
        tpos_max = np.array([cap - 1], dtype=np.float32)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, sel in enumerate(sels):
            groups[sel.layout].append(i)
        out: list[np.ndarray | None] = [None] * len(sels)
        for idx in groups.values():
            group = [sels[i] for i in idx]
            memory = np.stack([np.stack([e.maskmem for _, e in sel.memories]) for sel in group])  # (B, F, HW, D)
            slots = np.array([[slot for slot, _ in sel.memories] for sel in group], dtype=np.int64)  # (B, F)
            num_ptr, dim = group[0].layout[1], feats.vision.shape[1]
            ptrs = np.zeros((len(idx), num_ptr, dim), np.float32)  # (B, P, C); P may be 0
            offsets = np.zeros((len(idx), num_ptr), np.float32)  # (B, P)
            for j, sel in enumerate(group):
                for k, (off, ptr) in enumerate(sel.pointers):
                    ptrs[j, k], offsets[j, k] = ptr[0], off
            (fused,) = self._run(
                "memory_attention", vision_features=feats.vision, memory=memory.astype(np.float32),
                memory_slots=slots, obj_ptrs=ptrs, ptr_offsets=offsets, ptr_tpos_max=tpos_max,
            )  # fmt: skip
            for j, i in enumerate(idx):
                out[i] = fused[j : j + 1]
        return np.concatenate(out)

    def _heads(
        self,
        pix_feat: np.ndarray,  # (B, C, h, w)
        feats: Features,
        points: tuple[np.ndarray, np.ndarray] | None,  # (B, N, 2), (B, N)
        mask_input: np.ndarray | None,  # (B, 1, 4h, 4w)
        multimask: bool,
        policies: list[NumpyFifoPolicy],
    ) -> HeadChoice:
        b = pix_feat.shape[0]
        if points is None:  # a single padding point
            points = (np.zeros((b, 1, 2), np.float32), -np.ones((b, 1), np.int64))
        has_mask = np.ones(1, np.float32) if mask_input is not None else np.zeros(1, np.float32)
        if mask_input is None:
            mask_input = np.zeros((b, 1, *self._low_hw), np.float32)
        thresholds = np.array([[p.present_threshold] for p in policies], dtype=np.float32)
        low_m, iou_m, ptr_m, low_s, iou_s, ptr_s, score = self._run(
            "video_heads", pix_feat=pix_feat, high_res_feats_0=feats.high_res[0], high_res_feats_1=feats.high_res[1],
            point_coords=points[0], point_labels=points[1], mask_input=mask_input.astype(np.float32),
            has_mask_input=has_mask, present_threshold=thresholds,
        )  # fmt: skip
        if not multimask:
            return HeadChoice(low_s, iou_s[:, 0], ptr_s, score)
        rows = np.arange(b)
        best = iou_m.argmax(axis=-1)  # fifo and quality keep the best predicted IoU
        return HeadChoice(low_m[rows, best][:, None], iou_m[rows, best], ptr_m[rows, best], score)

    def _encode_memory(self, feats: Features, low: np.ndarray, scores: np.ndarray, binarize: bool) -> np.ndarray:
        """(B, HW, D) memory features, rounded to bfloat16 values as the PyTorch tracker stores them."""
        (maskmem,) = self._run(
            "memory_encoder", vision_features=feats.vision, mask_logits=low.astype(np.float32),
            object_score_logits=scores.astype(np.float32), binarize=np.array([float(binarize)], np.float32),
        )  # fmt: skip
        return round_bfloat16(maskmem)

    # ------------------------------------------------------------------ helpers
    def _policy(self, obj: ObjectMemory) -> NumpyFifoPolicy:
        return obj.policy if obj.policy is not None else self.memory

    def _select(self, state: OnnxVideoState, obj: ObjectMemory, frame_idx: int, reverse: bool) -> MemorySelection:
        return self._policy(obj).select(obj, frame_idx, reverse, state.num_frames, self.ctx)

    def _fill(self, low: np.ndarray) -> np.ndarray:
        return fill_holes_np(low, self.fill_hole_area) if self.fill_hole_area > 0 else low

    def _check_frame(self, state: OnnxVideoState, frame_idx: Any) -> int:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise ValueError(f"frame_idx must be an int, got {type(frame_idx).__name__}")  # noqa: TRY004 - as VideoPredictor
        t = int(frame_idx)
        if not 0 <= t < state.num_frames:
            raise ValueError(f"frame index {t} is out of range (the video has {state.num_frames} frames)")
        return t

    def _consolidated(self, state: OnnxVideoState, frame_idx: int, is_cond: bool) -> np.ndarray:
        """(N, 1, H, W): every object's latest mask on the frame; objects without one get NO_OBJ_SCORE."""
        hw = (state.video_height, state.video_width)
        out = np.full((len(state.objects), 1, *hw), self.manifest.extra["video"]["no_obj_score"], np.float32)
        for i, obj in enumerate(state.objects.values()):
            entry = obj.output_at(frame_idx, is_cond)
            if entry is not None and entry.pred_masks is not None:
                out[i : i + 1] = resize_masks_np(entry.pred_masks, hw)
        return out
