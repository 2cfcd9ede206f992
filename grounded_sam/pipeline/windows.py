"""Windows for masks at native resolution: which part of a large image each box is segmented in.

SAM sees its input at ``side`` x ``side`` pixels (1024 for the released models). On the whole of a
6000 x 4000 image every object shrinks about six times and its mask comes back a few pixels wide.
With windows, each box is segmented from the embedding of a ``side`` x ``side`` window of the
original pixels around it (no resize), and its mask is placed back at the window's offset.

:func:`plan_windows` groups the boxes so that each window is encoded once for all of its boxes.
What it guarantees, for boxes clipped to the image:

- every box is assigned to exactly one window;
- the box lies inside its window with a margin of at least ``margin`` x the window's side on each
  side, except on a side where the window edge is the image's edge (nothing lies beyond it); so a
  mask that spills a little over its box (SAM's masks often do) is not cut by the window edge;
- a *native* window is ``side`` x ``side`` pixels of the image (``min(side, H)`` x ``min(side, W)``
  where the image is smaller), shifted inside the image at its borders, never padded;
- a box too large for a native window with that margin gets a *fallback* window of its own: a
  square of ``ceil((box side + 2) / (1 - 2 margin))`` pixels centred on it (clipped to the image and
  shifted inside it), which the segmenter downscales to its input, so the same relative margin
  holds.

Grouping is greedy (not a minimum cover): the top-most remaining box fixes the window's top, the
left-most remaining box that fits that row of windows fixes its left, and every remaining box that
fits goes in. Each pass assigns at least one box, so there are at most as many windows as boxes.

Everything here is geometry on ``xyxy`` arrays; :class:`grounded_sam.pipeline.core.Pipeline` runs the
segmenter. ``windows``: ``True``, ``False``, or ``"auto"`` (on for images the detector saw in several tiles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["WINDOW_MARGIN", "Window", "check_windows", "context_pad", "fits", "plan_windows", "use_windows",
           "windows_fingerprint"]

WINDOW_MARGIN = 0.125  # the least room between a box and its window's edges, as a fraction of the window's side


@dataclass(frozen=True, eq=False)
class Window:
    """One window: ``xyxy`` (x0, y0, x1, y1) in image pixels, ``boxes`` (K,) the indices of the
    boxes segmented in it, ``native``: 1:1 pixels (False: a downscaled fallback for a large box)."""

    xyxy: tuple[int, int, int, int]
    boxes: np.ndarray
    native: bool


def check_windows(windows: bool | str) -> bool | str:
    """``windows`` checked: ``True``, ``False`` or ``"auto"``."""
    if windows == "auto" or isinstance(windows, bool):
        return windows
    raise ValueError(f"windows must be True, False or 'auto' (on where the image is tiled), got {windows!r}")


def use_windows(windows: bool | str, hw: tuple[int, int], side: int, tiled: bool) -> bool:
    """Whether an ``(H, W)`` image is segmented in windows: it is larger than one ``side`` window
    and ``windows`` is ``True``, or ``"auto"`` and the image was detected in several tiles."""
    if max(hw) <= side or check_windows(windows) is False:
        return False
    return windows is True or tiled


def windows_fingerprint(windows: bool | str, tiled: bool) -> dict[str, Any]:
    """The fingerprint entry of a pipeline's ``windows`` (``tiled``: it has tiling): ``{"windows":
    {"when": "always" | "tiled", "margin": ...}}`` when windows can be used, else ``{}`` (a pipeline
    that never uses them labels as one made before windows existed). The window's side is the
    segmenter's input size, already in the fingerprint."""
    if check_windows(windows) is False or (windows == "auto" and not tiled):
        return {}
    return {"windows": {"when": "always" if windows is True else "tiled", "margin": WINDOW_MARGIN}}


