"""COCO run-length encoding: the one RLE codec of every package (pycocotools underneath).

An RLE is a dict ``{"size": [H, W], "counts": ...}`` over the column-major (Fortran) flattened
mask, runs alternating background / foreground and starting with background:

- **compressed** (what COCO files hold): ``counts`` is COCO's ASCII string. :func:`encode_masks`
  and :func:`compress_rle` return it as a ``str`` so that the dict is JSON-ready; ``bytes``
  counts (pycocotools' own output) are accepted everywhere too.
- **uncompressed** (what SAM's automatic mask generator can output): ``counts`` is a list of
  run lengths. :func:`compress_rle` turns it into the compressed form; :func:`decode_rle`,
  :func:`rle_area` and :func:`rle_bbox` take either form.

:func:`rle_bbox` is the mask's tight ``[x, y, w, h]`` with an exclusive width (a mask covering
columns 10..39 has ``x=10, w=30``); :func:`rle_area` is the mask's pixel count.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["Rle", "encode_masks", "encode_crop", "decode_rle", "decode_rle_crop", "compress_rle", "rle_area", "rle_bbox"]

Rle = dict[str, Any]  # {"size": [H, W], "counts": str | bytes | list[int]}

_CHUNK = 16  # masks per pycocotools call: bounds the Fortran-order copy


def encode_masks(masks: Any) -> list[Rle]:
    """``(N, H, W)`` masks (bool or 0/1) -> N compressed RLEs with ``counts`` as ``str``.

    A compact mask (``sv.CompactMask``: crops with ``crop(i)``, ``offsets`` and ``image_shape``)
    is encoded crop by crop (:func:`encode_crop`), never as a full ``(N, H, W)`` array.
    """
    if hasattr(masks, "crop") and hasattr(masks, "offsets") and hasattr(masks, "image_shape"):
        offsets = np.asarray(masks.offsets)
        return [encode_crop(masks.crop(i), int(offsets[i, 0]), int(offsets[i, 1]), masks.image_shape)
                for i in range(len(masks))]
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {masks.shape}")
    out = []
    for start in range(0, masks.shape[0], _CHUNK):
        chunk = masks[start : start + _CHUNK].astype(np.uint8, copy=False)
        stacked = np.asfortranarray(np.moveaxis(chunk, 0, -1))  # (H, W, n)
        out.extend(_as_str(r) for r in mask_utils.encode(stacked))
    return out


def encode_crop(crop: np.ndarray, x: int, y: int, hw: tuple[int, int]) -> Rle:
    """The compressed RLE of an ``(H, W)`` frame that is False but for the ``(h, w)`` bool ``crop``
    at column ``x``, row ``y``; equal to :func:`encode_masks` of the full frame, without making it.

    Only the crop's columns are scanned (an ``(H, w)`` strip); the columns left and right of it
    are background runs added to the first and last run.
    """
    height, width = int(hw[0]), int(hw[1])
    h, w = crop.shape
    if not (0 <= x and 0 <= y and x + w <= width and y + h <= height):
        raise ValueError(f"a {(h, w)} crop at x={x}, y={y} does not fit a {(height, width)} frame")
    strip = np.zeros((height, w), dtype=np.uint8)  # (H, w): the crop's columns
    strip[y : y + h] = crop
    flat = strip.ravel(order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)  # runs start with background
    runs[0] += x * height
    after = (width - x - w) * height
    if len(runs) % 2:  # ends on background
        runs[-1] += after
    elif after:
        runs.append(after)
    return compress_rle({"size": [height, width], "counts": runs})


def compress_rle(rle: Rle) -> Rle:
    """Any RLE -> compressed RLE with ``counts`` as ``str`` (JSON-ready)."""
    return _as_str(_pycoco(rle))


def decode_rle(rle: Rle) -> np.ndarray:
    """Any RLE -> ``(H, W)`` bool mask (Fortran-ordered; ``np.ascontiguousarray`` for C order)."""
    with warnings.catch_warnings():  # pycocotools' __array__ trips a NumPy 2 DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(_pycoco(rle)).astype(bool)


def decode_rle_crop(rle: Rle, pad: int = 0) -> tuple[np.ndarray, int, int]:
    """Any RLE -> ``(crop, x, y)``: the ``(h, w)`` bool crop of the mask's tight box, grown by
    ``pad`` pixels on each side that is inside the frame, at column ``x``, row ``y`` of the frame;
    the full frame is never made. An empty mask gives a ``(0, 0)`` crop at ``(0, 0)``."""
    height, width = (int(v) for v in rle["size"])
    x0, y0, bw, bh = (int(v) for v in rle_bbox(rle))
    if bw == 0 or bh == 0:
        return np.zeros((0, 0), dtype=bool), 0, 0
    x, y = max(x0 - pad, 0), max(y0 - pad, 0)
    x1, y1 = min(x0 + bw + pad, width), min(y0 + bh + pad, height)
    counts = _run_lengths(rle)
    ends = np.cumsum(counts, dtype=np.int64)
    starts = ends - counts
    lo, hi = x * height, x1 * height  # the crop's columns in the column-major scan
    fg_s, fg_e = np.clip(starts[1::2], lo, hi) - lo, np.clip(ends[1::2], lo, hi) - lo  # foreground runs
    keep = fg_e > fg_s
    edges = np.zeros(hi - lo + 1, dtype=np.int32)
    np.add.at(edges, fg_s[keep], 1)
    np.add.at(edges, fg_e[keep], -1)
    strip = np.cumsum(edges[:-1]).astype(bool).reshape(x1 - x, height).T  # (H, w)
    return np.ascontiguousarray(strip[y:y1]), x, y


def _run_lengths(rle: Rle) -> np.ndarray:
    """The uncompressed run lengths of any RLE (COCO's ``rleFrString`` for the string form)."""
    counts = rle["counts"]
    if not isinstance(counts, (str, bytes)):
        return np.asarray(counts, dtype=np.int64)
    data = counts.encode("ascii") if isinstance(counts, str) else counts
    out: list[int] = []
    p = 0
    while p < len(data):
        value, k, more = 0, 0, True
        while more:
            c = data[p] - 48
            value |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                value |= -1 << (5 * k)
        if len(out) > 2:
            value += out[-2]
        out.append(value)
    return np.asarray(out, dtype=np.int64)


def rle_area(rle: Rle) -> int:
    """Number of foreground pixels."""
    return int(mask_utils.area(_pycoco(rle)))


def rle_bbox(rle: Rle) -> list[float]:
    """Tight ``[x, y, w, h]`` of the mask (exclusive width / height); zeros for an empty mask."""
    return [float(v) for v in mask_utils.toBbox(_pycoco(rle))]


def _pycoco(rle: Rle) -> dict[str, Any]:
    """The compressed form pycocotools' functions take: ``bytes`` counts."""
    h, w = (int(s) for s in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, str):
        return {"size": [h, w], "counts": counts.encode("ascii")}
    if isinstance(counts, bytes):
        return {"size": [h, w], "counts": counts}
    total = int(np.sum(counts, dtype=np.int64))
    if total != h * w:
        raise ValueError(f"RLE counts sum to {total}, expected {h * w} for size {[h, w]}")
    return mask_utils.frPyObjects({"size": [h, w], "counts": list(counts)}, h, w)


def _as_str(rle: dict[str, Any]) -> Rle:
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
