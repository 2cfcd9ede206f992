"""Video prompts -> model inputs in numpy, for the ONNX Runtime video predictor (no torch).

The arithmetic of :mod:`segmenter.video.prompts` (clicks and boxes in video pixels, or [0, 1],
scaled to model-input pixels in float32; a box as two corners labelled 2 and 3, ahead of the
clicks; a mask prompt resized with antialiased bilinear interpolation and thresholded at 0.5),
with the input checks it needs here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segmenter.export.numpy_transforms import aa_bilinear_weights, coords_to_square_np

__all__ = ["BOX_LABELS", "box_prompt_np", "mask_prompt_np", "point_prompt_np"]

BOX_LABELS = (2, 3)  # a box enters the model as its two corners with these labels


def point_prompt_np(
    points: Any, labels: Any, box: Any, normalize_coords: bool, video_hw: tuple[int, int], image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 2) + labels (N,) and/or a box (4,) -> coords (1, M, 2) float32 in model-input
    pixels and labels (1, M) int64, the box first."""
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
        lab = np.concatenate([np.array(BOX_LABELS), lab])
    scaled = coords_to_square_np(coords, video_hw, image_size, normalized=not normalize_coords)
    return scaled[None].astype(np.float32), lab[None].astype(np.int64)


def box_prompt_np(boxes: Any, video_hw: tuple[int, int], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) xyxy in video pixels, one per object -> corners (N, 2, 2) float32 in model-input
    pixels and labels (N, 2) int64 (2 and 3)."""
    b = np.asarray(boxes, dtype=np.float32)
    if b.ndim == 1 and b.shape == (4,):
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4 or b.shape[0] == 0 or not np.isfinite(b).all():
        raise ValueError(f"boxes must be a non-empty (N, 4) array of finite xyxy boxes, got shape {np.shape(boxes)}")
    inverted = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if inverted.any():
        i = int(np.flatnonzero(inverted)[0])
        raise ValueError(f"box {i} {b[i].tolist()} is not xyxy (x0 <= x1 and y0 <= y1)")
    corners = coords_to_square_np(b.reshape(-1, 2, 2), video_hw, image_size, normalized=False)
    return corners.astype(np.float32), np.tile(np.array([BOX_LABELS], np.int64), (len(b), 1))


def mask_prompt_np(mask: Any, video_hw: tuple[int, int], image_size: int) -> np.ndarray:
    """An (H, W) bool / 0-1 mask of the video's size -> (1, 1, S, S) float32 0/1."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.shape != tuple(video_hw):
        raise ValueError(f"mask must have the video's shape (H, W) = {tuple(video_hw)}, got {m.shape}")
    out = m.astype(bool).astype(np.float32)  # (H, W)
    if out.shape != (image_size, image_size):
        wy = aa_bilinear_weights(out.shape[0], image_size)  # (S, H)
        wx = aa_bilinear_weights(out.shape[1], image_size)  # (S, W)
        out = (np.matmul(np.matmul(wy, out), wx.T) >= 0.5).astype(np.float32)
    return out[None, None]
