"""Dataset export: ``sv.Detections`` -> COCO instance segmentation, YOLO-seg, JSONL records.

Everything goes through one JSON-ready intermediate, the **instance** (one per detection):
``{"class_id", "class_name", "score", "mask_score", "caption", "track_id", "xyxy", "bbox",
"area", "segmentation"}`` (keys whose value is unknown are left out). ``segmentation`` is the
mask as compressed COCO RLE (``counts`` a ``str``), ``bbox`` the mask's tight ``[x, y, w, h]``
(exclusive width: columns 10..39 give ``w = 30``; supervision's exporter is one pixel short),
``area`` the mask's pixel count (pycocotools' ``area`` of the RLE), ``xyxy`` the detector's box
and ``score`` the detector confidence. Detections without masks give box-only instances
(``bbox`` from ``xyxy``, ``area = w * h``, no ``segmentation``). A **record** is one image:
``{"file_name", "width", "height", "instances", ...}``; JSONL files hold one record a line.

COCO (:class:`CocoWriter`): category ids are ``class_id + 1`` (``classes[0]`` is category 1),
image and annotation ids count from 1 in the order added, every annotation has
``iscrowd: 0`` (holed and multi-part masks included: one annotation per instance),
``segmentation`` is RLE or, with ``polygons=True``, a list of polygons
(:func:`~grounded_sam.mask_codec.mask_to_polygons`; ``area`` stays the mask's pixel count).
Instances whose mask is empty are not written (there is nothing to segment); the writer
counts them in ``skipped_empty``. Video frames carry ``video_id`` and ``frame_index`` on the
image and ``video_id`` + ``track_id`` (from ``tracker_id``) on each annotation. The file is
streamed (memory does not grow with the dataset) and replaced atomically on ``close()``.

YOLO-seg (:func:`yolo_lines`): exactly one line per non-empty instance,
``class x1 y1 x2 y2 ...`` normalised to [0, 1] by width/height; a multi-part mask is merged
into one polygon (``multipart="merge"``, :func:`~grounded_sam.mask_codec.merge_polygons`) or
reduced to its largest part (``"largest"``); holes are filled (the format has none).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import supervision as sv
import yaml

from grounded_sam.mask_codec import (
    decode_rle,
    encode_masks,
    mask_to_polygons,
    mask_to_single_polygon,
    rle_area,
    rle_bbox,
)
from grounded_sam.safe_io import TMP_SUFFIX, atomic_open, check_relative_name

__all__ = [
    "detections_to_instances",
    "instances_to_detections",
    "detections_to_record",
    "record_to_detections",
    "class_names",
    "coco_categories",
    "CocoWriter",
    "JsonlWriter",
    "yolo_lines",
    "write_data_yaml",
    "iter_jsonl",
    "dumps",
]

Instances = list[dict[str, Any]]


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
) -> Instances:
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
        rles = encode_masks(detections.mask.astype(bool, copy=False))
    names, captions, mask_scores = (_column(detections, k) for k in ("class_name", "caption", "mask_score"))
    out = []
    for i in range(n):
        inst: dict[str, Any] = {"class_id": class_ids[i]}
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
        out.append(inst)
    return out


def instances_to_detections(instances: Instances, height: int, width: int) -> sv.Detections:
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
) -> dict[str, Any]:
    """One image's record ``{"file_name", "width", "height", "instances", **extra}``."""
    instances = detections_to_instances(detections, classes, image_size=(int(height), int(width)))
    return {"file_name": file_name, "width": int(width), "height": int(height), "instances": instances, **extra}


def record_to_detections(record: dict[str, Any]) -> sv.Detections:
    return instances_to_detections(record["instances"], int(record["height"]), int(record["width"]))


def coco_categories(classes: Sequence[str]) -> list[dict[str, Any]]:
    """``[{"id": k + 1, "name": classes[k], "supercategory": "object"}]``."""
    if not classes:
        raise ValueError("classes is empty: a COCO file needs at least one category")
    return [{"id": k + 1, "name": str(c), "supercategory": "object"} for k, c in enumerate(classes)]