def fits(boxes: np.ndarray, window: np.ndarray, hw: tuple[int, int], margin_px: float) -> np.ndarray:
    """(N,) whether each (N, 4) box lies inside ``window`` (x0, y0, x1, y1) with ``margin_px`` on every
    side that is not the image's edge."""
    height, width = hw
    x0, y0, x1, y1 = (float(v) for v in window)
    left = (boxes[:, 0] - x0 >= margin_px) | ((x0 <= 0) & (boxes[:, 0] >= x0))
    top = (boxes[:, 1] - y0 >= margin_px) | ((y0 <= 0) & (boxes[:, 1] >= y0))
    right = (x1 - boxes[:, 2] >= margin_px) | ((x1 >= width) & (boxes[:, 2] <= x1))
    bottom = (y1 - boxes[:, 3] >= margin_px) | ((y1 >= height) & (boxes[:, 3] <= y1))
    return left & top & right & bottom


def plan_windows(boxes: np.ndarray, hw: tuple[int, int], side: int, margin: float = WINDOW_MARGIN) -> list[Window]:
    """The windows that segment (N, 4) ``xyxy`` boxes of an ``(H, W)`` image with a segmenter whose
    input is ``side`` pixels; the guarantees are in the module's docstring. Native windows come
    first (in the order they were made), then one fallback window per large box."""
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin is a fraction of the window in [0, 0.5), got {margin!r}")
    height, width = int(hw[0]), int(hw[1])
    xyxy = np.asarray(boxes, np.float64).reshape(-1, 4)
    xyxy = np.clip(xyxy, 0, [width, height, width, height])
    margin_px = margin * side
    win_w, win_h = min(side, width), min(side, height)

    def place(lo: float, extent: int, size: int) -> int:  # a window start at most `lo`, inside the image
        return int(min(max(math.floor(lo), 0), extent - size))

    def anchored(i: int) -> np.ndarray:  # the window whose top-left corner is box i's, less the margin
        x0, y0 = place(xyxy[i, 0] - margin_px, width, win_w), place(xyxy[i, 1] - margin_px, height, win_h)
        return np.array([x0, y0, x0 + win_w, y0 + win_h])

    native = np.array([bool(fits(xyxy[i : i + 1], anchored(i), hw, margin_px)[0]) for i in range(len(xyxy))], bool)
    left = np.flatnonzero(native)
    out: list[Window] = []
    while len(left):
        y0 = place(xyxy[left, 1].min() - margin_px, height, win_h)  # the top-most box fixes the row
        row = left[fits(np.c_[xyxy[left, 0], xyxy[left, 1], xyxy[left, 0], xyxy[left, 3]],
                        [0, y0, width, y0 + win_h], hw, margin_px)]  # those that fit the row vertically
        x0 = place(xyxy[row, 0].min() - margin_px, width, win_w)  # the left-most of them fixes the column
        window = np.array([x0, y0, x0 + win_w, y0 + win_h])
        inside = fits(xyxy[left], window, hw, margin_px)  # holds at least the row's left-most box
        out.append(Window(tuple(int(v) for v in window), left[inside], True))
        left = left[~inside]
    for i in np.flatnonzero(~native):
        size = math.ceil((float((xyxy[i, 2:] - xyxy[i, :2]).max()) + 2) / (1 - 2 * margin))  # + 2: whole pixels
        w, h = min(size, width), min(size, height)
        cx, cy = (xyxy[i, 0] + xyxy[i, 2]) / 2, (xyxy[i, 1] + xyxy[i, 3]) / 2
        x0, y0 = place(cx - w / 2, width, w), place(cy - h / 2, height, h)
        out.append(Window((x0, y0, x0 + w, y0 + h), np.array([i]), False))
    return out


def context_pad(window: tuple[int, int, int, int], hw: tuple[int, int], pad: int) -> tuple[int, int, int, int]:
    """How far (left, top, right, bottom) a window's mask can be padded with background up to ``pad``
    pixels without leaving the image: mask post-processing then sees the window's edge as the
    inside of the image it is, not as the image's border."""
    x0, y0, x1, y1 = window
    return min(pad, x0), min(pad, y0), min(pad, int(hw[1]) - x1), min(pad, int(hw[0]) - y1)
