"""Detections as Label Studio results: brush masks in Label Studio's RLE, polygons, rectangles.

Label Studio's brush RLE is not COCO's: it is thi.ng's ``rle-pack`` over the mask's RGBA bytes
(every pixel repeated 4 times, 255 inside). The stream starts with the value count (32 bits),
the word size minus 1 (5 bits) and four run-length field widths minus 1 (4 bits each: 3, 4, 8,
16); then per run a flag bit (1: a repeated value, 0: literal values), 2 bits that pick the
field width, the run length minus 1 in that width, and the 8-bit value(s). Runs longer than
2**16 are split. :func:`brush_rle` writes the same bytes as ``label_studio_sdk.converter.brush.mask2rle``
(the SDK itself is not a dependency: it pins an older numpy), in numpy instead of string
concatenation.

Coordinates are Label Studio's: percent of the original image's width and height.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from grounded_sam.export.polygons import mask_to_single_polygon

__all__ = ["brush_rle", "brush_result", "polygon_result", "rectangle_result"]

_WIDTHS = (3, 4, 8, 16)  # run-length field widths (bits), as the SDK writes them
_WORD = 8


def brush_rle(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE (a list of byte values) of a ``(H, W)`` boolean mask."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    flat = np.repeat(np.where(mask.ravel() > 0, 255, 0).astype(np.uint8), 4)  # RGBA
    n = flat.size
    header = np.array([int(b) for b in f"{n:032b}{_WORD - 1:05b}" + "".join(f"{w - 1:04b}" for w in _WIDTHS)],
                      dtype=np.uint8)
    bits = [header]
    if n:
        ends = np.append(np.flatnonzero(flat[1:] != flat[:-1]), n - 1)
        bits.append(_run_bits(np.diff(np.append(-1, ends)), flat[ends]))
    stream = np.concatenate(bits)
    stream = np.append(stream, np.zeros(8 - stream.size % 8, np.uint8))  # as the SDK: a whole zero byte when aligned
    return np.packbits(stream).tolist()


def _run_bits(lengths: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The bit stream of runs (``lengths``, ``values``), vectorised. Per record: flag (1 bit),
    width index (2), length - 1 (3, 4, 8 or 16), value (8). A run of one is a literal record (flag
    0); a longer run is repeated records of 2**16 while more than 2**16 remain, then one of the rest,
    all in the width the whole run needs (as the SDK writes them)."""
    full = np.where(lengths > 1, (lengths - 1) // 2**16, 0)  # records of exactly 2**16 before the last
    if full.any():
        per_run = full + 1
        run_of = np.repeat(np.arange(lengths.size), per_run)  # records in stream order -> their run
        last = np.zeros(run_of.size, bool)
        last[np.cumsum(per_run) - 1] = True
        count = np.where(last, (lengths - full * 2**16)[run_of], 2**16)
        run_length, values = lengths[run_of], values[run_of]
    else:
        count = run_length = lengths
        last = np.ones(lengths.size, bool)
    widths = np.array(_WIDTHS, dtype=np.int64)
    flag = np.where(last & (run_length == 1), 0, 1)
    index = np.searchsorted(2**widths, np.minimum(run_length, 2**16))  # the narrowest width for the run
    width = widths[index]
    code = (((flag << 2 | index) << width | (count - 1)) << _WORD) | values.astype(np.int64)  # <= 27 bits
    nbits = 3 + width + _WORD
    aligned = (code << (32 - nbits)).astype(">u4")  # each record's bits at the top of 32, big-endian
    bits = np.unpackbits(aligned.view(np.uint8)).reshape(-1, 32)
    return bits[np.arange(32)[None, :] < nbits[:, None]]


def _base(from_name: str, to_name: str, kind: str, hw: tuple[int, int], score: float | None) -> dict[str, Any]:
    result: dict[str, Any] = {"id": uuid.uuid4().hex[:10], "from_name": from_name, "to_name": to_name, "type": kind,
                              "original_width": int(hw[1]), "original_height": int(hw[0]), "image_rotation": 0}
    if score is not None:
        result["score"] = float(score)
    return result


def brush_result(mask: np.ndarray, label: str, from_name: str, to_name: str, score: float | None = None) -> dict[str, Any]:
    """A ``brushlabels`` result for a ``(H, W)`` mask."""
    result = _base(from_name, to_name, "brushlabels", mask.shape[:2], score)
    result["value"] = {"format": "rle", "rle": brush_rle(mask), "brushlabels": [label]}
    return result


def polygon_result(mask: np.ndarray, label: str, from_name: str, to_name: str,
                   score: float | None = None) -> dict[str, Any] | None:
    """A ``polygonlabels`` result: the mask's outline (parts merged, holes filled); ``None`` if empty."""
    polygon = mask_to_single_polygon(np.asarray(mask, dtype=np.uint8))
    if polygon is None:
        return None
    h, w = mask.shape[:2]
    points = [[float(x) * 100.0 / w, float(y) * 100.0 / h] for x, y in polygon]
    result = _base(from_name, to_name, "polygonlabels", (h, w), score)
    result["value"] = {"points": points, "closed": True, "polygonlabels": [label]}
    return result


def rectangle_result(xyxy: Sequence[float], hw: tuple[int, int], label: str, from_name: str, to_name: str,
                     score: float | None = None) -> dict[str, Any]:
    """A ``rectanglelabels`` result for a pixel box ``[x1, y1, x2, y2]`` in an image of ``hw``."""
    h, w = hw
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    result = _base(from_name, to_name, "rectanglelabels", hw, score)
    result["value"] = {"x": x1 * 100.0 / w, "y": y1 * 100.0 / h, "width": (x2 - x1) * 100.0 / w,
                       "height": (y2 - y1) * 100.0 / h, "rotation": 0, "rectanglelabels": [label]}
    return result
