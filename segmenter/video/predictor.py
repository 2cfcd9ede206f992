"""SAM 2 video object tracking with the official ``SAM2VideoPredictor`` verbs and results.

Differences from the reference. With ``exact=True`` none changes a number; by default the CPU
products of the encoders and memory attention go through oneDNN, equal to float32 rounding.

* all objects of a frame are tracked in one batch (memory attention per memory layout, one
  mask-decoder and one memory-encoder call), and the frame's features are computed once;
* frames are decoded lazily from the video and never held as a whole;
* with ``keep_outputs=False`` (default) the state keeps only what later steps read (prompted
  frames' outputs, the memories and pointers of recent and near-prompt frames: see
  :class:`segmenter.video.memory_bank.RetentionPolicy`), so memory does not grow with video length.
  Propagating on in either direction, and correcting the last tracked frame or a frame near a
  prompt, are exact; an action that would read released outputs (a correction in the middle of a
  long tracked stretch) warns and uses the memories left. ``keep_outputs=True`` keeps everything;
* a live stream is tracked one frame at a time (``init_stream``, ``add_frame``, ``track``);
  ``box_masks`` / ``add_new_boxes`` prompt many boxes on the current frame in one batch (e.g. a
  detector's). A stream has no known length: object pointers' temporal encodings are normalised as
  for a video of 16 frames or more (the reference uses the frame count below 16).

The same verbs on ONNX Runtime, without torch: :meth:`VideoPredictor.from_onnx`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gsam_runtime.device import autocast
from segmenter.modeling.interface import LOW_RES_CLAMP
from segmenter.modeling.sam2 import SAM2Model
from segmenter.postprocess import fill_holes
from segmenter.video.memory_bank import (
    FrameEntry, MemorySelection, ObjectMemory, RetentionPolicy, has_cond_prompt, new_object_ids,
    pending_prompt_entries, prune, remove_object_memory,
)
from segmenter.video.policies import MemoryContext, MemoryPolicy, make_policy
from segmenter.video.policies.step import PolicyStep
from segmenter.video.prompts import box_prompt, frame_index, mask_prompt, point_prompt, processing_order
from segmenter.video.tracking import FrameFeatures, Tracker, use_multimask
from segmenter.video.frames import open_video, preprocess_video_frame
from segmenter.video.outputs import consolidate, to_video_res
from segmenter.video.state import FrameBuffer, VideoState

__all__ = ["VideoPredictor", "VideoState"]

Result = tuple[int, list[Hashable], torch.Tensor]  # frame index, object ids, (N, 1, H, W) logits


class VideoPredictor:
    """Promptable multi-object video segmentation (SAM 2 / SAM 2.1).

    Args:
        model: a SAM 2 model with memory modules (:func:`segmenter.build_sam`).
        fill_hole_area: fill each object's background holes up to this many low-res pixels (0: off).
        non_overlap_masks: give each output pixel to the highest-scoring object only.
        add_all_frames_to_correct_as_cond: corrections on tracked frames become conditioning frames.
        autocast: bf16 autocast; ``None`` = on for CUDA, off elsewhere.
        memory: the memory/mask-selection policy of every object (``"fifo"``: SAM 2's; ``"quality"``,
            ``"samurai"``, ``"distractor"`` or a policy object: :mod:`segmenter.video.policies`).
        exact: on the CPU, PyTorch's GEMMs in the reference's order (one object's outputs equal
            Meta's bit for bit). Default: oneDNN GEMMs in the encoders and memory attention, faster
            where MKL is slow (AMD), equal to float32 rounding (see ``docs/benchmarks.md``).
    """

    def __init__(
        self,
        model: SAM2Model,
        fill_hole_area: int = 8,
        non_overlap_masks: bool = False,
        add_all_frames_to_correct_as_cond: bool = False,
        autocast: bool | None = None,
        memory: str | MemoryPolicy = "fifo",
        exact: bool = False,
    ) -> None:
        if fill_hole_area < 0:
            raise ValueError(f"fill_hole_area must be >= 0, got {fill_hole_area}")
        self.model = model.eval()
        self.tracker = Tracker(self.model, exact=exact)
        self.fill_hole_area = int(fill_hole_area)
        self.non_overlap_masks = bool(non_overlap_masks)
        self.add_all_frames_to_correct_as_cond = bool(add_all_frames_to_correct_as_cond)
        self._autocast = autocast
        mem = model.config.memory
        self.retention = RetentionPolicy(mem.num_maskmem, mem.max_obj_ptrs_in_encoder)
        self.memory = make_policy(memory)
        self._ctx = MemoryContext(mem.num_maskmem, mem.max_obj_ptrs_in_encoder, mem.use_signed_tpos_enc_to_obj_ptrs)

    @classmethod
    def from_pretrained(
        cls, model_id: str, device: str | torch.device | None = None, image_size: int | None = None, **kwargs: Any
    ) -> VideoPredictor:
        """Load a model by hub id or local checkpoint (see :func:`segmenter.from_pretrained`)."""
        from segmenter.build import from_pretrained

        return cls(from_pretrained(model_id, device=device, image_size=image_size), **kwargs)

    @staticmethod
    def from_onnx(folder: str, **kwargs: Any) -> Any:
        """:class:`segmenter.export.OnnxVideoPredictor` on a folder exported with the video parts
        (``kwargs``: ``memory`` "fifo" / "quality", ``fill_hole_area``, ``providers``, ``threads``)."""
        from segmenter.export.video_runtime import OnnxVideoPredictor

        return OnnxVideoPredictor(folder, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def image_size(self) -> int:
        return self.model.image_size

    # ------------------------------------------------------------------ sessions
    @torch.inference_mode()
    def init_state(
        self,
        video: Any,
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        async_loading_frames: bool = False,
        keep_outputs: bool = False,
    ) -> VideoState:
        """Open a video: an mp4/avi/mov path, a folder of frames, a list or iterator of RGB frames.

        Frames are decoded when needed, so ``offload_video_to_cpu`` and ``async_loading_frames``
        (reference options) have nothing to do. ``offload_state_to_cpu`` stores memories and
        masks on the CPU. ``keep_outputs=True`` keeps every frame's outputs (memory grows
        with the video, like the reference).
        """
        del offload_video_to_cpu, async_loading_frames
        source = open_video(video)
        if source.num_frames == 0:
            raise ValueError(f"the video {video!r} has no frames")
        state = self._new_state(source, source.num_frames, offload_state_to_cpu, keep_outputs, is_stream=False)
        try:
            self._features(state, 0)  # decodes and encodes the first frame, like the reference
        except IndexError:
            raise ValueError("the video has no frames") from None
        return state

    def init_stream(self, offload_state_to_cpu: bool = False, keep_outputs: bool = False) -> VideoState:
        """A session for a live stream: feed frames with :meth:`add_frame` / :meth:`track`."""
        return self._new_state(FrameBuffer(), None, offload_state_to_cpu, keep_outputs, is_stream=True)

    def _new_state(
        self, source: Any, num_frames: int | None, offload: bool, keep_outputs: bool, is_stream: bool
    ) -> VideoState:
        device = self.device
        storage = torch.device("cpu") if offload else device
        return VideoState(source, num_frames, device, storage, bool(keep_outputs), is_stream)

    def add_frame(self, state: VideoState, frame: np.ndarray) -> int:
        """Append an RGB (H, W, 3) uint8 frame to a stream; returns its index."""
        if not state.is_stream:
            raise ValueError("add_frame needs a stream session from init_stream()")
        return state.source.push(frame)

    @torch.inference_mode()
    def track(self, state: VideoState, frame: np.ndarray | None = None) -> Result:
        """Track the next frame of a stream (``frame`` appended first if given), as ``propagate_in_video``
        would; frames before the first prompt give an empty (0, 1, H, W) result."""
        if frame is not None:
            self.add_frame(state, frame)
        if not state.is_stream:
            raise ValueError("track needs a stream session from init_stream(); use propagate_in_video for videos")
        idx = state.next_frame
        if idx >= state.source.count:
            raise RuntimeError("no new frame to track; pass one to track(state, frame) or add_frame first")
        if state.objects:
            self.propagate_in_video_preflight(state)
            low = self._track_frame(state, idx, reverse=False)
        else:
            low = torch.zeros(0, 1, 1, 1, device=state.device)
        state.next_frame = idx + 1
        state.source.release_before(idx)
        return idx, state.obj_ids, self._video_res(state, low)

    # ------------------------------------------------------------------ prompts
    @torch.inference_mode()
    def add_new_points_or_box(
        self,
        state: VideoState,
        frame_idx: int,
        obj_id: Hashable,
        points: Any = None,
        labels: Any = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box: Any = None,
    ) -> Result:
        """Add clicks (and/or a box) for one object on one frame; returns all objects' masks there.
        ``points`` (N, 2) xy and ``labels`` (N,) 1/0; ``box`` xyxy: video pixels ([0, 1] with
        ``normalize_coords=False``)."""
        frame_idx = self._check_frame(state, frame_idx)
        if box is not None and not clear_old_points:
            raise ValueError("a box must come before any point: use clear_old_points=True with a box")
        hw = (state.video_height, state.video_width)
        pts, lab = point_prompt(points, labels, box, normalize_coords, hw, self.image_size)
        pts, lab = pts.to(state.device), lab.to(state.device)

        obj = state.object(obj_id, create=True)
        old = None if clear_old_points else obj.point_inputs.get(frame_idx)
        if old is not None:
            pts, lab = torch.cat([old[0], pts], dim=1), torch.cat([old[1], lab], dim=1)
        obj.point_inputs[frame_idx] = (pts, lab)
        obj.mask_frames.discard(frame_idx)

        is_init, reverse, is_cond = self._frame_role(obj, frame_idx)
        prev = obj.output_at(frame_idx, is_cond)
        prev_logits = None
        if prev is not None and prev.pred_masks is not None:
            # previous logits fed back with new clicks are clamped first, as SAM 2 returns them
            prev_logits = prev.pred_masks.to(state.device).clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)
        elif not is_init:
            state.warn_released(f"frame {frame_idx}'s previous mask of object {obj_id!r}")
        feats = self._features(state, frame_idx)
        step = PolicyStep.build([obj], self.memory, frame_idx)
        with self._amp(state):
            if is_init:
                pix_feat = feats.no_mem
            else:
                pix_feat = self.tracker.condition(feats, [self._select(state, obj, frame_idx, reverse)], state.num_frames)
            out = self.tracker.heads(pix_feat, feats, (pts, lab), prev_logits, use_multimask(pts.shape[1]), step)
        obj.temp(is_cond)[frame_idx] = self._entry(state, out.low_res, out.obj_ptr, out.object_score_logits)
        return frame_idx, state.obj_ids, self._consolidated(state, frame_idx, is_cond)

    def add_new_points(self, *args: Any, **kwargs: Any) -> Result:
        """Deprecated alias of :meth:`add_new_points_or_box` (as in the reference)."""
        return self.add_new_points_or_box(*args, **kwargs)

    @torch.inference_mode()
    def add_new_mask(self, state: VideoState, frame_idx: int, obj_id: Hashable, mask: Any) -> Result:
        """Give one object's mask (H, W) (bool or 0/1, the video's size) on one frame."""
        frame_idx = self._check_frame(state, frame_idx)
        m = mask_prompt(mask, (state.video_height, state.video_width), self.image_size, state.device)

        obj = state.object(obj_id, create=True)
        obj.mask_frames.add(frame_idx)
        obj.point_inputs.pop(frame_idx, None)
        _, _, is_cond = self._frame_role(obj, frame_idx)
        feats = self._features(state, frame_idx)
        with self._amp(state):
            out = self.tracker.mask_as_output(feats, m, PolicyStep.build([obj], self.memory, frame_idx))
        obj.temp(is_cond)[frame_idx] = self._entry(state, out.low_res, out.obj_ptr, out.object_score_logits)
        return frame_idx, state.obj_ids, self._consolidated(state, frame_idx, is_cond)

    @torch.inference_mode()
    def add_new_boxes(
        self, state: VideoState, obj_ids: Sequence[Hashable], boxes: Any, frame_idx: int | None = None
    ) -> Result:
        """Start N new objects, one box (N, 4) xyxy in video pixels each, decoded in one batch: each gets
        the mask :meth:`add_new_points_or_box` would give its box. ``frame_idx`` defaults to a stream's
        current frame (the one :meth:`track` returned last)."""
        t = self._boxes_frame(state, frame_idx)
        corners, labels = box_prompt(boxes, (state.video_height, state.video_width), self.image_size)
        ids = list(obj_ids)
        if len(ids) != len(corners):
            raise ValueError(f"{len(corners)} boxes for {len(ids)} object ids; give one box per object")
        ids = new_object_ids(state.objects, ids)
        corners, labels = corners.to(state.device), labels.to(state.device)  # (N, 2, 2), (N, 2)
        feats = self._features(state, t)
        step = PolicyStep.build([ObjectMemory(i) for i in ids], self.memory, t)
        with self._amp(state):
            no_memory = feats.no_mem.expand(len(ids), -1, -1, -1)  # new objects: no memory yet
            out = self.tracker.heads(no_memory, feats, (corners, labels), None, use_multimask(corners.shape[1]), step)
        for j, obj_id in enumerate(ids):
            obj = state.object(obj_id, create=True)
            obj.point_inputs[t] = (corners[j : j + 1], labels[j : j + 1])
            one = slice(j, j + 1)
            obj.temp_cond[t] = self._entry(state, out.low_res[one], out.obj_ptr[one], out.object_score_logits[one])
        return t, state.obj_ids, self._consolidated(state, t, is_cond=True)

    @torch.inference_mode()
    def box_masks(self, state: VideoState, boxes: Any, frame_idx: int | None = None) -> torch.Tensor:
        """(N, 1, H, W) logits at video resolution of boxes (N, 4) xyxy in video pixels from the frame
        alone (no memory; nothing is added to the session); ``frame_idx`` as in :meth:`add_new_boxes`."""
        t = self._boxes_frame(state, frame_idx)
        corners, _ = box_prompt(boxes, (state.video_height, state.video_width), self.image_size)
        feats = self._features(state, t)
        boxes_in = corners.to(state.device).reshape(-1, 4)  # (N, 4) model-input pixels
        with self._amp(state):
            low, _ = self.model.decode_masks(
                feats.no_mem, boxes=boxes_in, multimask_output=False, high_res_feats=feats.high_res
            )
        return to_video_res(state, low.float(), non_overlap=False)

    def _boxes_frame(self, state: VideoState, frame_idx: int | None) -> int:
        if frame_idx is not None:
            return self._check_frame(state, frame_idx)
        if not state.is_stream or state.next_frame == 0:
            raise ValueError("give frame_idx (only a stream that has tracked a frame has a current one)")
        return state.next_frame - 1

    def _frame_role(self, obj: ObjectMemory, frame_idx: int) -> tuple[bool, bool, bool]:
        """(initial conditioning frame?, tracked in reverse?, stored as conditioning?)."""
        reverse = obj.tracked.get(frame_idx)
        is_init = reverse is None
        return is_init, bool(reverse), is_init or self.add_all_frames_to_correct_as_cond

    # ------------------------------------------------------------------ propagation
    @torch.inference_mode()
    def propagate_in_video_preflight(self, state: VideoState) -> None:
        """Encode the memories of new prompt outputs (one batch per frame) and file them."""
        if not state.objects:
            raise RuntimeError("No input points or masks are provided for any object; please add inputs first.")
        for t, entries in pending_prompt_entries(state.objects.values()).items():
            feats = self._features(state, t)
            low = torch.cat([e.pred_masks.to(state.device) for e in entries])
            high = F.interpolate(low, (self.image_size,) * 2, mode="bilinear", align_corners=False)
            scores = torch.cat([e.object_score_logits for e in entries])
            with self._amp(state):
                maskmem = self.tracker.encode_memory(feats, high, scores, binarize=True)
            maskmem = maskmem.to(state.storage_device)
            for j, e in enumerate(entries):
                e.maskmem = maskmem[j]
        for obj in state.objects.values():
            obj.file_prompt_outputs()

    @torch.inference_mode()
    def propagate_in_video(
        self,
        state: VideoState,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
    ) -> Iterator[Result]:
        """Track every object through the video; yields ``(frame_idx, obj_ids, (N, 1, H, W) logits)``.

        Starts at the earliest prompted frame by default, and covers at most
        ``max_frame_num_to_track`` frames after the start (in the chosen direction).
        """
        self.propagate_in_video_preflight(state)
        if start_frame_idx is None:
            start_frame_idx = min(t for obj in state.objects.values() for t in obj.cond)
        start = self._check_frame(state, start_frame_idx)
        order = processing_order(start, max_frame_num_to_track, state.num_frames, reverse)
        obj_ids = state.obj_ids
        for t in order:
            if not state.frame_available(t):  # unknown length, or a container that over-counted
                break
            low = self._track_frame(state, t, reverse)
            if state.is_stream and not reverse:
                state.next_frame = max(state.next_frame, t + 1)
            yield t, obj_ids, self._video_res(state, low)

    def _track_frame(self, state: VideoState, frame_idx: int, reverse: bool) -> torch.Tensor:
        """One propagation step over all objects: (N, 1, h, w) low-res logits."""
        objs = list(state.objects.values())
        todo = [i for i, obj in enumerate(objs) if frame_idx not in obj.cond]
        low: list[torch.Tensor | None] = [None] * len(objs)
        if todo:
            feats = self._features(state, frame_idx)
            sels = [self._select(state, objs[i], frame_idx, reverse) for i in todo]
            step = PolicyStep.build([objs[i] for i in todo], self.memory, frame_idx)
            with self._amp(state):
                out, maskmem = self.tracker.track(feats, sels, state.num_frames, step)
            pred = self._fill(out.low_res)
            stored = pred.to(state.storage_device)
            maskmem = maskmem.to(state.storage_device)
            entries = []
            for j, i in enumerate(todo):
                entries.append(FrameEntry(
                    out.obj_ptr[j : j + 1], out.object_score_logits[j : j + 1], stored[j : j + 1], maskmem[j]
                ))  # fmt: skip
                objs[i].non_cond[frame_idx] = entries[-1]
                low[i] = pred[j : j + 1]
            if step is not None:
                step.commit(entries, reverse)
        for i, obj in enumerate(objs):
            if low[i] is None:
                low[i] = obj.cond[frame_idx].pred_masks.to(state.device)
            obj.tracked.mark(frame_idx, reverse)
        if not state.keep_outputs:
            retain = lambda o: self._policy(o).retain(o, frame_idx, reverse, self._ctx)  # noqa: E731
            prune(objs, frame_idx, reverse, self.retention, retain)
        return torch.cat(low)

    def _policy(self, obj: ObjectMemory) -> MemoryPolicy:
        return obj.policy if obj.policy is not None else self.memory

    def _select(self, state: VideoState, obj: ObjectMemory, frame_idx: int, reverse: bool) -> MemorySelection:
        sel = self._policy(obj).select(obj, frame_idx, reverse, state.num_frames, self._ctx)
        if sel.missing:
            state.warn_released(f"{sel.missing} memories of object {obj.obj_id!r} near frame {frame_idx}")
        return sel

    # ------------------------------------------------------------------ editing
    @torch.inference_mode()
    def clear_all_prompts_in_frame(
        self, state: VideoState, frame_idx: int, obj_id: Hashable, need_output: bool = True
    ) -> Result | None:
        """Remove one object's clicks/mask on a frame; its output there becomes a tracked one."""
        frame_idx = self._check_frame(state, frame_idx, must_be_held=False)
        state.object(obj_id).clear_prompts(frame_idx)
        if not need_output:
            return None
        is_cond = has_cond_prompt(state.objects.values(), frame_idx)
        return frame_idx, state.obj_ids, self._consolidated(state, frame_idx, is_cond)

    @torch.inference_mode()
    def remove_object(
        self, state: VideoState, obj_id: Hashable, strict: bool = False, need_output: bool = True
    ) -> tuple[list[Hashable], list[tuple[int, torch.Tensor]]]:
        """Forget an object; returns the remaining ids and the updated masks of its prompted frames."""
        report = (lambda t, is_cond: self._consolidated(state, t, is_cond)) if need_output else None
        updated = remove_object_memory(state.objects, obj_id, strict, report)
        return state.obj_ids, updated

    @torch.inference_mode()
    def reset_state(self, state: VideoState) -> None:
        """Remove every object, prompt and output (the video stays open)."""
        for obj in state.objects.values():
            obj.clear()
        state.objects.clear()

    # ------------------------------------------------------------------ helpers
    def _amp(self, state: VideoState):
        enabled = state.device.type == "cuda" if self._autocast is None else self._autocast
        return autocast(state.device, enabled=enabled)

    def _check_frame(self, state: VideoState, frame_idx: Any, must_be_held: bool = True) -> int:
        if state.is_stream:
            return frame_index(frame_idx, state.source.count, "the stream so far")
        t = frame_index(frame_idx, state.num_frames)
        if state.num_frames is None and must_be_held and not state.frame_available(t):
            raise ValueError(f"frame index {t} is past the end of the video")
        return t

    def frame_features(self, state: VideoState, frame_idx: int) -> FrameFeatures:
        """The image-encoder features of a frame (cached for the current frame; encoded if needed)."""
        return self._features(state, self._check_frame(state, frame_idx))

    def _features(self, state: VideoState, frame_idx: int) -> FrameFeatures:
        feats = state.features
        if feats is None or feats.frame_idx != frame_idx:
            image = preprocess_video_frame(state.source.get(frame_idx), self.image_size)
            image = image.to(state.device).float().unsqueeze(0)  # (1, 3, S, S)
            with self._amp(state):
                feats = self.tracker.encode_frame(frame_idx, image)
            state.features = feats
        return feats

    def _fill(self, low_res: torch.Tensor) -> torch.Tensor:
        return fill_holes(low_res, self.fill_hole_area) if self.fill_hole_area > 0 else low_res

    def _entry(self, state: VideoState, low: torch.Tensor, ptr: torch.Tensor, score: torch.Tensor) -> FrameEntry:
        return FrameEntry(ptr, score, self._fill(low).to(state.storage_device))

    def _video_res(self, state: VideoState, low: torch.Tensor) -> torch.Tensor:
        return to_video_res(state, low, self.non_overlap_masks)

    def _consolidated(self, state: VideoState, frame_idx: int, is_cond: bool) -> torch.Tensor:
        masks, released = consolidate(state, frame_idx, is_cond, self.non_overlap_masks)
        if released:
            state.warn_released(f"frame {frame_idx}'s masks of objects {released}")
        return masks

