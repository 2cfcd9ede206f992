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
    header = f"{n:032b}{_WORD - 1:05b}" + "".join(f"{w - 1:04b}" for w in _WIDTHS)
    parts = [header]
    if n:
        ends = np.append(np.flatnonzero(flat[1:] != flat[:-1]), n - 1)
        lengths = np.diff(np.append(-1, ends))
        for length, value in zip(lengths.tolist(), flat[ends].tolist()):
            parts.append(_run(length, value))
    bits = "".join(parts)
    bits += "0" * (8 - len(bits) % 8)  # as the SDK: a whole zero byte when already aligned
    return np.packbits(np.frombuffer(bits.encode(), dtype=np.uint8) - ord("0")).tolist()


def _run(length: int, value: int) -> str:
    word = f"{value:08b}"
    if length == 1:
        return "0" + "00" + "000" + word  # one literal value
    out = []
    while length > 2**16:
        out.append("1" + "11" + f"{2**16 - 1:016b}" + word)
        length -= 2**16
    index = next(i for i, w in enumerate(_WIDTHS) if length <= 2**w)
    out.append("1" + f"{index:02b}" + f"{length - 1:0{_WIDTHS[index]}b}" + word)
    return "".join(out)


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
