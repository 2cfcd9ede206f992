"""Ontology semantics for detectors that return masks (SAM 3), on masks instead of boxes.

:func:`finalize_mask_detections` follows :func:`detectors.ontology_ops.finalize_detections`
step for step; where that function compares boxes, this one compares masks:

1. clip boxes to the image; drop boxes that are empty or not finite, and scores below the
   class's threshold (``ontology.threshold(name)``, else the detector's ``box_threshold``);
2. masks: the survivors' mask probabilities (low resolution) are upsampled bilinearly to the
   image and thresholded at ``mask_threshold`` (``prob > mask_threshold``), exactly as
   transformers' ``Sam3Processor.post_process_instance_segmentation`` does;
3. negative captions: a negative detection of class ``c`` removes every positive detection of
   class ``c`` whose **mask IoU** with it is above ``negative_iou``;
4. class-wise NMS on **mask IoU** (above ``nms_iou`` is a duplicate): a class's captions merge,
   the highest score wins and its caption is reported;
5. output sorted by confidence (stable), ``sv.Detections`` with ``mask`` ``(N, H, W)`` bool.

Mask IoU counts bits of packed masks (``np.packbits``, 8 pixels a byte), a few rows at a time:
ten 640x480 masks take ~2 ms on one CPU core, and temporary memory stays under ~64 MB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import supervision as sv

from detectors.ontology_ops import PromptTable, RawDetections, clip_boxes, empty_detections

if TYPE_CHECKING:
    import torch

__all__ = [
    "RawMaskDetections",
    "classwise_mask_nms",
    "finalize_mask_detections",
    "greedy_nms",
    "mask_iou",
    "negative_mask_suppression",
    "upsample_masks",
]

_BYTES_PER_CHUNK = 1 << 26  # temporary bytes of one block of pairwise ANDs
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    count = getattr(np, "bitwise_count", None)  # numpy >= 2.0
    return count(x) if count is not None else _POPCOUNT[x]


@dataclass
class RawMaskDetections:
    """One image's detections before ontology semantics, with low-resolution mask probabilities."""

    boxes: RawDetections  # xyxy original pixels, scores, prompt ids
    mask_probs: torch.Tensor  # (N, h, w) float32 in [0, 1], the model's resolution

    def __post_init__(self) -> None:
        if self.mask_probs.ndim != 3 or self.mask_probs.shape[0] != len(self.boxes):
            raise ValueError(
                f"mask_probs must be (N, h, w) with N = {len(self.boxes)}, got {tuple(self.mask_probs.shape)}"
            )

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def concat(cls, items: Sequence[RawMaskDetections]) -> RawMaskDetections:
        import torch

        if not items:
            raise ValueError("concat needs at least one item (its mask size)")
        return cls(
            RawDetections.concat([r.boxes for r in items]),
            torch.cat([r.mask_probs for r in items]),
        )


