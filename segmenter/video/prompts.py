"""Prompt and index checking for video tracking: user input -> model-input tensors.

The arithmetic is the reference video predictor's (``add_new_points_or_box`` /
``add_new_mask``), with clear errors for input it would silently misuse.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import count
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segmenter.image.transforms import check_boxes, check_points

__all__ = ["frame_index", "processing_order", "point_prompt", "box_prompt", "mask_prompt"]

BOX_LABELS = (2, 3)  # a box enters the model as its two corners with these labels


def frame_index(frame_idx: Any, num_frames: int | None, what: str = "the video") -> int:
    """A valid frame index (``num_frames`` None: no upper bound known)."""
    if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
        raise ValueError(f"frame_idx must be an int, got {type(frame_idx).__name__}")
    t = int(frame_idx)
    if t < 0 or (num_frames is not None and t >= num_frames):
        raise ValueError(f"frame index {t} is out of range ({what} has {num_frames} frames)")
    return t


def processing_order(
    start: int, max_frame_num_to_track: Any, num_frames: int | None, reverse: bool
) -> Iterable[int]:
    """Frames a propagation visits: ``start`` and up to ``max_frame_num_to_track`` more in the
    chosen direction, within the video (endless forward when its length is unknown)."""
    if max_frame_num_to_track is None:
        max_frame_num_to_track = num_frames
    elif isinstance(max_frame_num_to_track, bool) or not isinstance(max_frame_num_to_track, (int, np.integer)) or max_frame_num_to_track < 0:
        raise ValueError(f"max_frame_num_to_track must be an int >= 0, got {max_frame_num_to_track!r}")
    if reverse:
        end = 0 if max_frame_num_to_track is None else max(start - max_frame_num_to_track, 0)
        return range(start, end - 1, -1) if start > 0 else range(0)  # the reference skips start 0
    last = None if num_frames is None else num_frames - 1
    if max_frame_num_to_track is not None:
        last = start + max_frame_num_to_track if last is None else min(start + max_frame_num_to_track, last)
    return range(start, last + 1) if last is not None else count(start)


def point_prompt(
    points: Any,
    labels: Any,
    box: Any,
    normalize_coords: bool,
    video_hw: tuple[int, int],
    image_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points (N, 2) + labels (N,) and/or a box (4,) -> coords (1, M, 2) in model-input pixels
    and labels (1, M) int32, the box first as two corners labelled 2 and 3."""
    if points is None and box is None:
        raise ValueError("at least one of points or box must be provided as input")
    coords, lbls = check_points(points, labels)
    if coords is not None and coords.ndim == 3:
        if coords.shape[0] != 1:
            raise ValueError(f"points for one object must have shape (N, 2), got {coords.shape}")
        coords, lbls = coords[0], lbls[0]
    boxes = check_boxes(box, video_hw, normalized=not normalize_coords)
    if boxes is not None and boxes.shape[0] != 1:
        raise ValueError(f"give one box per object and call, got {boxes.shape[0]}")
    pts = torch.zeros(1, 0, 2) if coords is None else torch.from_numpy(coords)[None]
    lab = torch.zeros(1, 0, dtype=torch.int32) if lbls is None else torch.from_numpy(lbls)[None]
    if boxes is not None:
        pts = torch.cat([torch.from_numpy(boxes).reshape(1, 2, 2), pts], dim=1)
        lab = torch.cat([torch.tensor([BOX_LABELS], dtype=torch.int32), lab], dim=1)
    if normalize_coords:  # pixels -> [0, 1], dividing by (W, H) as the reference does
        pts = pts / torch.tensor([video_hw[1], video_hw[0]])
    return pts * image_size, lab


def box_prompt(boxes: Any, video_hw: tuple[int, int], image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (N, 4) xyxy in video pixels, one per object -> corners (N, 2, 2) in model-input
    pixels and labels (N, 2) int32 (2 and 3): :func:`point_prompt`'s arithmetic for each box."""
    checked = check_boxes(boxes, video_hw, normalized=False)
    if checked is None:
        raise ValueError("boxes must be an (N, 4) array of xyxy boxes, got None")
    corners = torch.from_numpy(checked).reshape(-1, 2, 2) / torch.tensor([video_hw[1], video_hw[0]])
    return corners * image_size, torch.tensor([BOX_LABELS], dtype=torch.int32).repeat(len(checked), 1)


def mask_prompt(mask: Any, video_hw: tuple[int, int], image_size: int, device: torch.device) -> torch.Tensor:
    """An (H, W) bool / 0-1 mask of the video's size -> (1, 1, S, S) float 0/1 on ``device``.

    Resized with antialiased bilinear interpolation and thresholded at 0.5 (reference).
    """
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.ndim != 2 or m.shape != tuple(video_hw):
        raise ValueError(f"mask must have the video's shape (H, W) = {tuple(video_hw)}, got {m.shape}")
    out = torch.from_numpy(m.astype(bool))[None, None].float().to(device)  # (1, 1, H, W)
    if out.shape[-2:] != (image_size, image_size):
        out = F.interpolate(out, (image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
        out = (out >= 0.5).float()
    return out
