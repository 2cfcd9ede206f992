"""Masks as polygons: COCO polygons and YOLO-seg's one polygon per instance.

- :func:`mask_to_polygons` traces the outer boundary of every connected part with
  ``cv2.findContours`` (``RETR_EXTERNAL``), vertices on pixel centres. Polygons cannot carry
  holes, so holes are filled; parts whose contour has fewer than 3 vertices (single pixels,
  1-pixel lines) are dropped, and a mask with no usable contour becomes its tight box
  (pixel edges). Use RLE (:mod:`gsam_runtime.rle`) when the mask must survive exactly.
- :func:`merge_polygons` joins several parts into ONE closed polygon (what YOLO-seg needs) in
  the manner of Ultralytics' ``merge_multi_segment``: parts are chained (largest first, then
  always the nearest remaining part), consecutive parts are linked at their closest pair of
  vertices, and the outline walks out along each link and back, so every link is a zero-width
  seam that adds no area.
- :func:`rle_to_polygons` / :func:`rle_to_single_polygon` give the same polygons for an RLE from
  the crop of its tight box (grown by one pixel inside the frame), shifted into the frame: the
  full-frame mask is never decoded.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from gsam_runtime.rle import Rle, decode_rle_crop

__all__ = ["mask_to_polygons", "merge_polygons", "mask_to_single_polygon", "rle_to_polygons", "rle_to_single_polygon"]


def _tight_box_polygon(mask: np.ndarray) -> np.ndarray | None:  # (4, 2) on pixel edges
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def mask_to_polygons(mask: np.ndarray, min_area: float = 0.0) -> list[np.ndarray]:
    """Outer contours of a ``(H, W)`` mask as ``(K, 2)`` float ``x, y`` arrays (see module docs).

    ``min_area``: drop parts whose contour area (pixels) is below this. Empty mask -> ``[]``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    m = np.ascontiguousarray(mask.astype(np.uint8, copy=False))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = [
        c.reshape(-1, 2).astype(np.float64)
        for c in contours
        if len(c) >= 3 and (min_area <= 0 or cv2.contourArea(c) >= min_area)
    ]
    if not polys:
        box = _tight_box_polygon(mask)
        return [] if box is None else [box]
    return polys


def _closest_pair(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """Indices of the closest vertices between ``a`` (K, 2) and ``b`` (L, 2), and their distance."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(b).query(a)
    i = int(np.argmin(dist))
    return i, int(idx[i]), float(dist[i])


def _chain_order(parts: list[np.ndarray]) -> list[int]:
    areas = [abs(cv2.contourArea(p.astype(np.float32))) for p in parts]
    order = [int(np.argmax(areas))]  # first index wins ties
    remaining = [i for i in range(len(parts)) if i != order[0]]
    while remaining:
        last = parts[order[-1]]
        dists = [_closest_pair(last, parts[j])[2] for j in remaining]
        order.append(remaining.pop(int(np.argmin(dists))))
    return order


def merge_polygons(parts: list[np.ndarray]) -> np.ndarray:
    """Join polygon parts ``(K_i, 2)`` into one closed outline ``(M, 2)`` (see module docs)."""
    if not parts:
        raise ValueError("merge_polygons needs at least one polygon")
    if len(parts) == 1:
        return np.asarray(parts[0], dtype=np.float64)
    chain = [np.asarray(parts[i], dtype=np.float64) for i in _chain_order(parts)]
    entry = [0] * len(chain)  # vertex where the walk arrives on each part
    exit_ = [0] * len(chain)  # vertex where it leaves for the next part
    for i in range(len(chain) - 1):
        exit_[i], entry[i + 1], _ = _closest_pair(chain[i], chain[i + 1])
    entry[0] = exit_[0]
    rings = [np.roll(p, -entry[i], axis=0) for i, p in enumerate(chain)]
    cut = [(exit_[i] - entry[i]) % len(p) for i, p in enumerate(chain)]  # exit position in its ring
    pieces = []
    for i, ring in enumerate(rings):  # outward: each part from its entry to its exit
        if i == len(rings) - 1:
            pieces.append(np.concatenate([ring, ring[:1]]))  # the last part all the way round
        else:
            pieces.append(ring[: cut[i] + 1])
    for i in range(len(rings) - 2, -1, -1):  # back home: the rest of each ring
        pieces.append(np.concatenate([rings[i][cut[i] :], rings[i][:1]]))
    return np.concatenate(pieces)


def mask_to_single_polygon(
    mask: np.ndarray, multipart: Literal["merge", "largest"] = "merge", min_area: float = 0.0
) -> np.ndarray | None:
    """One ``(M, 2)`` polygon for a mask: parts merged or the largest kept; ``None`` if empty."""
    if multipart not in ("merge", "largest"):
        raise ValueError(f"multipart must be 'merge' or 'largest', got {multipart!r}")
    parts = mask_to_polygons(mask, min_area=min_area)
    if not parts:
        return None
    if multipart == "largest" or len(parts) == 1:
        return max(parts, key=lambda p: abs(cv2.contourArea(p.astype(np.float32))))
    return merge_polygons(parts)


def rle_to_polygons(rle: Rle, min_area: float = 0.0) -> list[np.ndarray]:
    """:func:`mask_to_polygons` of an RLE's mask, traced on its crop (module docs)."""
    crop, x, y = decode_rle_crop(rle, pad=1)  # the pad keeps contours off the crop's edges inside the frame
    if crop.size == 0:
        return []
    return [p + (x, y) for p in mask_to_polygons(crop, min_area=min_area)]


def rle_to_single_polygon(
    rle: Rle, multipart: Literal["merge", "largest"] = "merge", min_area: float = 0.0
) -> np.ndarray | None:
    """:func:`mask_to_single_polygon` of an RLE's mask, traced on its crop (module docs)."""
    crop, x, y = decode_rle_crop(rle, pad=1)
    if crop.size == 0:
        return mask_to_single_polygon(crop, multipart=multipart, min_area=min_area)  # checks multipart
    poly = mask_to_single_polygon(crop, multipart=multipart, min_area=min_area)
    return None if poly is None else poly + (x, y)
