"""Compact masks: ``sv.CompactMask`` (crop + RLE) instead of dense ``(N, H, W)`` bool stacks.

A large image with many objects holds one full-frame mask per object when dense (a 4096 x 4096
image with 200 objects: 3.4 GB). :class:`Pipeline` builds compact masks one mask at a time
(:class:`CompactMaskBuilder`): each full-frame mask is thresholded, post-processed, cropped to
its tight pixel box and run-length encoded before the next is made, so at most one full-frame
mask is alive. The crop is the mask's own tight box (not the detector's box, which a mask may
overflow), so a compact mask equals its dense mask pixel for pixel; an empty mask is a 1 x 1
all-False crop at the origin. A mask segmented in a window (:mod:`grounded_sam.pipeline.windows`)
is encoded from the window's crop (:meth:`CompactMaskBuilder.add_crop`), so no full-frame mask is made
at all and memory follows the objects.

``compact``: ``True`` / ``False``, or ``"auto"``: compact when the image has more than
:data:`COMPACT_AUTO_PIXELS` pixels.
"""

from __future__ import annotations

import numpy as np
import supervision as sv

__all__ = ["COMPACT_AUTO_PIXELS", "CompactMaskBuilder", "check_compact", "use_compact", "empty_compact"]

COMPACT_AUTO_PIXELS = 16_000_000  # "auto": compact above 16 MP (e.g. 4096 x 4096)


def check_compact(compact: bool | str) -> bool | str:
    """``compact`` checked: ``True``, ``False`` or ``"auto"``."""
    if compact == "auto" or isinstance(compact, bool):
        return compact
    raise ValueError(f"compact must be True, False or 'auto', got {compact!r}")


def use_compact(compact: bool | str, hw: tuple[int, int]) -> bool:
    """Whether an ``(H, W)`` image's masks are compact under the ``compact`` setting."""
    if check_compact(compact) == "auto":
        return int(hw[0]) * int(hw[1]) > COMPACT_AUTO_PIXELS
    return bool(compact)


def empty_compact(hw: tuple[int, int]) -> sv.CompactMask:
    """No masks of an ``(H, W)`` image."""
    none = np.empty((0, 2), dtype=np.int32)
    return sv.CompactMask([], none, none.copy(), (int(hw[0]), int(hw[1])))


def _tight_xyxy(mask: np.ndarray) -> np.ndarray:  # (1, 4) inclusive; (x2 < x1) for an empty mask
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if len(cols) == 0:
        return np.array([[0, 0, -1, -1]], dtype=np.int64)
    return np.array([[cols[0], rows[0], cols[-1], rows[-1]]], dtype=np.int64)


class CompactMaskBuilder:
    """Collects ``(H, W)`` bool masks one at a time as crop RLEs; :meth:`build` gives the ``sv.CompactMask``."""

    def __init__(self, hw: tuple[int, int]) -> None:
        self.hw = (int(hw[0]), int(hw[1]))
        self._parts: list[sv.CompactMask] = []

    def add(self, mask: np.ndarray) -> None:
        """One ``(H, W)`` bool mask (not kept: only its crop's RLE is)."""
        if mask.shape != self.hw:
            raise ValueError(f"mask is {mask.shape} (H, W), expected {self.hw}")
        self._parts.append(sv.CompactMask.from_dense(mask[None], _tight_xyxy(mask), self.hw))

    def add_crop(self, crop: np.ndarray, x0: int, y0: int) -> None:
        """One mask given as an ``(h, w)`` bool crop whose top-left pixel is ``(x0, y0)`` of the image,
        the rest of the frame False (a window's mask): encoded from the crop, no full frame is made."""
        h, w = crop.shape
        if x0 < 0 or y0 < 0 or y0 + h > self.hw[0] or x0 + w > self.hw[1]:
            raise ValueError(f"a {crop.shape} crop at x={x0}, y={y0} does not fit the {self.hw} (H, W) image")
        tight = _tight_xyxy(crop)
        if tight[0, 2] < tight[0, 0]:  # empty: a 1 x 1 crop at the origin, as from a full frame
            self._parts.append(sv.CompactMask.from_dense(np.zeros((1, 1, 1), bool), tight, self.hw))
            return
        part = sv.CompactMask.from_dense(crop[None], tight, crop.shape)
        self._parts.append(part.with_offset(int(x0), int(y0), self.hw))

    def build(self) -> sv.CompactMask:
        return sv.CompactMask.merge(self._parts) if self._parts else empty_compact(self.hw)

    @classmethod
    def from_dense(cls, masks: np.ndarray) -> sv.CompactMask:
        """An ``(N, H, W)`` bool stack as a compact mask (each mask cropped to its tight box)."""
        builder = cls(masks.shape[1:])
        for m in masks:
            builder.add(m)
        return builder.build()
