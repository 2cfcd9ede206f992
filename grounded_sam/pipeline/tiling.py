"""Tiled detection for large images: overlapping tiles through the detector, one result per image.

A detector resizes every image to its own input (OWLv2 960 px, Grounding DINO 800 px on the short
side, SAM 3 1008 px), so on a 6000 x 4000 photo a small object shrinks to a few pixels and is lost.
With :class:`TileOptions` the image is cut into overlapping ``tile`` x ``tile`` windows, every window
of every image goes to the detector in one ``detect`` call (the detector batches them by its own
``batch_size``), and the boxes (and a mask-returning detector's masks) are moved back into the
full frame. The ontology's semantics (per-class thresholds, negatives, class-wise NMS of captions)
happen per tile inside the detector, as for a whole image.

Windows: starts every ``tile - round(tile * overlap)`` pixels along each axis, the last window
flush with the image's far edge; an axis shorter than ``tile`` is one window. This is the layout of
``supervision``'s ``InferenceSlicer``, computed here because its offset helper is private and the
slicer itself does not fit: it runs one image at a time (no batch across the images of
``predict_batch``), and its overlap filter runs over every detection, so one tile covering the
image would not give the untiled result and two objects of one tile could be merged.

Merging (:func:`merge_tile_detections`): an object cut by a tile border is seen as a smaller box in
each tile. Class-aware NMS would keep the larger piece and drop the rest, so the kept box is still
smaller than the object; a non-max *merge* that replaces the pieces by their union box recovers
it. Only detections of one class from *different* tiles merge (the detector already resolved the
duplicates within a tile), when either

- the intersection covers at least ``merge_ios`` of the smaller box (the same object seen whole in
  one tile and clipped, or whole, in the overlap of another), or
- both are cut by facing tile borders (one by its tile's right edge, the other by its tile's left
  edge; likewise top/bottom), they overlap or touch across the border, and their extents along the
  border overlap by at least ``merge_ios`` (IoU of the two intervals): the two halves of an object
  wider than the overlap, or of any object cut by tiles without overlap.

Merged pieces are joined transitively (an object over four tiles becomes one). The result keeps
the class, data and confidence of the highest-scoring piece, the union box, and for masks the union
of the pieces' masks. The masks of mask-returning detectors are moved into (N, H, W) full-frame
arrays. The segmenter's masks of a tiled image are made at native resolution by default, in windows
around the boxes (:mod:`grounded_sam.pipeline.windows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["AUTO_FACTOR", "DEFAULT_TILE_OVERLAP", "MIN_TILE", "TileOptions", "detect_tiled", "detector_input_side",
           "merge_tile_detections", "tile_options", "tile_windows"]

DEFAULT_TILE_OVERLAP = 0.2
MIN_TILE = 32  # pixels: a smaller tile holds too little context for any detector
AUTO_FACTOR = 2.0  # tile="auto" tiles an image whose long side exceeds this many detector inputs
_FALLBACK_INPUT = 1024  # tile="auto" with a detector whose input size is not known


@dataclass(frozen=True)
class TileOptions:
    """How images are tiled for detection.

    Args:
        tile: tile side in pixels (at least 32), or ``"auto"``: the detector's input side, used only
            for an image whose long side exceeds :data:`AUTO_FACTOR` times that side.
        overlap: fraction of ``tile`` that neighbouring tiles share, in ``[0, 0.9)``.
        merge_ios: how much two pieces of one class from different tiles must overlap to be one
            object (see the module's docstring), in ``(0, 1]``.
    """

    tile: int | Literal["auto"]
    overlap: float = DEFAULT_TILE_OVERLAP
    merge_ios: float = 0.5

    def __post_init__(self) -> None:
        tile = self.tile
        if isinstance(tile, str):
            if tile != "auto":
                raise ValueError(f"tile must be a size in pixels (an integer >= {MIN_TILE}) or 'auto', got {tile!r}")
        elif isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < MIN_TILE:
            raise ValueError(f"tile must be a size in pixels, an integer >= {MIN_TILE} (or 'auto'), got {tile!r}")
        else:
            object.__setattr__(self, "tile", int(tile))
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, (int, float)) or not 0 <= self.overlap < 0.9:
            raise ValueError(f"tile overlap is a fraction of the tile in [0, 0.9) (0.2 = 20 %), got {self.overlap!r}")
        if not isinstance(self.merge_ios, (int, float)) or not 0 < self.merge_ios <= 1:
            raise ValueError(f"merge_ios must be in (0, 1], got {self.merge_ios!r}")

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change labels, as JSON (for :meth:`Pipeline.fingerprint`)."""
        return {"tile": self.tile, "overlap": float(self.overlap), "merge_ios": float(self.merge_ios)}

    def tile_for(self, hw: tuple[int, int], detector: Any) -> int | None:
        """The tile side for an ``(H, W)`` image, ``None`` where it is not tiled (``"auto"``, small image)."""
        if self.tile != "auto":
            return int(self.tile)
        side = detector_input_side(detector) or _FALLBACK_INPUT
        return side if max(hw) > AUTO_FACTOR * side else None

    def cuts(self, hw: tuple[int, int], detector: Any) -> bool:
        """Whether an ``(H, W)`` image is cut into several tiles (an image within one tile is detected whole)."""
        tile = self.tile_for(hw, detector)
        return tile is not None and max(hw) > tile


def tile_options(tile: int | str | None, overlap: float) -> TileOptions | None:
    """Checked tile settings (``tile`` may be a numeric string, as from a preset); ``None``: untiled."""
    if tile is None:
        return None
    if isinstance(tile, str) and tile != "auto":
        try:
            tile = int(tile)
        except ValueError:
            pass  # TileOptions says what a tile is
    return TileOptions(tile, overlap)


def detector_input_side(detector: Any) -> int | None:
    """The side in pixels a transformers detector resizes its input to (the shorter one where
    it keeps the aspect ratio), from its image processor's ``size``; ``None`` when not known."""
    processor = getattr(detector, "processor", None)
    size = getattr(getattr(processor, "image_processor", processor), "size", None)
    if isinstance(size, int):
        return size
    if isinstance(size, dict) or hasattr(size, "get"):
        sides = [size.get(k) for k in ("height", "width", "shortest_edge")]
        sides = [int(s) for s in sides if isinstance(s, (int, np.integer)) and s > 0]
        return min(sides) if sides else None
    return None


def tile_windows(hw: tuple[int, int], tile: int, overlap: float) -> np.ndarray:
    """The windows covering an ``(H, W)`` image: (T, 4) int ``x0, y0, x1, y1``, row by row."""
    stride = max(1, tile - round(tile * overlap))

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        out = list(range(0, size - tile, stride))
        return out + [size - tile]  # the last window flush with the far edge

    height, width = hw
    y0, x0 = np.meshgrid(starts(height), starts(width), indexing="ij")  # (ny, nx) each
    x0, y0 = x0.reshape(-1), y0.reshape(-1)
    return np.stack([x0, y0, np.minimum(x0 + tile, width), np.minimum(y0 + tile, height)], axis=1)  # (T, 4)


def detect_tiled(detector: Any, images: Sequence[np.ndarray], ontology: Any, options: TileOptions) -> list[Any]:
    """``detector.detect`` on the tiles of every RGB image (H, W, 3): one ``sv.Detections`` per image
    in its pixels, pieces of one object merged. An image that is one tile is detected whole."""
    windows = [_windows_for(img.shape[:2], detector, options) for img in images]
    crops = [img[y0:y1, x0:x1] for img, wins in zip(images, windows) for x0, y0, x1, y1 in wins]
    found = detector.detect(crops, ontology)  # one call: the detector batches the tiles
    out, start = [], 0
    for img, wins in zip(images, windows):
        parts = found[start : start + len(wins)]
        start += len(wins)
        out.append(parts[0] if len(wins) == 1 else _assemble(parts, wins, img.shape[:2], options.merge_ios))
    return out


def _windows_for(hw: tuple[int, int], detector: Any, options: TileOptions) -> np.ndarray:
    tile = options.tile_for(hw, detector)
    if tile is None:
        return np.array([[0, 0, hw[1], hw[0]]])
    return tile_windows(hw, tile, options.overlap)


def _assemble(parts: Sequence[Any], windows: np.ndarray, hw: tuple[int, int], merge_ios: float) -> Any:
    """Per-tile detections moved into the image's frame, concatenated and merged."""
    import supervision as sv

    height, width = hw
    moved, tile_ids = [], []
    for t, (dets, win) in enumerate(zip(parts, windows)):
        if not len(dets):
            continue
        dets = dets[np.arange(len(dets))]  # a copy: the detector's result is left as it was
        offset = win[:2].astype(int)
        dets.xyxy = sv.move_boxes(np.asarray(dets.xyxy, np.float32), offset).astype(np.float32)
        if dets.mask is not None:
            dets.mask = sv.move_masks(np.asarray(dets.mask, bool), offset, resolution_wh=(width, height))
        moved.append(dets)
        tile_ids.append(np.full(len(dets), t))
    if not moved:
        return parts[0]
    merged = sv.Detections.merge(moved)
    return merge_tile_detections(merged, np.concatenate(tile_ids), windows, hw, merge_ios)


def merge_tile_detections(
    dets: Any, tile_id: np.ndarray, windows: np.ndarray, hw: tuple[int, int], merge_ios: float = 0.5
) -> Any:
    """Merge the pieces of objects split by tile borders (the rules are in the module's docstring).

    Args:
        dets: ``sv.Detections`` in image pixels, N rows, ``class_id`` set.
        tile_id: (N,) the window each row was found in (an index into ``windows``).
        windows: (T, 4) ``x0, y0, x1, y1`` of the tiles.
        hw: the image's ``(H, W)``.
    Returns:
        The merged detections, ordered by each group's first row (unchanged when nothing merges).
    """
    n = len(dets)
    if n < 2:
        return dets
    groups = _groups(np.asarray(dets.xyxy, np.float64), np.asarray(dets.class_id), tile_id, windows, hw, merge_ios)
    if len(groups) == n:
        return dets
    conf = np.asarray(dets.confidence, np.float64) if dets.confidence is not None else np.zeros(n)
    best = np.array([g[np.argmax(conf[g])] for g in groups])  # (G,) the highest-scoring piece
    out = dets[best]
    out.xyxy = np.stack([np.concatenate([dets.xyxy[g, :2].min(0), dets.xyxy[g, 2:].max(0)]) for g in groups]
                        ).astype(np.float32)  # (G, 4) union boxes
    if dets.mask is not None:
        out.mask = np.stack([np.any(dets.mask[g], axis=0) for g in groups])  # (G, H, W)
    return out


def _groups(xyxy: np.ndarray, class_id: np.ndarray, tile_id: np.ndarray, windows: np.ndarray,
            hw: tuple[int, int], merge_ios: float) -> list[np.ndarray]:
    """Row indices of each object, groups in order of their first row."""
    height, width = hw
    win = windows[tile_id].astype(np.float64)  # (N, 4) each row's tile
    edge = np.maximum(2.0, 0.02 * (win[:, 2:] - win[:, :2]).max(1))  # (N,) how near a border a cut box ends
    # (N, 4) cut on the left, top, right, bottom: the box reaches a tile border that is not the image's
    cut = np.stack([
        (xyxy[:, 0] <= win[:, 0] + edge) & (win[:, 0] > 0),
        (xyxy[:, 1] <= win[:, 1] + edge) & (win[:, 1] > 0),
        (xyxy[:, 2] >= win[:, 2] - edge) & (win[:, 2] < width),
        (xyxy[:, 3] >= win[:, 3] - edge) & (win[:, 3] < height),
    ], axis=1)
    lo, hi = xyxy[:, None, :2], xyxy[None, :, :2]  # pairwise (N, N, 2) below
    inter_lo = np.maximum(lo, hi)
    inter_hi = np.minimum(xyxy[:, None, 2:], xyxy[None, :, 2:])
    span = np.clip(inter_hi - inter_lo, 0, None)  # (N, N, 2) intersection width, height
    inter = span[..., 0] * span[..., 1]
    area = np.prod(np.clip(xyxy[:, 2:] - xyxy[:, :2], 0, None), axis=1)  # (N,)
    ios = inter / np.maximum(np.minimum(area[:, None], area[None, :]), 1e-9)
    union = np.maximum(xyxy[:, None, 2:], xyxy[None, :, 2:]) - np.minimum(lo, hi)  # (N, N, 2) interval unions
    axis_iou = span / np.maximum(union, 1e-9)  # (N, N, 2) IoU of the x and of the y intervals
    # halves of a wide object: i cut on the right and j on the left (they meet along x), or the reverse; same for y
    facing_x = (cut[:, None, 2] & cut[None, :, 0]) | (cut[:, None, 0] & cut[None, :, 2])
    facing_y = (cut[:, None, 3] & cut[None, :, 1]) | (cut[:, None, 1] & cut[None, :, 3])
    meet = inter_hi - inter_lo >= 0  # (N, N, 2) the x / y intervals overlap or touch (tiles without overlap)
    halves = ((facing_x & meet[..., 0] & (axis_iou[..., 1] >= merge_ios))
              | (facing_y & meet[..., 1] & (axis_iou[..., 0] >= merge_ios)))  # (N, N)
    same = (class_id[:, None] == class_id[None, :]) & (tile_id[:, None] != tile_id[None, :])  # one class, two tiles
    joined = same & (((ios >= merge_ios) & (inter > 0)) | halves)  # (N, N)

    parent = list(range(len(xyxy)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(joined, 1))):
        a, b = root(int(i)), root(int(j))
        if a != b:
            parent[max(a, b)] = min(a, b)  # the group's root is its first row
    members: dict[int, list[int]] = {}
    for i in range(len(xyxy)):
        members.setdefault(root(i), []).append(i)
    return [np.array(m) for m in members.values()]