def _as_instances(
    items: sv.Detections | Instances | None, classes: Sequence[str], size: tuple[int, int]
) -> Instances:
    if items is None:
        return []
    if isinstance(items, sv.Detections):
        return detections_to_instances(items, classes, image_size=size)
    return list(items)


class CocoWriter:
    """Stream a COCO instance-segmentation file (module docs). Use as a context manager.

    ``add_image(file_name, width, height, detections_or_instances)`` -> image id;
    ``add_video(name, width, height)`` -> video id for frames added with ``video_id=``.
    """

    def __init__(self, path: str | os.PathLike, classes: Sequence[str], *, polygons: bool = False,
                 info: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.classes = class_names(classes)
        self._categories = coco_categories(self.classes)
        self.polygons = polygons
        self._info = {"description": "grounded-sam", **(info or {})}
        self._videos: list[dict[str, Any]] = []
        self.num_images = self.num_annotations = self.skipped_empty = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        stem = f".{self.path.name}.{os.getpid()}.{id(self):x}"
        self._tmp = [self.path.with_name(f"{stem}.{part}{TMP_SUFFIX}") for part in ("images", "annotations")]
        self._files = [open(p, "w", encoding="utf-8", newline="\n") for p in self._tmp]
        self._closed = False

    def add_video(self, name: str, width: int | None = None, height: int | None = None, **extra: Any) -> int:
        video = {"id": len(self._videos) + 1, "name": str(name), **extra}
        if width is not None and height is not None:
            video.update(width=int(width), height=int(height))
        self._videos.append(video)
        return video["id"]

    def _write(self, which: int, entry: dict[str, Any], count: int) -> None:
        self._files[which].write(("" if count == 0 else ",\n") + dumps(entry))

    def add_image(
        self,
        file_name: str,
        width: int,
        height: int,
        detections: sv.Detections | Instances | None = None,
        *,
        video_id: int | None = None,
        frame_index: int | None = None,
        **extra: Any,
    ) -> int:
        if self._closed:
            raise RuntimeError("CocoWriter is closed")
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise ValueError(f"{file_name!r}: image size must be positive, got {width}x{height}")
        name = check_relative_name(file_name)
        image = {"id": self.num_images + 1, "file_name": name, "width": width, "height": height}
        if video_id is not None:
            if not 1 <= video_id <= len(self._videos):
                raise ValueError(f"unknown video_id {video_id}; call add_video() first")
            image["video_id"] = int(video_id)
        if frame_index is not None:
            image["frame_index"] = int(frame_index)
        image.update(extra)
        instances = _as_instances(detections, self.classes, (height, width))
        self._write(0, image, self.num_images)
        self.num_images += 1
        for inst in instances:
            ann = self._annotation(inst, image, width, height)
            if ann is None:
                self.skipped_empty += 1
                continue
            self._write(1, ann, self.num_annotations)
            self.num_annotations += 1
        return image["id"]

    def _annotation(self, inst: dict[str, Any], image: dict[str, Any], width: int, height: int) -> dict | None:
        cid = int(inst["class_id"])
        if not 0 <= cid < len(self.classes):
            raise ValueError(f"{image['file_name']!r}: class_id {cid} out of range for {len(self.classes)} classes")
        ann: dict[str, Any] = {"id": self.num_annotations + 1, "image_id": image["id"], "category_id": cid + 1}
        seg = inst.get("segmentation")
        if seg is not None:
            if int(inst["area"]) == 0:
                return None
            if list(seg["size"]) != [height, width]:
                raise ValueError(f"{image['file_name']!r}: mask size {seg['size']} != image {[height, width]}")
            if self.polygons:
                ann["segmentation"] = [p.reshape(-1).round(2).tolist() for p in mask_to_polygons(decode_rle(seg))]
            else:
                ann["segmentation"] = seg
        ann.update(area=inst["area"], bbox=inst["bbox"], iscrowd=0)
        for key in ("score", "mask_score", "caption"):
            if key in inst:
                ann[key] = inst[key]
        if "video_id" in image:
            ann["video_id"] = image["video_id"]
        if "track_id" in inst:
            ann["track_id"] = inst["track_id"]
        return ann

    def close(self) -> Path:
        """Assemble the final JSON and replace ``path`` atomically; returns ``path``."""
        if self._closed:
            return self.path
        try:
            for f in self._files:
                f.close()
            head = {"info": self._info, "licenses": [], "categories": self._categories}
            if self._videos:
                head["videos"] = self._videos
            with atomic_open(self.path, "w") as out:
                out.write(dumps(head)[:-1] + ',"images":[\n')
                self._copy(self._tmp[0], out)
                out.write('\n],"annotations":[\n')
                self._copy(self._tmp[1], out)
                out.write("\n]}\n")
        finally:
            self.abort()
        return self.path

    @staticmethod
    def _copy(path: Path, out: Any) -> None:
        with open(path, encoding="utf-8") as f:
            shutil.copyfileobj(f, out, length=1 << 20)

    def abort(self) -> None:
        """Discard everything written so far (``path`` is left as it was)."""
        self._closed = True
        for f, p in zip(self._files, self._tmp):
            f.close()
            p.unlink(missing_ok=True)

    def __enter__(self) -> CocoWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class JsonlWriter:
    """Write records one JSON line each; the file appears atomically on ``close()``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._ctx = atomic_open(self.path, "w")
        self._f = self._ctx.__enter__()
        self.count = 0

    def add(self, record: dict[str, Any]) -> None:
        self._f.write(dumps(record) + "\n")
        self.count += 1

    def close(self, exc: BaseException | None = None) -> None:
        if self._ctx is None:
            return
        ctx, self._ctx = self._ctx, None
        if exc is None:
            ctx.__exit__(None, None, None)
        else:
            ctx.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(exc)


def yolo_lines(
    detections: sv.Detections | Instances,
    width: int,
    height: int,
    multipart: Literal["merge", "largest"] = "merge",
    min_area: float = 0.0,
) -> list[str]:
    """YOLO lines for one image: ``class x1 y1 ...`` per non-empty mask (module docs).

    Box-only instances give detection lines ``class cx cy w h``. Coordinates are clipped to [0, 1].
    """
    instances = _as_instances(detections, None, (int(height), int(width)))
    scale = np.array([width, height], dtype=np.float64)
    lines = []
    for inst in instances:
        seg = inst.get("segmentation")
        if seg is None:
            x, y, w, h = inst["bbox"]
            xy = np.array([x + w / 2, y + h / 2, w, h]) / np.tile(scale, 2)
        else:
            if int(inst.get("area", 1)) == 0:
                continue
            poly = mask_to_single_polygon(decode_rle(seg), multipart=multipart, min_area=min_area)
            if poly is None:
                continue
            xy = (poly / scale).reshape(-1)
        lines.append(f"{int(inst['class_id'])} " + " ".join(f"{v:.6f}" for v in np.clip(xy, 0.0, 1.0)))
    return lines


def write_data_yaml(
    path: str | os.PathLike,
    classes: Sequence[str],
    dataset_root: str | os.PathLike,
    train: str = "images",
    val: str = "images",
) -> Path:
    """Ultralytics ``data.yaml``: ``path`` (absolute dataset root), ``train``/``val``, ``nc``, ``names``.

    Delete the ``path`` line to make the dataset relocatable (Ultralytics then uses the YAML's folder).
    """
    classes = class_names(classes)
    data = {
        "path": str(Path(dataset_root).resolve()),
        "train": train,
        "val": val,
        "nc": len(classes),
        "names": {i: str(c) for i, c in enumerate(classes)},
    }
    with atomic_open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True)
    return Path(path)


def iter_jsonl(path: str | os.PathLike) -> Iterable[dict[str, Any]]:
    """Read records back from a JSONL file, one at a time."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
