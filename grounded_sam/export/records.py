"""Records: ``sv.Detections`` as JSON-ready documents, and back.

Every dataset format is written from one intermediate, the **instance** (one per detection):
``{"class_id", "class_name", "score", "mask_score", "caption", "track_id", "xyxy", "bbox",
"area", "segmentation"}`` (keys whose value is unknown are left out). ``segmentation`` is the
mask as compressed COCO RLE (:func:`gsam_runtime.rle.encode_masks`, ``counts`` a ``str``; an
``sv.CompactMask`` is encoded crop by crop, never densified), ``bbox``
the mask's tight ``[x, y, w, h]`` (exclusive width: columns 10..39 give ``w = 30``;
supervision's exporter is one pixel short), ``area`` the mask's pixel count, ``xyxy`` the
detector's box and ``score`` the detector confidence. Detections without masks give box-only
instances (``bbox`` from ``xyxy``, ``area = w * h``, no ``segmentation``). A **record** is one
image: ``{"file_name", "width", "height", "instances", ...}``.

Both are typed as :class:`Instance` / :class:`ImageRecord` (``TypedDict``): they are the JSON
documents themselves (a JSONL line, a labeling record, the CLI's per-image file), so they are
written and read back without a conversion step.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypedDict, cast

import numpy as np
import supervision as sv

from gsam_runtime.rle import Rle, decode_rle, encode_masks, rle_area, rle_bbox

__all__ = [
    "Instance",
    "ImageRecord",
    "detections_to_instances",
    "instances_to_detections",
    "detections_to_record",
    "record_to_detections",
    "as_instances",
    "class_names",
    "dumps",
]


class _InstanceFields(TypedDict):
    class_id: int
    xyxy: list[float | None]  # the detector's box; None where a coordinate is not finite
    bbox: list[float]  # [x, y, w, h]
    area: float  # pixels (an int for masks)


class Instance(_InstanceFields, total=False):
    """One detection (module docs); the optional keys are present when known."""

    class_name: str
    score: float
    mask_score: float
    caption: str
    track_id: int
    segmentation: Rle  # compressed RLE, ``counts`` a ``str``


class ImageRecord(TypedDict):
    """One image and its instances; callers may add more keys (a video frame's ``frame_index``)."""

    file_name: str
    width: int
    height: int
    instances: list[Instance]


def dumps(obj: Any) -> str:
    """Compact, deterministic JSON (UTF-8 text, no spaces)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def class_names(classes: Sequence[str] | Any) -> list[str]:
    """Class names from a list or from an ontology (its ``classes()``, not its captions)."""
    return [str(c) for c in (classes.classes() if hasattr(classes, "classes") else classes)]


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if not np.isfinite(f) else round(f, 6)


def _column(d: sv.Detections, key: str) -> Sequence[Any] | None:
    return d.data.get(key) if d.data else None


def detections_to_instances(
    detections: sv.Detections, classes: Sequence[str] | None = None, image_size: tuple[int, int] | None = None
) -> list[Instance]:
    """Encode a Detections into instances (module docs). ``image_size`` is ``(height, width)``.

    ``class_id`` must be set and, when ``classes`` is given, index it (class names come from
    ``classes``, else from ``data["class_name"]``). Masks must match ``image_size`` when given.
    """
    if not isinstance(detections, sv.Detections):
        raise TypeError(f"expected supervision.Detections, got {type(detections).__name__}")
    n = len(detections)
    if n == 0:
        return []
    if detections.class_id is None:
        raise ValueError("detections.class_id is None; every detection needs a class id to be exported")
    class_ids = [int(c) for c in detections.class_id]
    if classes is not None:
        classes = class_names(classes)
        bad = [c for c in class_ids if not 0 <= c < len(classes)]
        if bad:
            raise ValueError(f"class_id {bad[0]} is out of range for {len(classes)} classes {list(classes)}")
    rles = None
    if detections.mask is not None:
        if image_size is not None and tuple(detections.mask.shape[1:]) != tuple(image_size):
            raise ValueError(
                f"mask size {tuple(detections.mask.shape[1:])} (H, W) does not match the image {tuple(image_size)}"
            )
        mask = detections.mask
        rles = encode_masks(mask if isinstance(mask, sv.CompactMask) else mask.astype(bool, copy=False))
    names, captions, mask_scores = (_column(detections, k) for k in ("class_name", "caption", "mask_score"))
    out: list[Instance] = []
    for i in range(n):
        inst: dict[str, Any] = {"class_id": class_ids[i]}  # keys in the order the files show them
        name = classes[class_ids[i]] if classes is not None else (names[i] if names is not None else None)
        if name is not None:
            inst["class_name"] = str(name)
        for key, value in (
            ("score", _num(detections.confidence[i]) if detections.confidence is not None else None),
            ("mask_score", _num(mask_scores[i]) if mask_scores is not None else None),
            ("caption", str(captions[i]) if captions is not None and captions[i] is not None else None),
            ("track_id", int(detections.tracker_id[i]) if detections.tracker_id is not None else None),
        ):
            if value is not None:
                inst[key] = value
        x0, y0, x1, y1 = (_num(v) for v in detections.xyxy[i])
        inst["xyxy"] = [x0, y0, x1, y1]
        if rles is not None:
            inst["bbox"] = rle_bbox(rles[i])
            inst["area"] = rle_area(rles[i])
            inst["segmentation"] = rles[i]
        else:
            w, h = max(x1 - x0, 0.0), max(y1 - y0, 0.0)
            inst["bbox"] = [x0, y0, round(w, 6), round(h, 6)]
            inst["area"] = round(w * h, 6)
        out.append(cast(Instance, inst))
    return out


def instances_to_detections(instances: Sequence[Instance], height: int, width: int) -> sv.Detections:
    """Decode instances back into a Detections (masks when every instance has one)."""
    if not instances:
        empty = sv.Detections.empty()
        empty.mask = np.zeros((0, height, width), dtype=bool)
        return empty
    xyxy = np.array([i["xyxy"] for i in instances], dtype=np.float32).reshape(-1, 4)
    mask = None
    if all("segmentation" in i for i in instances):
        mask = np.stack([decode_rle(i["segmentation"]) for i in instances])  # (N, H, W)
        if mask.shape[1:] != (height, width):
            raise ValueError(f"mask size {mask.shape[1:]} does not match the record's {(height, width)}")

    def col(key: str, dtype: Any) -> np.ndarray | None:
        if all(i.get(key) is not None for i in instances):
            return np.array([i[key] for i in instances], dtype=dtype)
        return None

    data = {k: v for k in ("class_name", "caption") if (v := col(k, object)) is not None}
    if (ms := col("mask_score", np.float32)) is not None:
        data["mask_score"] = ms
    return sv.Detections(
        xyxy=xyxy,
        mask=mask,
        confidence=col("score", np.float32),
        class_id=np.array([i["class_id"] for i in instances], dtype=int),
        tracker_id=col("track_id", int),
        data={k: (v.astype(str) if v.dtype == object else v) for k, v in data.items()},
    )


def detections_to_record(
    detections: sv.Detections,
    file_name: str,
    width: int,
    height: int,
    classes: Sequence[str] | None = None,
    **extra: Any,
) -> ImageRecord:
    """One image's record ``{"file_name", "width", "height", "instances", **extra}``."""
    instances = detections_to_instances(detections, classes, image_size=(int(height), int(width)))
    record = {"file_name": file_name, "width": int(width), "height": int(height), "instances": instances, **extra}
    return cast(ImageRecord, record)


def record_to_detections(record: ImageRecord) -> sv.Detections:
    """Decode a record back into a Detections (see :func:`instances_to_detections`)."""
    return instances_to_detections(record["instances"], int(record["height"]), int(record["width"]))


def as_instances(
    items: sv.Detections | Sequence[Instance] | None, classes: Sequence[str] | None, image_size: tuple[int, int]
) -> list[Instance]:
    """Instances from a Detections (encoded, ``image_size`` is ``(height, width)``), a list of them, or ``None``."""
    if items is None:
        return []
    if isinstance(items, sv.Detections):
        return detections_to_instances(items, classes, image_size=image_size)
    return list(items)
