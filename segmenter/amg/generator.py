"""Automatic mask generation: prompt a grid of points, keep the good, distinct masks.

Same parameters, filters and output records as the official ``SAM2AutomaticMaskGenerator``
(and SAM 1's ``SamAutomaticMaskGenerator``), computed with less work:

* each crop is embedded once; the grid is decoded ``points_per_batch`` points at a time and
  only low-resolution logits leave the decoder;
* the predicted-IoU filter runs on those low-res outputs; only survivors are upscaled, in
  bounded chunks, to get the (full-resolution, as in the reference) stability score, box and
  crop-edge test; full-resolution logits are never kept;
* masks are materialised (upscaled again, thresholded, encoded) only for the masks that
  survive the per-crop NMS; everything stays on the model's device until then.

``min_mask_region_area`` follows SAM 1 on every device: holes and islands smaller than the area
are removed from the final masks, boxes are recomputed and NMS prefers unchanged masks. (The
SAM 2 reference instead hands the value to its predictor's CUDA-only hole filling, a no-op
on CPU/MPS, and never removes islands from AMG output.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms, box_area

from segmenter.amg.utils import (
    area_from_rle,
    batched_mask_to_box,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    coco_encode_rle,
    generate_crop_boxes,
    is_box_near_crop_edge,
    logits_to_box,
    mask_to_rle,
    rle_to_mask,
    stability_score,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from segmenter.image.predictor import ImagePredictor
from segmenter.postprocess import remove_small_regions
from segmenter.image.transforms import as_rgb_array
from segmenter.modeling.interface import LOW_RES_CLAMP, SegmentationModel

__all__ = ["AutomaticMaskGenerator"]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
CHUNK_PIXELS = 1 << 20  # full-resolution logits processed at once (4 MiB of float32: cache- and allocator-friendly)


@dataclass
class _Candidates:
    """Masks of one crop that passed the filters so far (tensors on the model's device)."""

    low_res: torch.Tensor  # (N, h, w) logits
    iou: torch.Tensor  # (N,) predicted IoU
    stability: torch.Tensor  # (N,)
    point_idx: torch.Tensor  # (N,) index into the crop's point grid
    boxes: torch.Tensor  # (N, 4) int64 xyxy in the crop frame

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return (self.low_res, self.iou, self.stability, self.point_idx, self.boxes)

    def select(self, idx: torch.Tensor) -> _Candidates:
        return _Candidates(*(t[idx] for t in self._fields()))

    @staticmethod
    def cat(parts: list[_Candidates]) -> _Candidates:
        return _Candidates(*(torch.cat(ts) for ts in zip(*(p._fields() for p in parts))))


@dataclass
class _Masks:
    """Final masks (host side) in original-image coordinates."""

    segmentations: list[Any]  # (H, W) bool arrays or uncompressed RLEs
    boxes: torch.Tensor  # (K, 4) int64 xyxy
    iou: torch.Tensor  # (K,)
    stability: torch.Tensor  # (K,)
    points: torch.Tensor  # (K, 2)
    crop_boxes: torch.Tensor  # (K, 4) int64 xyxy

    def select(self, idx: torch.Tensor) -> _Masks:
        idx = idx.cpu()
        tensors = (self.boxes, self.iou, self.stability, self.points, self.crop_boxes)
        return _Masks([self.segmentations[i] for i in idx.tolist()], *(t[idx] for t in tensors))

    @staticmethod
    def cat(parts: list[_Masks]) -> _Masks:
        segs = [s for p in parts for s in p.segmentations]
        fields = zip(*((p.boxes, p.iou, p.stability, p.points, p.crop_boxes) for p in parts))
        return _Masks(segs, *(torch.cat(ts) for ts in fields))


class AutomaticMaskGenerator:
    """Segment everything in an image by prompting a point grid (SAM 2 and SAM 1 models).

    Arguments are those of the official ``SAM2AutomaticMaskGenerator``; ``generate(image)``
    returns its records: ``segmentation`` ((H, W) bool array, uncompressed RLE or COCO RLE
    per ``output_mode``), ``area``, ``bbox`` (XYWH), ``predicted_iou``, ``point_coords``
    ([[x, y]]), ``stability_score`` and ``crop_box`` (XYWH) — ready for
    ``sv.Detections.from_sam``.
    """

    def __init__(
        self,
        model: SegmentationModel | ImagePredictor,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
    ) -> None:
        _check_int("points_per_batch", points_per_batch, 1)
        _check_int("crop_n_layers", crop_n_layers, 0)
        _check_int("crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1)
        for name, v in (("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        for name, v in (
            ("pred_iou_thresh", pred_iou_thresh),
            ("stability_score_thresh", stability_score_thresh),
            ("stability_score_offset", stability_score_offset),
            ("mask_threshold", mask_threshold),
        ):
            if not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v}")
        if not 0.0 <= crop_overlap_ratio < 1.0:
            raise ValueError(f"crop_overlap_ratio must be in [0, 1), got {crop_overlap_ratio}")
        if min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {min_mask_region_area}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        self.point_grids = _point_grids(points_per_side, point_grids, crop_n_layers, crop_n_points_downscale_factor)

        self.predictor = model if isinstance(model, ImagePredictor) else ImagePredictor(model)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.mask_threshold = float(mask_threshold)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.use_m2m = bool(use_m2m)
        self.multimask_output = bool(multimask_output)
        self._group = 1  # masks upscaled per interpolation channel dimension (set per batch)
        # the references differ in number types: SAM 2 returns float32 points and float boxes,
        # SAM 1 float64 points and integer boxes
        self._sam1_style = self.predictor.model.output_style.amg_int_boxes

    @classmethod
    def from_pretrained(
        cls, model_id: str, device: Any = None, image_size: int | None = None, **kwargs: Any
    ) -> AutomaticMaskGenerator:
        """Load a model by hub id or local checkpoint (see :func:`segmenter.from_pretrained`)."""
        from segmenter.build import from_pretrained

        return cls(from_pretrained(model_id, device=device, image_size=image_size), **kwargs)

    # ------------------------------------------------------------------ public
    @torch.inference_mode()
    def generate(self, image: np.ndarray | Any) -> list[dict[str, Any]]:
        """Masks for an RGB image ((H, W, 3) uint8 array or PIL image), as a list of records."""
        image = as_rgb_array(image)
        orig_hw = image.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes(orig_hw, self.crop_n_layers, self.crop_overlap_ratio)
        try:
            parts = [self._process_crop(image, box, layer, orig_hw) for box, layer in zip(crop_boxes, layer_idxs)]
        finally:
            self.predictor.reset_predictor()
        masks = _Masks.cat(parts)
        if len(crop_boxes) > 1 and len(masks.segmentations) > 0:
            # between crops, prefer masks from smaller crops
            scores = 1 / box_area(masks.crop_boxes)
            keep = batched_nms(masks.boxes.float(), scores, torch.zeros_like(scores), self.crop_nms_thresh)
            masks = masks.select(keep)
        if self.min_mask_region_area > 0:
            masks = self._remove_small_regions(masks, max(self.box_nms_thresh, self.crop_nms_thresh))
        return self._records(masks)

    # ------------------------------------------------------------------ one crop
    def _process_crop(
        self, image: np.ndarray, crop_box: list[int], layer_idx: int, orig_hw: tuple[int, int]
    ) -> _Masks:
        x0, y0, x1, y1 = crop_box
        self.predictor.set_image(image[y0:y1, x0:x1])
        crop_h, crop_w = y1 - y0, x1 - x0
        points = self.point_grids[layer_idx] * np.array([[crop_w, crop_h]])  # (P, 2) float64 crop pixels

        parts = []
        for start in range(0, len(points), self.points_per_batch):
            part = self._process_batch(points[start : start + self.points_per_batch], start, crop_box, orig_hw)
            if part is not None:
                parts.append(part)
        if not parts:
            return self._empty_masks()
        cand = _Candidates.cat(parts)
        keep = batched_nms(cand.boxes.float(), cand.iou, torch.zeros_like(cand.iou), self.box_nms_thresh)
        cand = cand.select(keep)

        point_dtype = torch.float64 if self._sam1_style else torch.float32
        crop_points = torch.as_tensor(points, dtype=point_dtype)[cand.point_idx.cpu()]
        n = len(keep)
        return _Masks(
            segmentations=self._materialise(cand.low_res, crop_box, orig_hw),
            boxes=uncrop_boxes_xyxy(cand.boxes, crop_box).cpu(),
            iou=cand.iou.cpu(),
            stability=cand.stability.cpu(),
            points=uncrop_points(crop_points, crop_box),
            crop_boxes=torch.tensor([crop_box], dtype=torch.int64).expand(n, 4),
        )

    def _process_batch(
        self, points: np.ndarray, start: int, crop_box: list[int], orig_hw: tuple[int, int]
    ) -> _Candidates | None:
        dev = self.predictor.device
        coords = torch.as_tensor(points, dtype=torch.float32, device=dev)  # (P, 2)
        labels = torch.ones(len(coords), 1, dtype=torch.int32, device=dev)
        low, iou = self.predictor.predict_low_res(coords[:, None], labels, multimask_output=self.multimask_output)
        n_out = low.shape[1]
        low, iou = low.flatten(0, 1), iou.flatten(0, 1)  # (P*C, h, w), (P*C,)
        point_idx = torch.arange(start, start + len(coords), device=dev).repeat_interleave(n_out)
        if self.use_m2m:
            low, iou = self._refine(coords.repeat_interleave(n_out, dim=0), low)
        if self.pred_iou_thresh > 0.0:
            keep = iou > self.pred_iou_thresh
            low, iou, point_idx = low[keep], iou[keep], point_idx[keep]
        if len(iou) == 0:
            return None

        stab, boxes = [], []
        crop_hw = (crop_box[3] - crop_box[1], crop_box[2] - crop_box[0])
        self._group = 1 if self.use_m2m else n_out  # masks the reference upscales per call channel
        for chunk in low.split(_chunk_len(crop_hw, self._group)):
            logits = self._upscale(chunk, self._group)  # (n, crop_h, crop_w)
            stab.append(stability_score(logits, self.mask_threshold, self.stability_score_offset))
            boxes.append(logits_to_box(logits, self.mask_threshold))
        cand = _Candidates(low, iou, torch.cat(stab), point_idx, torch.cat(boxes))
        keep = torch.ones_like(cand.iou, dtype=torch.bool)
        if self.stability_score_thresh > 0.0:
            keep &= cand.stability >= self.stability_score_thresh
        keep &= ~is_box_near_crop_edge(cand.boxes, crop_box, [0, 0, orig_hw[1], orig_hw[0]])
        return cand.select(keep)

    def _refine(self, coords: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask-to-mask step: each mask's own point again, with its low-res logits as mask prompt."""
        labels = torch.ones(len(coords), 1, dtype=torch.int32, device=coords.device)
        lows, ious = [], []
        for s in range(0, len(coords), self.points_per_batch):
            e = s + self.points_per_batch
            mask_in = low[s:e, None].clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)  # (n, 1, h, w)
            out_low, out_iou = self.predictor.predict_low_res(
                coords[s:e, None], labels[s:e], mask_input=mask_in, multimask_output=False
            )
            lows.append(out_low[:, 0])
            ious.append(out_iou[:, 0])
        return torch.cat(lows), torch.cat(ious)

    def _materialise(self, low_res: torch.Tensor, crop_box: list[int], orig_hw: tuple[int, int]) -> list[Any]:
        """Binary masks in the original image frame: numpy arrays, or RLEs for the RLE output modes."""
        out: list[Any] = []
        for chunk in low_res.split(_chunk_len(orig_hw, self._group)):
            masks = self._upscale(chunk, self._group) > self.mask_threshold
            masks = uncrop_masks(masks, crop_box, *orig_hw)  # (n, H, W)
            if self.output_mode == "binary_mask":
                out.extend(masks.cpu().numpy())
            else:
                out.extend(mask_to_rle(masks))
        return out

    def _upscale(self, low: torch.Tensor, group: int) -> torch.Tensor:
        """Low-res logits (n, h, w) -> (n, crop_h, crop_w), interpolated ``group`` masks per call
        channel dimension: the reference upscales each point's masks together, and the bilinear
        kernel's rounding depends on the channel count (not on the neighbours' values)."""
        n = len(low)
        pad = -n % group
        if pad:
            low = torch.cat([low, low[-1:].expand(pad, -1, -1)])
        out = self.predictor.upscale_logits(low.view(-1, group, *low.shape[-2:]))  # (n/g, g, H, W)
        return out.flatten(0, 1)[:n]

    def _empty_masks(self) -> _Masks:
        point_dtype = torch.float64 if self._sam1_style else torch.float32
        z = torch.zeros(0, 4, dtype=torch.int64)
        return _Masks([], z, torch.zeros(0), torch.zeros(0), torch.zeros(0, 2, dtype=point_dtype), z)

    # ------------------------------------------------------------------ post-processing and output
    def _remove_small_regions(self, masks: _Masks, nms_thresh: float) -> _Masks:
        """SAM 1's post-processing: fill small holes, drop small islands, re-box, NMS preferring unchanged."""
        if not masks.segmentations:
            return masks
        binary = self.output_mode == "binary_mask"
        new_masks, scores = [], []
        for seg in masks.segmentations:
            mask = seg if binary else rle_to_mask(seg)
            mask, holes_changed = remove_small_regions(mask, self.min_mask_region_area, mode="holes")
            mask, islands_changed = remove_small_regions(mask, self.min_mask_region_area, mode="islands")
            new_masks.append(mask)
            scores.append(0.0 if (holes_changed or islands_changed) else 1.0)
        boxes = torch.stack([batched_mask_to_box(torch.from_numpy(np.asarray(m, dtype=bool))) for m in new_masks])
        score_t = torch.tensor(scores)
        keep = batched_nms(boxes.float(), score_t, torch.zeros_like(score_t), nms_thresh)
        segs, new_boxes = list(masks.segmentations), masks.boxes.clone()
        for i in keep.tolist():
            if scores[i] == 0.0:
                m = np.asarray(new_masks[i], dtype=bool)
                segs[i] = m if binary else mask_to_rle(torch.from_numpy(m)[None])[0]
                new_boxes[i] = boxes[i]
        updated = _Masks(segs, new_boxes, masks.iou, masks.stability, masks.points, masks.crop_boxes)
        return updated.select(keep)

    def _records(self, masks: _Masks) -> list[dict[str, Any]]:
        num = (lambda t: t.tolist()) if self._sam1_style else (lambda t: t.float().tolist())
        records = []
        for i, seg in enumerate(masks.segmentations):
            if self.output_mode == "binary_mask":
                area, segmentation = int(np.count_nonzero(seg)), seg
            else:
                segmentation = coco_encode_rle(seg) if self.output_mode == "coco_rle" else seg
                area = area_from_rle(segmentation)
            records.append(
                {
                    "segmentation": segmentation,
                    "area": area,
                    "bbox": num(box_xyxy_to_xywh(masks.boxes[i])),
                    "predicted_iou": masks.iou[i].item(),
                    "point_coords": [masks.points[i].tolist()],
                    "stability_score": masks.stability[i].item(),
                    "crop_box": num(box_xyxy_to_xywh(masks.crop_boxes[i])),
                }
            )
        return records


# ---------------------------------------------------------------------------------- helpers
def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _point_grids(
    points_per_side: int | None, point_grids: list[np.ndarray] | None, n_layers: int, downscale: int
) -> list[np.ndarray]:
    if (points_per_side is None) == (point_grids is None):
        raise ValueError("give exactly one of points_per_side and point_grids")
    if points_per_side is not None:
        _check_int("points_per_side", points_per_side, 1)
        for i in range(n_layers + 1):
            if int(points_per_side / downscale**i) < 1:
                raise ValueError(
                    f"crop layer {i} gets no points: points_per_side={points_per_side} / "
                    f"crop_n_points_downscale_factor**{i} < 1"
                )
        return build_all_layer_point_grids(points_per_side, n_layers, downscale)
    if len(point_grids) < n_layers + 1:
        raise ValueError(f"point_grids has {len(point_grids)} grids; crop_n_layers={n_layers} needs {n_layers + 1}")
    grids = []
    for i, g in enumerate(point_grids):
        g = np.asarray(g, dtype=np.float64)
        if g.ndim != 2 or g.shape[1] != 2 or len(g) == 0:
            raise ValueError(f"point_grids[{i}] must be a non-empty (N, 2) array, got shape {g.shape}")
        if not np.isfinite(g).all() or g.min() < 0 or g.max() > 1:
            raise ValueError(f"point_grids[{i}] must hold normalised (x, y) points in [0, 1]")
        grids.append(g)
    return grids


def _chunk_len(hw: tuple[int, int], group: int = 1) -> int:
    """Masks per post-processing chunk: about CHUNK_PIXELS, a whole number of groups."""
    return group * max(1, CHUNK_PIXELS // (group * hw[0] * hw[1]))

