"""COCO instance segmentation: :class:`CocoWriter` streams one ``annotations.json``.

Category ids are ``class_id + 1`` (``classes[0]`` is category 1), image and annotation ids
count from 1 in the order added, every annotation has ``iscrowd: 0`` (holed and multi-part
masks included: one annotation per instance), ``segmentation`` is compressed RLE or, with
``polygons=True``, a list of polygons (:func:`~grounded_sam.export.polygons.rle_to_polygons`;
``area`` stays the mask's pixel count). Instances whose mask is empty are not written (there
is nothing to segment); the writer counts them in ``skipped_empty``. Video frames carry
``video_id`` and ``frame_index`` on the image and ``video_id`` + ``track_id`` (from
``tracker_id``) on each annotation. The file is streamed (memory does not grow with the
dataset) and replaced atomically on ``close()``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import supervision as sv

from grounded_sam.export.polygons import rle_to_polygons
from grounded_sam.export.records import ImageRecord, Instance, as_instances, class_names, dumps
from grounded_sam.export.safe_io import TMP_SUFFIX, atomic_open, check_relative_name
from grounded_sam.export.writer import DatasetWriter

__all__ = ["CocoWriter", "coco_categories"]

_RECORD_KEYS = ("file_name", "width", "height", "instances")


def coco_categories(classes: Sequence[str]) -> list[dict[str, Any]]:
    """``[{"id": k + 1, "name": classes[k], "supercategory": "object"}]``."""
    if not classes:
        raise ValueError("classes is empty: a COCO file needs at least one category")
    return [{"id": k + 1, "name": str(c), "supercategory": "object"} for k, c in enumerate(classes)]


class CocoWriter(DatasetWriter):
    """Stream a COCO instance-segmentation file (module docs). Use as a context manager.

    ``add(record)`` (the :class:`DatasetWriter` interface) or ``add_image(file_name, width,
    height, detections_or_instances)`` -> image id; ``add_video(name, width, height)`` -> video id
    for frames added with ``video_id=``.
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
        detections: sv.Detections | Sequence[Instance] | None = None,
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
        instances = as_instances(detections, self.classes, (height, width))
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

    def add(self, record: ImageRecord) -> None:
        extra = {k: v for k, v in record.items() if k not in _RECORD_KEYS}
        self.add_image(record["file_name"], record["width"], record["height"], record["instances"], **extra)

    @property
    def num_instances(self) -> int:
        return self.num_annotations

    def _annotation(self, inst: Instance, image: dict[str, Any], width: int, height: int) -> dict[str, Any] | None:
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
                ann["segmentation"] = [p.reshape(-1).round(2).tolist() for p in rle_to_polygons(seg)]
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
