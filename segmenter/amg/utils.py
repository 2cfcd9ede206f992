"""Building blocks of automatic mask generation: point grids, crops, scores, boxes, RLE.

Conventions follow Meta's AMG utilities: boxes are ``xyxy`` integer pixel boxes whose right /
bottom edge is the last foreground column / row (``[0, 0, 0, 0]`` for an empty mask);
uncompressed RLE is ``{"size": [h, w], "counts": [...]}`` over the column-major (Fortran)
flattened mask, starting with a run of zeros (possibly empty). :func:`mask_to_rle` makes it from
torch masks (the output format of ``output_mode="uncompressed_rle"``); decoding, areas and COCO
compression go through the project's one codec, :mod:`gsam_runtime.rle`. Everything here works on
whatever device its tensors live on. Box areas and NMS are ``torchvision.ops``' (``box_area``,
``batched_nms``), which the reference uses too.
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any

import numpy as np
import torch

from gsam_runtime.rle import compress_rle, decode_rle, rle_area

__all__ = [
    "build_point_grid",
    "build_all_layer_point_grids",
    "generate_crop_boxes",
    "stability_score",
    "batched_mask_to_box",
    "logits_to_box",
    "is_box_near_crop_edge",
    "uncrop_boxes_xyxy",
    "uncrop_points",
    "uncrop_masks",
    "box_xyxy_to_xywh",
    "mask_to_rle",
    "rle_to_mask",
    "area_from_rle",
    "coco_encode_rle",
]


# ---------------------------------------------------------------------------------- grids, crops
def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) points (x, y) at the centres of an n x n grid of cells over [0, 1]^2, row by row."""
    if n_per_side < 1:
        raise ValueError(f"a point grid needs at least 1 point per side, got {n_per_side}")
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs, ys = np.meshgrid(side, side)  # (n, n) each; x varies along a row
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has ``int(n_per_side / scale_per_layer**i)`` points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (xyxy) and their layer indices: the whole image, then (2^(i+1))^2 crops per layer."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    for i_layer in range(n_layers):
        n_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_side))
        crop_w = int(math.ceil((overlap * (n_side - 1) + im_w) / n_side))
        crop_h = int(math.ceil((overlap * (n_side - 1) + im_h) / n_side))
        x0s = [int((crop_w - overlap) * i) for i in range(n_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_side)]
        for x0, y0 in product(x0s, y0s):  # x outer, y inner
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i_layer + 1)
    return boxes, layers


# ---------------------------------------------------------------------------------- scores, boxes
def stability_score(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks thresholded at ``mask_threshold +/- offset``: (..., H, W) -> (...) float32.

    The high-threshold mask lies inside the low-threshold one, so IoU = |high| / |low|
    (NaN when both are empty, as in the reference).
    """
    row_dtype = torch.int16 if logits.shape[-1] < 2**15 else torch.int32  # per-row counts, then totals

    def count(t: float) -> torch.Tensor:
        return (logits > t).sum(dim=-1, dtype=row_dtype).sum(dim=-1, dtype=torch.int32)

    return count(mask_threshold + offset) / count(mask_threshold - offset)


def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes (int64) around boolean masks (..., H, W) -> (..., 4); empty mask -> zeros."""
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, dtype=torch.int64, device=masks.device)
    return _box_from_profiles(masks.any(dim=-1), masks.any(dim=-2))


