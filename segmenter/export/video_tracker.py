"""The graph runs of one SAM 2 tracking step on ONNX Runtime (numpy, no torch).

:class:`OnnxTracker` is the ONNX Runtime counterpart of :class:`segmenter.video.tracking.Tracker`:
a frame's features (``image_encoder``), memory-conditioned features (``memory_attention``, one
run per memory layout), the SAM heads (``video_heads``, candidate kept here), memories
(``memory_encoder``), a mask prompt taken as the output, and the memory-free masks of boxes. It
decides nothing about which memories an object reads: that is the predictor's
(:mod:`segmenter.export.video_runtime`). Stored memories are rounded to bfloat16 values, as the
PyTorch tracker stores them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segmenter.export.manifest import ExportError, ExportManifest
from segmenter.export.numpy_transforms import aa_bilinear_weights
from segmenter.export.runtime import open_sessions
from segmenter.video.frames import preprocess_video_frame_np
from segmenter.video.memory_bank import MemorySelection

__all__ = ["VIDEO_GRAPHS", "Features", "HeadChoice", "OnnxTracker", "fill_holes_np", "round_bfloat16"]

VIDEO_GRAPHS = ("image_encoder", "memory_attention", "video_heads", "memory_encoder")
MASK_OUT_SCALE, MASK_OUT_BIAS = 20.0, -10.0  # a mask prompt used as output: 1 -> +10, 0 -> -10


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
class HeadChoice:
    """The kept candidate of B objects."""

    low: np.ndarray  # (B, 1, 4h, 4w) gated logits
    iou: np.ndarray  # (B,) its predicted IoU
    ptr: np.ndarray  # (B, C) gated object pointer
    score: np.ndarray  # (B, 1) object score logits


class OnnxTracker:
    """Runs the four graphs of an export with the video parts (module docs).

    Args:
        folder, manifest: the export (manifest already read and checked).
        providers, threads: ONNX Runtime's execution providers and intra-op threads.
    """

    def __init__(
        self, folder: Path, manifest: ExportManifest, providers: list[str] | None, threads: int | None
    ) -> None:
        self.image_size = manifest.image_size
        self.max_obj_ptrs = int(manifest.extra["video"]["max_obj_ptrs"])
        self._mask_downsample = manifest.extra["video"].get("mask_downsample")  # {"weight": (4, 4), "bias"}
        self._sessions = open_sessions(folder, manifest, VIDEO_GRAPHS, providers, threads)
        spec = {t.name: t for t in manifest.graphs["video_heads"].inputs}
        self.low_hw = tuple(int(d) for d in spec["mask_input"].shape[-2:])

    def _run(self, graph: str, **feeds: np.ndarray) -> list[np.ndarray]:
        return self._sessions[graph].run(None, feeds)

    def encode_frame(self, frame_idx: int, frame: np.ndarray) -> Features:
        """RGB (H, W, 3) uint8 frame -> its features, shared by every object."""
        image = preprocess_video_frame_np(frame, self.image_size)[None]  # (1, 3, S, S)
        embed, f0, f1, vision = self._run("image_encoder", image=image)
        return Features(frame_idx, vision, embed, (f0, f1))

    def condition(self, feats: Features, sels: list[MemorySelection], num_frames: int | None) -> np.ndarray:
        """(B, C, h, w) memory-conditioned features, one memory-attention run per memory layout."""
        cap = self.max_obj_ptrs if num_frames is None else min(num_frames, self.max_obj_ptrs)
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

    def heads(
        self,
        pix_feat: np.ndarray,  # (B, C, h, w)
        feats: Features,
        points: tuple[np.ndarray, np.ndarray] | None,  # (B, N, 2), (B, N)
        mask_input: np.ndarray | None,  # (B, 1, 4h, 4w)
        multimask: bool,
        thresholds: np.ndarray,  # (B, 1) object presence thresholds
    ) -> HeadChoice:
        """Prompt encoder + mask decoder, gated by presence; the best-IoU candidate with ``multimask``."""
        b = pix_feat.shape[0]
        if points is None:  # a single padding point
            points = (np.zeros((b, 1, 2), np.float32), -np.ones((b, 1), np.int64))
        has_mask = np.ones(1, np.float32) if mask_input is not None else np.zeros(1, np.float32)
        if mask_input is None:
            mask_input = np.zeros((b, 1, *self.low_hw), np.float32)
        low_m, iou_m, ptr_m, low_s, iou_s, ptr_s, score = self._run(
            "video_heads", pix_feat=pix_feat, high_res_feats_0=feats.high_res[0], high_res_feats_1=feats.high_res[1],
            point_coords=points[0], point_labels=points[1], mask_input=mask_input.astype(np.float32),
            has_mask_input=has_mask, present_threshold=thresholds.astype(np.float32),
        )  # fmt: skip
        if not multimask:
            return HeadChoice(low_s, iou_s[:, 0], ptr_s, score)
        rows = np.arange(b)
        best = iou_m.argmax(axis=-1)  # fifo and quality keep the best predicted IoU
        return HeadChoice(low_m[rows, best][:, None], iou_m[rows, best], ptr_m[rows, best], score)

    def encode_memory(self, feats: Features, low: np.ndarray, scores: np.ndarray, binarize: bool) -> np.ndarray:
        """(B, HW, D) memory features, rounded to bfloat16 values as the PyTorch tracker stores them."""
        (maskmem,) = self._run(
            "memory_encoder", vision_features=feats.vision, mask_logits=low.astype(np.float32),
            object_score_logits=scores.astype(np.float32), binarize=np.array([float(binarize)], np.float32),
        )  # fmt: skip
        return round_bfloat16(maskmem)

    def mask_as_output(self, feats: Features, masks: np.ndarray, thresholds: np.ndarray) -> HeadChoice:
        """Mask prompts (B, 1, S, S) of 0/1 taken as the prediction (``Tracker.mask_as_output``): logits
        +-10 downsampled to (B, 1, 4h, 4w), the pointer from the heads prompted with the mask."""
        if self._mask_downsample is None:
            raise ExportError(
                "this export has no mask_downsample weights (manifest extra.video.mask_downsample), which "
                "add_new_mask needs; export the model again with a version that records them"
            )
        b, _, s, _ = masks.shape
        high = masks.astype(np.float32) * np.float32(MASK_OUT_SCALE) + np.float32(MASK_OUT_BIAS)
        w = aa_bilinear_weights(s, s // 4)  # (S/4, S): antialiased bilinear, as F.interpolate(antialias=True)
        low = np.matmul(np.matmul(w, high), w.T)  # (B, 1, S/4, S/4)
        # model.mask_downsample: a 4x4 stride-4 convolution, 1 channel in and out
        weight = np.asarray(self._mask_downsample["weight"], np.float32).reshape(4, 4)
        blocks = masks.astype(np.float32).reshape(b, 1, s // 4, 4, s // 4, 4)
        prompt = np.einsum("bcihjw,hw->bcij", blocks, weight) + np.float32(self._mask_downsample["bias"])
        present = masks.reshape(b, -1).any(axis=1, keepdims=True)  # (B, 1)
        # absent masks take the no-object pointer: the heads give it to every row under threshold +inf
        gate = np.where(present, thresholds, np.inf).astype(np.float32)
        vision = np.broadcast_to(feats.vision, (b, *feats.vision.shape[1:]))
        ptr = self.heads(np.ascontiguousarray(vision), feats, None, prompt.astype(np.float32), False, gate).ptr
        score = (np.float32(MASK_OUT_SCALE) * present + np.float32(MASK_OUT_BIAS)).astype(np.float32)
        return HeadChoice(low.astype(np.float32), np.ones(b, np.float32), ptr, score)

    def box_masks(self, feats: Features, corners: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(N, 1, 4h, 4w) ungated single-mask logits of box corners (N, 2, 2) / labels (N, 2) from the
        frame alone (no memory), as ``SAM2Model.decode_masks(boxes=...)``."""
        n = corners.shape[0]
        no_memory = np.ascontiguousarray(np.broadcast_to(feats.image_embed, (n, *feats.image_embed.shape[1:])))
        ungated = np.full((n, 1), -np.inf, np.float32)
        return self.heads(no_memory, feats, (corners, labels), None, False, ungated).low