def upsample_masks(probs: torch.Tensor, size: tuple[int, int], threshold: float) -> torch.Tensor:
    """``(N, h, w)`` probabilities -> ``(N, H, W)`` bool: bilinear (no corner alignment), ``> threshold``.

    Done a few masks at a time (bilinear is per channel, so the result does not depend on it).
    """
    import torch
    import torch.nn.functional as F

    height, width = size
    out = torch.empty((len(probs), height, width), dtype=torch.bool, device=probs.device)
    step = max(1, (1 << 25) // max(1, height * width))
    for s in range(0, len(probs), step):
        chunk = probs[None, s : s + step].float()  # (1, n, h, w)
        up = F.interpolate(chunk, size=(height, width), mode="bilinear", align_corners=False)
        out[s : s + step] = up[0] > threshold  # (n, H, W)
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of bool masks ``(N, H, W)``, ``(M, H, W)`` (0 for an empty union)."""
    pa = np.packbits(np.asarray(a, dtype=bool).reshape(len(a), -1), axis=1)  # (N, ceil(HW / 8)) uint8
    pb = np.packbits(np.asarray(b, dtype=bool).reshape(len(b), -1), axis=1)  # (M, ceil(HW / 8))
    inter = np.zeros((len(a), len(b)), dtype=np.float64)
    rows = max(1, _BYTES_PER_CHUNK // max(1, len(b) * pa.shape[1]))
    for s in range(0, len(a), rows):
        both = pa[s : s + rows, None, :] & pb[None, :, :]  # (n, M, bytes)
        inter[s : s + rows] = _popcount(both).sum(-1, dtype=np.int64)
    area_a = _popcount(pa).sum(-1, dtype=np.int64)
    area_b = _popcount(pb).sum(-1, dtype=np.int64)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def greedy_nms(iou: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS over a precomputed IoU matrix; kept indices, highest score first (ties: input order)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    suppressed = np.zeros(len(order), dtype=bool)
    keep: list[int] = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= iou[i] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


def classwise_mask_nms(
    masks: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float | None
) -> np.ndarray:
    """NMS on mask IoU within each class; kept indices by score (ties keep input order)."""
    scores = np.asarray(scores, dtype=np.float64)
    if iou_threshold is None:
        return np.argsort(-scores, kind="stable").astype(np.int64)
    keep = [np.zeros(0, dtype=np.int64)]
    for c in np.unique(class_ids):
        idx = np.flatnonzero(class_ids == c)
        sub = masks[idx]
        keep.append(idx[greedy_nms(mask_iou(sub, sub), scores[idx], iou_threshold)])
    kept = np.sort(np.concatenate(keep))
    return kept[np.argsort(-scores[kept], kind="stable")]


def negative_mask_suppression(
    masks: np.ndarray, class_ids: np.ndarray, negative: np.ndarray, iou_threshold: float | None
) -> np.ndarray:
    """Which positive detections survive their class's negatives (mask IoU); negatives are ``False``."""
    negative = np.asarray(negative, dtype=bool)
    keep = ~negative
    if iou_threshold is None or not negative.any() or not keep.any():
        return keep
    pos, neg = np.flatnonzero(keep), np.flatnonzero(negative)
    iou = mask_iou(masks[pos], masks[neg])  # (P, N)
    same_class = class_ids[pos][:, None] == class_ids[neg][None, :]
    keep[pos[((iou > iou_threshold) & same_class).any(axis=1)]] = False
    return keep


def _empty(image_wh: tuple[int, int]) -> sv.Detections:
    det = empty_detections()
    det.mask = np.zeros((0, image_wh[1], image_wh[0]), dtype=bool)
    return det


def finalize_mask_detections(
    raw: RawMaskDetections,
    table: PromptTable,
    image_wh: tuple[int, int],
    *,
    box_threshold: float,
    mask_threshold: float = 0.5,
    nms_iou: float | None = 0.5,
    negative_iou: float | None = 0.5,
) -> sv.Detections:
    """Apply the ontology semantics (module docstring) to one image's raw detections with masks."""
    import torch

    width, height = image_wh
    pid = raw.boxes.prompt_ids
    if len(raw) == 0:
        return _empty(image_wh)
    if pid.min() < 0 or pid.max() >= len(table):
        raise ValueError(f"prompt ids out of range for a table of {len(table)} prompts")
    xyxy = clip_boxes(raw.boxes.xyxy, width, height)
    scores = raw.boxes.scores
    valid = np.isfinite(xyxy).all(axis=1) & (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    valid &= scores >= table.thresholds(box_threshold)[pid]
    idx = np.flatnonzero(valid)
    xyxy, scores, pid = xyxy[idx], scores[idx], pid[idx]
    probs = raw.mask_probs[torch.as_tensor(idx, device=raw.mask_probs.device)]
    masks = upsample_masks(probs, (height, width), mask_threshold).cpu().numpy()  # (N, H, W) bool

    class_ids = table.class_ids[pid]
    keep = np.flatnonzero(negative_mask_suppression(masks, class_ids, table.negative[pid], negative_iou))
    xyxy, scores, pid, class_ids = xyxy[keep], scores[keep], pid[keep], class_ids[keep]
    masks = masks[keep]

    order = classwise_mask_nms(masks, scores, class_ids, nms_iou)
    if len(order) == 0:
        return _empty(image_wh)
    xyxy, scores, pid, class_ids = xyxy[order], scores[order], pid[order], class_ids[order]
    return sv.Detections(
        xyxy=xyxy.astype(np.float32),
        mask=masks[order],
        confidence=scores.astype(np.float32),
        class_id=class_ids.astype(int),
        data={
            "class_name": np.array([table.class_names[i] for i in pid], dtype=str),
            "caption": np.array([table.captions[i] for i in pid], dtype=str),
            "has_score": np.ones(len(pid), dtype=bool),
        },
    )