def logits_to_box(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """``batched_mask_to_box(logits > threshold)`` without materialising the masks (max > t == any(> t))."""
    if logits.numel() == 0:
        return torch.zeros(*logits.shape[:-2], 4, dtype=torch.int64, device=logits.device)
    return _box_from_profiles(logits.amax(dim=-1) > threshold, logits.amax(dim=-2) > threshold)


def _box_from_profiles(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Occupied rows (..., H) and columns (..., W) -> (..., 4) xyxy, zeros where nothing is occupied."""
    h, w = rows.shape[-1], cols.shape[-1]
    # argmax returns the first maximum: first occupied row/column, and from the flipped side the last
    top = rows.to(torch.uint8).argmax(dim=-1)
    bottom = h - 1 - rows.flip(-1).to(torch.uint8).argmax(dim=-1)
    left = cols.to(torch.uint8).argmax(dim=-1)
    right = w - 1 - cols.flip(-1).to(torch.uint8).argmax(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    return boxes * rows.any(dim=-1, keepdim=True)


def is_box_near_crop_edge(
    boxes: torch.Tensor, crop_box: list[int], orig_box: list[int], atol: float = 20.0
) -> torch.Tensor:
    """(N,) True where a crop-frame box touches (within ``atol``) a crop edge that is not an image edge."""
    crop = torch.as_tensor(crop_box, dtype=torch.float32, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float32, device=boxes.device)
    boxes = uncrop_boxes_xyxy(boxes, crop_box).float()
    near_crop = torch.isclose(boxes, crop[None], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, orig[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    """Shift (..., 4) crop-frame boxes to image coordinates."""
    x0, y0 = crop_box[:2]
    return boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)


def uncrop_points(points: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    """Shift (..., 2) crop-frame points to image coordinates."""
    x0, y0 = crop_box[:2]
    return points + torch.tensor([x0, y0], device=points.device)


def uncrop_masks(masks: torch.Tensor, crop_box: list[int], orig_h: int, orig_w: int) -> torch.Tensor:
    """Zero-pad (N, h, w) crop masks to (N, orig_h, orig_w) at the crop's position."""
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
        return masks
    pad = (x0, orig_w - x1, y0, orig_h - y1)  # left, right, top, bottom
    return torch.nn.functional.pad(masks, pad, value=0)


def box_xyxy_to_xywh(box: Any) -> Any:
    """One xyxy box (array / tensor / list of 4) -> xywh of the same kind."""
    x0, y0, x1, y1 = box
    out = [x0, y0, x1 - x0, y1 - y0]
    if isinstance(box, torch.Tensor):
        return torch.stack(out)
    if isinstance(box, np.ndarray):
        return np.array(out, dtype=box.dtype)
    return out


# ---------------------------------------------------------------------------------- RLE
def mask_to_rle(masks: torch.Tensor) -> list[dict[str, Any]]:
    """(N, H, W) bool masks -> uncompressed RLEs (one device->host transfer for the whole batch)."""
    n, h, w = masks.shape
    if n == 0:
        return []
    flat = masks.transpose(1, 2).reshape(n, h * w)  # column-major per mask, (N, H*W)
    changes = (flat[:, 1:] != flat[:, :-1]).nonzero()  # (K, 2) rows sorted, then positions
    first = flat[:, 0].cpu().numpy()
    changes = changes.cpu().numpy()
    per_mask = np.bincount(changes[:, 0], minlength=n)
    out = []
    for i, pos in enumerate(np.split(changes[:, 1] + 1, np.cumsum(per_mask)[:-1])):
        bounds = np.concatenate([[0], pos, [h * w]])
        counts = np.diff(bounds).tolist()
        if first[i]:
            counts.insert(0, 0)
        out.append({"size": [h, w], "counts": counts})
    return out


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Uncompressed RLE -> (H, W) bool mask (C-contiguous); decoded by :func:`gsam_runtime.rle.decode_rle`."""
    return np.ascontiguousarray(decode_rle(rle))


def area_from_rle(rle: dict[str, Any]) -> int:
    """Number of foreground pixels of an RLE, uncompressed or COCO-compressed (:func:`gsam_runtime.rle.rle_area`)."""
    return rle_area(rle)


def coco_encode_rle(uncompressed_rle: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE -> COCO compressed RLE with a ``str`` counts field (:func:`gsam_runtime.rle.compress_rle`)."""
    return compress_rle(uncompressed_rle)
