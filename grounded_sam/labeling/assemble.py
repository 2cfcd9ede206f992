"""The last phase of a job: the dataset files, written from the records only.

Records are read in the job's sorted order, one at a time, so a killed-and-resumed job writes
byte-identical files to an uninterrupted one. Each image with a valid record is placed under
``images/`` (``copy_images``) and handed to the format's
:class:`~grounded_sam.export.writer.DatasetWriter`; an image without one is ``discard``-ed (a
stale YOLO label from an earlier run must not outlive its record). How the files were written
(format, ``copy_images``, polygons, multipart) is kept in ``.grounded_sam/dataset.json``, so that
a review (``grounded-sam app --review``) can write them again the same way.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from grounded_sam.export.coco import CocoWriter
from grounded_sam.export.jsonl import JsonlWriter
from grounded_sam.export.records import dumps
from grounded_sam.export.safe_io import TMP_SUFFIX, atomic_write_text, safe_output_path
from grounded_sam.export.writer import DatasetWriter
from grounded_sam.export.yolo import YoloWriter
from grounded_sam.labeling.job import LabelJob, progress_bar
from grounded_sam.labeling.options import CopyMode
from grounded_sam.labeling.sources import LabelItem

__all__ = ["assemble", "dataset_writer", "image_name", "place_image", "DATASET_FILE", "DATASET_KEYS"]

IMAGES_DIR = "images"
DATASET_FILE = "dataset.json"  # in the store folder: the LabelOptions the files were written with
DATASET_KEYS = ("format", "copy_images", "polygons", "multipart")


def dataset_writer(job: LabelJob) -> DatasetWriter:
    """The writer of the job's format (the only place that maps a format name to a writer)."""
    opts = job.options
    if opts.format == "coco":
        info = {"image_root": job.input_id} if opts.copy_images == "none" else None
        return CocoWriter(job.out / "annotations.json", job.classes, polygons=opts.polygons, info=info)
    if opts.format == "jsonl":
        return JsonlWriter(job.out / "annotations.jsonl")
    image_dir = None if opts.copy_images == "none" else IMAGES_DIR
    return YoloWriter(job.out, job.classes, multipart=opts.multipart, image_dir=image_dir)


def image_name(item: LabelItem, mode: CopyMode) -> str:
    """The image's file name in the dataset: ``images/<rel>``, or ``<rel>`` when it is not copied."""
    return item.rel if mode == "none" else f"{IMAGES_DIR}/{item.rel}"


def assemble(job: LabelJob) -> None:
    """Write the dataset files from the records (one record in memory at a time)."""
    report, mode = job.report, job.options.copy_images
    writer = dataset_writer(job)
    try:
        for item in progress_bar(job.items, len(job.items), "writing dataset", job.options.progress):
            record = job.store.read(item)
            if record is None:
                writer.discard(image_name(item, mode))
                continue
            try:
                file_name = place_image(item, job.out, mode)
            except OSError as e:  # e.g. the source vanished since it was labeled
                report.failed[item.name] = f"could not copy into the dataset: {e}"
                continue
            report.images_written += 1
            writer.add({**record, "file_name": file_name})
    except BaseException:
        writer.abort()
        raise
    report.files.append(writer.close())
    report.instances_written = writer.num_instances
    written = {key: getattr(job.options, key) for key in DATASET_KEYS}
    atomic_write_text(job.store.root / DATASET_FILE, dumps(written) + "\n")


def _already_placed(item: LabelItem, dest: Path, mode: CopyMode) -> bool:
    if mode == "symlink":
        return dest.is_symlink() and os.readlink(dest) == str(item.path.resolve())
    if not dest.is_file() or dest.is_symlink():
        return False
    if mode == "hardlink" and os.path.samefile(item.path, dest):
        return True
    s, d = item.stat(), dest.stat()  # a copy is newer than its source unless the source changed since
    return s["size"] == d.st_size and d.st_mtime_ns >= s["mtime_ns"]


def place_image(item: LabelItem, out: Path, mode: CopyMode) -> str:
    """Put the source into the dataset (unless ``mode == "none"``); return its dataset file name."""
    name = image_name(item, mode)
    if mode == "none":
        return name
    parent, leaf = name.rsplit("/", 1)
    dest = safe_output_path(out, parent) / leaf  # the leaf itself is replaced, never written through
    if _already_placed(item, dest, mode):
        return name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mode == "copy":
        item.copy_to(dest)
        return name
    src = item.path.resolve()
    tmp = dest.with_name(f".{leaf}.{os.getpid()}{TMP_SUFFIX}")
    tmp.unlink(missing_ok=True)
    try:
        if mode == "symlink":
            os.symlink(src, tmp)
        elif mode == "hardlink":
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return name
