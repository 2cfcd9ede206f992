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

__all__ = ["Rle", "encode_masks", "decode_rle", "compress_rle", "rle_area", "rle_bbox"]

Rle = dict[str, Any]  # {"size": [H, W], "counts": str | bytes | list[int]}

_CHUNK = 16  # masks per pycocotools call: bounds the Fortran-order copy


def encode_masks(masks: np.ndarray) -> list[Rle]:
    """``(N, H, W)`` masks (bool or 0/1) -> N compressed RLEs with ``counts`` as ``str``."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {masks.shape}")
    out = []
    for start in range(0, masks.shape[0], _CHUNK):
        chunk = masks[start : start + _CHUNK].astype(np.uint8, copy=False)
        stacked = np.asfortranarray(np.moveaxis(chunk, 0, -1))  # (H, W, n)
        out.extend(_as_str(r) for r in mask_utils.encode(stacked))
    return out


def compress_rle(rle: Rle) -> Rle:
    """Any RLE -> compressed RLE with ``counts`` as ``str`` (JSON-ready)."""
    return _as_str(_pycoco(rle))


def decode_rle(rle: Rle) -> np.ndarray:
    """Any RLE -> ``(H, W)`` bool mask (Fortran-ordered; ``np.ascontiguousarray`` for C order)."""
    with warnings.catch_warnings():  # pycocotools' __array__ trips a NumPy 2 DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(_pycoco(rle)).astype(bool)


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
