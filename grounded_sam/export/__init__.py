"""Export: ``sv.Detections`` -> COCO instance segmentation, YOLO-seg, JSONL, and drawn images / videos.

- :mod:`~grounded_sam.export.records` — :class:`Instance` / :class:`ImageRecord`, the JSON-ready
  intermediate every format is written from (masks as COCO RLE via :mod:`gsam_runtime.rle`), and back.
- :mod:`~grounded_sam.export.writer` — :class:`DatasetWriter`, the interface of the formats:
  ``add(record)``, ``discard(file_name)``, ``close()``, ``abort()``, ``num_instances``.
- :mod:`~grounded_sam.export.coco` — :class:`CocoWriter` (``annotations.json``, RLE or polygons).
- :mod:`~grounded_sam.export.yolo` — :class:`YoloWriter` (``labels/*.txt`` + ``data.yaml``),
  :func:`yolo_lines`.
- :mod:`~grounded_sam.export.jsonl` — :class:`JsonlWriter`, :func:`iter_jsonl`.
- :mod:`~grounded_sam.export.polygons` — masks as polygons (COCO polygons, YOLO's one polygon).
- :mod:`~grounded_sam.export.safe_io` — atomic writes and output paths that stay in their folder.
- :mod:`~grounded_sam.export.annotate` — masks, boxes and labels drawn on images, H.264 video writing.

A tracked video's outputs (MP4 + JSONL + video COCO) are :mod:`grounded_sam.tracking.outputs`.

Labeling a whole folder into a dataset (resumable, local or Ray) is :mod:`grounded_sam.labeling`.
"""

from grounded_sam.export.coco import CocoWriter, coco_categories
from grounded_sam.export.jsonl import JsonlWriter, iter_jsonl
from grounded_sam.export.records import (
    ImageRecord,
    Instance,
    class_names,
    detections_to_instances,
    detections_to_record,
    dumps,
    instances_to_detections,
    record_to_detections,
)
from grounded_sam.export.safe_io import UnsafePathError
from grounded_sam.export.writer import DatasetWriter
from grounded_sam.export.yolo import YoloWriter, write_data_yaml, yolo_label_name, yolo_lines

__all__ = [
    "Instance",
    "ImageRecord",
    "detections_to_instances",
    "instances_to_detections",
    "detections_to_record",
    "record_to_detections",
    "class_names",
    "dumps",
    "DatasetWriter",
    "CocoWriter",
    "coco_categories",
    "YoloWriter",
    "yolo_lines",
    "yolo_label_name",
    "write_data_yaml",
    "JsonlWriter",
    "iter_jsonl",
    "UnsafePathError",
]
