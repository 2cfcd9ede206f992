"""Mask post-processing on every device: hole filling, small-region removal, smoothing.

Connected components are computed on the CPU with OpenCV (8-connectivity everywhere, as both
references do); tensors come back on the input's device with the input's dtype.

- :func:`fill_holes` is SAM 2's video post-processor (``fill_holes_in_mask_scores``, which needs
  a CUDA extension in the reference): every 8-connected component of the background
  (``logits <= threshold``) whose pixel count is ``<= max_area`` gets the logit ``fill_value``.
  As in the reference, "hole" means any small background component, including one that touches
  the image border; nothing else changes.
- :func:`remove_small_regions` is segment-anything's AMG post-processor (strict ``< area_thresh``;
  in "islands" mode the largest island is kept when all of them are small).
- :func:`smooth_mask` is a morphological opening then closing with an elliptic kernel.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch

__all__ = ["small_components", "fill_holes", "remove_small_regions", "smooth_mask", "postprocess_masks"]


def small_components(binary: np.ndarray, max_area: int) -> np.ndarray:
    """(N, H, W) bool -> (N, H, W) bool: pixels of 8-connected True components of area <= max_area.

    All N masks are labelled in one OpenCV call, stacked vertically with a False row between
    them so that no component spans two masks.
    """
    n, h, w = binary.shape
    canvas = np.zeros((n, h + 1, w), dtype=np.uint8)
    canvas[:, :h] = binary
    canvas = canvas.reshape(n * (h + 1), w)  # (N * (H + 1), W)
    count, labels = cv2.connectedComponents(canvas, connectivity=8, ltype=cv2.CV_32S)
    small = np.bincount(labels.ravel(), minlength=count) <= max_area  # (count,) by label
    small[0] = False  # label 0 is everything that is not in `binary`
    return small[labels.reshape(n, h + 1, w)[:, :h]]  # (N, H, W), contiguous


def fill_holes(
    mask_logits: torch.Tensor,
    max_area: int,
    threshold: float = 0.0,
    fill_value: float = 0.1,
) -> torch.Tensor:
    """Set small background regions of mask logits (N, 1, H, W) or (N, H, W) to ``fill_value``.

    Same semantics as the reference's ``fill_holes_in_mask_scores(mask, max_area)`` (threshold 0,
    fill value 0.1): background = ``logits <= threshold``; its 8-connected components of at most
    ``max_area`` pixels, wherever they are, become ``fill_value``. NaN counts as foreground.
    """
    if not isinstance(mask_logits, torch.Tensor):
        raise ValueError(f"mask_logits must be a torch.Tensor, got {type(mask_logits).__name__}")
    shape = tuple(mask_logits.shape)
    if not (len(shape) == 3 or (len(shape) == 4 and shape[1] == 1)):
        raise ValueError(f"mask_logits must have shape (N, 1, H, W) or (N, H, W), got {shape}")
    if max_area < 0:
        raise ValueError(f"max_area must be >= 0, got {max_area}")
    if max_area == 0 or mask_logits.numel() == 0:
        return mask_logits
    background = (mask_logits <= threshold).reshape(-1, shape[-2], shape[-1])  # (N, H, W)
    small = small_components(background.cpu().numpy(), max_area)
    is_hole = torch.from_numpy(small).to(mask_logits.device).reshape(shape)
    return torch.where(is_hole, fill_value, mask_logits)


def _as_2d_bool(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {mask.shape}")
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1), got values other than 0 and 1")
        mask = mask.astype(bool)
    return mask


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: Literal["holes", "islands"]
) -> tuple[np.ndarray, bool]:
    """Fill holes or drop islands smaller than ``area_thresh`` pixels (8-connectivity).

    Returns ``(mask, changed)``, as segment-anything's ``remove_small_regions``: "holes" turns
    background components of area < ``area_thresh`` into foreground (the border-touching
    background too); "islands" removes foreground components of area < ``area_thresh`` but keeps
    the largest one (the first in raster order on a tie) when all are small.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    mask = _as_2d_bool(mask)
    fill = mode == "holes"
    regions = (mask != fill).astype(np.uint8)  # the background for "holes", the mask for "islands"
    count, labels, stats, _ = cv2.connectedComponentsWithStats(regions, connectivity=8, ltype=cv2.CV_32S)
    areas = stats[1:, cv2.CC_STAT_AREA]  # (count - 1,) areas of labels 1..count-1
    small = areas < area_thresh
    if not small.any():
        return mask, False
    if fill:
        return mask | np.concatenate([[False], small])[labels], True
    keep = ~small
    if not keep.any():
        keep[int(np.argmax(areas))] = True
    return np.concatenate([[False], keep])[labels], True


def smooth_mask(mask: np.ndarray, kernel_size: int = 5) -> np.ndarray:
    """Morphological opening then closing with an elliptic ``kernel_size`` kernel (odd, >= 1).

    Opening removes specks and thin protrusions, closing fills narrow gaps; pixels outside the
    image count as neutral (the border neither erodes nor grows the mask).
    """
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd int >= 1, got {kernel_size!r}")
    mask = _as_2d_bool(mask)
    if kernel_size == 1:
        return mask.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_size, kernel_size))
    out = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    out = cv2.morphologyEx(out, cv2.MORPH_CLOSE, kernel)
    return out.astype(bool)


def postprocess_masks(
    masks: np.ndarray,
    min_hole_area: int = 0,
    min_island_area: int = 0,
    smooth_kernel: int = 0,
) -> np.ndarray:
    """Clean (N, H, W) boolean masks: smooth, then fill small holes, then drop small islands.

    ``smooth_kernel`` 0 (or 1) skips smoothing; an area of 0 skips that step. Holes and islands
    use :func:`remove_small_regions` (area strictly below the threshold is removed), after
    smoothing so that smoothing cannot bring small pieces back. Returns a new (N, H, W) bool array.
    """
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {masks.shape}")
    for name, value in (("min_hole_area", min_hole_area), ("min_island_area", min_island_area)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if smooth_kernel not in (0, 1):
        smooth_mask(np.zeros((1, 1), dtype=bool), smooth_kernel)  # validates the kernel size
    out = np.empty(masks.shape, dtype=bool)
    for i, mask in enumerate(masks):
        m = _as_2d_bool(mask, name=f"mask {i}")
        if smooth_kernel > 1:
            m = smooth_mask(m, smooth_kernel)
        if min_hole_area > 0:
            m, _ = remove_small_regions(m, min_hole_area, "holes")
        if min_island_area > 0:
            m, _ = remove_small_regions(m, min_island_area, "islands")
        out[i] = m
    return out
