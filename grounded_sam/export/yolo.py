"""YOLO-seg (Ultralytics): one label file per image and a ``data.yaml``.

:func:`yolo_lines` gives exactly one line per non-empty instance, ``class x1 y1 x2 y2 ...``
normalised to [0, 1] by width / height; a multi-part mask is merged into one polygon
(``multipart="merge"``, :func:`~grounded_sam.export.polygons.merge_polygons`) or reduced to its
largest part (``"largest"``); holes are filled (the format has none). Box-only instances give
detection lines ``class cx cy w h``.

:class:`YoloWriter` writes ``labels/<name>.txt`` for the image ``images/<name>.<ext>`` (the
images -> labels rule of Ultralytics; :func:`yolo_label_name`), an empty file for an image
without instances, and ``data.yaml`` on ``close()``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import supervision as sv
import yaml

from grounded_sam.export.polygons import rle_to_single_polygon
from grounded_sam.export.records import ImageRecord, Instance, as_instances, class_names
from grounded_sam.export.safe_io import atomic_open, atomic_write_text, safe_output_path
from grounded_sam.export.writer import DatasetWriter

__all__ = ["YoloWriter", "yolo_lines", "yolo_label_name", "write_data_yaml"]


def yolo_lines(
    detections: sv.Detections | Sequence[Instance],
    width: int,
    height: int,
    multipart: Literal["merge", "largest"] = "merge",
    min_area: float = 0.0,
) -> list[str]:
    """YOLO lines for one image: ``class x1 y1 ...`` per non-empty mask (module docs).

    Box-only instances give detection lines ``class cx cy w h``. Coordinates are clipped to [0, 1].
    """
    instances = as_instances(detections, None, (int(height), int(width)))
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
            poly = rle_to_single_polygon(seg, multipart=multipart, min_area=min_area)
            if poly is None:
                continue
            xy = (poly / scale).reshape(-1)
        lines.append(f"{int(inst['class_id'])} " + " ".join(f"{v:.6f}" for v in np.clip(xy, 0.0, 1.0)))
    return lines


def yolo_label_name(file_name: str, image_dir: str | None = "images") -> str:
    """``labels/<name>.txt`` for the image ``<image_dir>/<name>.<ext>`` (or ``<name>.<ext>``)."""
    prefix = f"{image_dir}/" if image_dir else ""
    name = file_name[len(prefix) :] if prefix and file_name.startswith(prefix) else file_name
    return "labels/" + Path(name).with_suffix(".txt").as_posix()


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


class YoloWriter(DatasetWriter):
    """A YOLO-seg dataset in ``root`` (module docs).

    ``image_dir``: the folder of the images in the dataset (``None``: the images are named
    relative to the dataset root, e.g. left in the input folder). A label file is rewritten only
    when its text changes; ``data.yaml`` appears on ``close()``.
    """

    def __init__(self, root: str | os.PathLike, classes: Sequence[str], *,
                 multipart: Literal["merge", "largest"] = "merge", image_dir: str | None = "images") -> None:
        self.root = Path(root)
        self.classes = class_names(classes)
        self.multipart = multipart
        self.image_dir = image_dir
        self._lines = 0
        self._closed = False

    def _label_path(self, file_name: str) -> Path:
        return safe_output_path(self.root, yolo_label_name(file_name, self.image_dir))

    def add(self, record: ImageRecord) -> None:
        if self._closed:
            raise RuntimeError("YoloWriter is closed")
        lines = yolo_lines(record["instances"], record["width"], record["height"], multipart=self.multipart)
        self._lines += len(lines)
        label = self._label_path(record["file_name"])
        text = "".join(line + "\n" for line in lines)
        if not (label.is_file() and label.read_text(encoding="utf-8") == text):
            atomic_write_text(label, text)

    def discard(self, file_name: str) -> None:
        """Remove the image's label file: a stale label must not outlive its image's record."""
        self._label_path(file_name).unlink(missing_ok=True)

    @property
    def num_instances(self) -> int:
        return self._lines

    def close(self) -> Path:
        """Write ``data.yaml``; returns its path."""
        path = self.root / "data.yaml"
        if not self._closed:
            self._closed = True
            write_data_yaml(path, self.classes, self.root)
        return path

    def abort(self) -> None:
        """Stop; the label files written so far stay (each is complete), ``data.yaml`` is not written."""
        self._closed = True
