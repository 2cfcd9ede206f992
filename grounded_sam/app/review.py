"""A ``label`` output folder opened for review: its images and records, and saving a fix.

:class:`ReviewFolder` reads only inside the folder it is given: the job's manifest and records
(``.grounded_sam/``, :mod:`grounded_sam.labeling.store`) and the images the job copied under
``images/``. Every name it is asked for must be one of the folder's images and is joined with
:func:`~grounded_sam.export.safe_io.safe_output_path`, so ``..``, absolute paths and links that
lead outside are refused (:class:`~grounded_sam.export.safe_io.UnsafePathError`).

:meth:`ReviewFolder.save` writes the fixed image's record through the job's record store
(atomically, with the digest and source stamp the job gave it, so a later ``label`` rerun with
the same settings keeps it) and marks it ``"reviewed": true`` (COCO images and JSONL lines show
the mark); the dataset files are then written again from the records by the job's own
:func:`~grounded_sam.labeling.assemble.assemble`, in the format, image mode and options recorded
in ``.grounded_sam/dataset.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from grounded_sam.export.records import ImageRecord, detections_to_record, record_to_detections
from grounded_sam.export.safe_io import UnsafePathError, check_relative_name, safe_output_path
from grounded_sam.labeling.assemble import DATASET_FILE, DATASET_KEYS, IMAGES_DIR, assemble
from grounded_sam.labeling.job import LabelJob, LabelReport
from grounded_sam.labeling.options import LabelOptions
from grounded_sam.labeling.sources import LabelItem
from grounded_sam.labeling.store import REVIEWED, STORE_DIR, RecordStore, StoredRecord

__all__ = ["ReviewFolder", "ReviewError", "REVIEWED"]


class ReviewError(ValueError):
    """The folder cannot be reviewed (not a ``label`` output, images not inside it, ...)."""


@dataclass(frozen=True)
class _DatasetImage(LabelItem):
    """An image already in the dataset; its record's source stamp stands in for the source's stat."""

    source: dict[str, int] = field(default_factory=dict)

    def stat(self) -> dict[str, int]:
        return dict(self.source)


class ReviewFolder:
    """The images and records of one ``label`` output folder (module docs)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.root = Path(folder).resolve()
        manifest = self.root / STORE_DIR / "manifest.json"
        try:
            self.fingerprint = json.loads(manifest.read_text(encoding="utf-8"))["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ReviewError(f"{self.root} is not an output folder of `grounded-sam label` "
                              f"(no readable {STORE_DIR}/manifest.json)") from None
        self.classes: list[str] = list(self.fingerprint["classes"])
        self.store = RecordStore.open(self.root, self.fingerprint)  # the same fingerprint: nothing is rewritten
        self.options = self._dataset_options()
        if self.options.copy_images == "none":
            raise ReviewError(f"{self.root} was labeled with copy_images='none': its images are outside the folder, "
                              "and the review reads only inside it. Label with images copied (the default).")
        self._stored: dict[str, StoredRecord] = {}
        for stored in self.store.stored():
            try:
                if self._image_path(stored.rel).is_file():
                    self._stored[stored.rel] = stored
            except UnsafePathError:
                raise ReviewError(f"{self.root}: image {stored.rel!r} is a link to a file outside the folder "
                                  "(labeled with copy_images='symlink'); the review reads only inside it") from None
        self.names: list[str] = sorted(self._stored)

    def _dataset_options(self) -> LabelOptions:
        path = self.root / STORE_DIR / DATASET_FILE
        try:
            written = json.loads(path.read_text(encoding="utf-8"))
            return LabelOptions(progress=False, **{k: written[k] for k in DATASET_KEYS})
        except FileNotFoundError:  # labeled before the file existed: the files tell the format
            pass
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ReviewError(f"{path} is unreadable: {e}") from None
        for name, fmt in (("annotations.json", "coco"), ("data.yaml", "yolo"), ("annotations.jsonl", "jsonl")):
            if (self.root / name).is_file():
                return LabelOptions(progress=False, format=fmt)
        raise ReviewError(f"{self.root} holds no dataset (annotations.json, data.yaml or annotations.jsonl)")

    @property
    def format(self) -> str:
        return self.options.format

    def _image_path(self, rel: str) -> Path:
        return safe_output_path(self.root, f"{IMAGES_DIR}/{check_relative_name(rel)}")

    def _check(self, rel: str) -> str:
        if not isinstance(rel, str) or rel not in self._stored:
            self._image_path(str(rel))  # a path that leaves the folder says so
            raise ReviewError(f"{rel!r} is not an image of the dataset in {self.root}")
        return rel

    def is_reviewed(self, rel: str) -> bool:
        return bool(self._stored[self._check(rel)].record.get(REVIEWED, False))

    def load(self, rel: str) -> tuple[np.ndarray, ImageRecord]:
        """The image (RGB) and its record."""
        from gsam_runtime.images import load_image

        record = self._stored[self._check(rel)].record
        image = load_image(self._image_path(rel))
        if image.shape[:2] != (record["height"], record["width"]):
            raise ReviewError(f"{rel}: the image is {image.shape[1]}x{image.shape[0]} but its record says "
                              f"{record['width']}x{record['height']}")
        return image, record

    def detections(self, rel: str) -> sv.Detections:
        return record_to_detections(self._stored[self._check(rel)].record)

    def save(self, rel: str, detections: sv.Detections) -> LabelReport:
        """Store ``rel``'s fixed instances as a reviewed record, then write the dataset files again."""
        old = self._stored[self._check(rel)]
        w, h = old.record["width"], old.record["height"]
        extra: dict[str, Any] = {k: v for k, v in old.record.items()
                                 if k not in ("file_name", "width", "height", "instances")}
        extra[REVIEWED] = True
        record = detections_to_record(detections, rel, w, h, self.classes, **extra)
        model = old.model if old.reviewed else old.record["instances"]  # the model's output, kept from the first review
        stored = StoredRecord(digest=old.digest, rel=rel, source=old.source, record=record, model=model)
        self.store.write(rel, stored.to_json())
        self._stored[rel] = stored
        return self.reassemble()

    def metrics(self) -> Any:
        """The labels scored against the reviewed images (the model's own instances for them vs the
        reviewed ones): an :class:`~grounded_sam.evaluation.EvalReport`, ``None`` before any review."""
        from grounded_sam.evaluation import evaluate, read_label_folder

        if not any(s.reviewed for s in self._stored.values()):
            return None
        return evaluate(read_label_folder(self.root, reviewed_only=True), read_label_folder(self.root),
                        ground_truth_images_only=True)

    def metrics_text(self) -> str:
        """:meth:`metrics` in a line or two for the page."""
        report = self.metrics()
        if report is None:
            return "No reviewed images yet: the labels' metrics appear here after the first Save."
        rows = ", ".join(f"{name} F1 {row['F1'] * 100:.0f}" for name, row in report.per_class.items()
                         if row["F1"] is not None)
        return f"Labels vs the {report.images} reviewed image(s): {report.summary().splitlines()[0]}; {rows}"

    def reassemble(self) -> LabelReport:
        """Write the dataset files from the records, as ``label`` does."""
        items = [_DatasetImage(self._image_path(rel), rel, source=self._stored[rel].source) for rel in self.names]
        report = LabelReport(output_folder=self.root, format=self.format, total=len(items))
        job = LabelJob(items, self.root, self.store, self.classes, self.options,
                       str(self.fingerprint.get("input_folder", "")), report)
        assemble(job)
        return report
