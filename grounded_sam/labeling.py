"""Resumable dataset labeling: a folder of images -> COCO / YOLO-seg / JSONL dataset.

How a job runs (:func:`label_folder`):

1. The input images are listed (:func:`~grounded_sam.files.list_images`, sorted by relative
   path; the output folder is left out when it lies inside the input folder).
2. The images without a valid record are taken in consecutive chunks of ``batch_size``; each
   chunk is loaded, predicted (:func:`predict_chunk`) and, as soon as it is done, each image is
   written as a **record** to ``output/.grounded_sam/records/<xx>/<sha256 of the relative path>.json``
   (temp file + ``os.replace``), masks as compressed RLE. A record is valid when it parses,
   names the same relative path and fingerprint, and the source file still has the size and
   mtime it had. A rerun skips valid records, so a killed job resumes where it stopped.
3. Bad inputs (corrupt, zero-byte, unsupported, a predictor error on that image, detections
   that do not fit the image) are reported in :attr:`LabelReport.failed` (path -> reason) and
   skipped; they are retried on the next run. ``KeyboardInterrupt`` stops the job (finished
   records stay).
4. The dataset is then assembled from the records only, in sorted order with ids counted from
   1, so a killed-and-resumed job writes byte-identical files to an uninterrupted one:

   - ``format="coco"``: ``annotations.json`` (:class:`~grounded_sam.export.CocoWriter`);
   - ``format="yolo"``: ``labels/<relative path>.txt`` (one line per instance, an empty file for
     an image without detections) and ``data.yaml``;
   - ``format="jsonl"``: ``annotations.jsonl``, one record a line;
   - ``copy_images``: ``"copy"`` (default), ``"hardlink"`` (falls back to copying across
     devices), ``"symlink"`` (absolute links to the sources) or ``"none"`` puts the source
     files (original bytes) under ``images/<relative path>``. COCO ``file_name`` and JSONL
     ``file_name`` are relative to the output folder (``images/...``); with ``"none"`` they
     are relative to the input folder, which the COCO ``info.image_root`` names. YOLO label
     names that would collide (``a.jpg`` and ``a.png`` -> ``labels/a.txt``) fail the later image.

The phases are public (:func:`prepare_job`, :func:`pending_items`, :func:`predict_chunk`,
:func:`store_results`, :func:`assemble`) so that other backends (:mod:`grounded_sam.ray_backend`)
make the same records and the same files. Memory holds the list of paths and one batch of
images, nothing per finished image. The job's **fingerprint** (classes, ``fingerprint`` dict from the pipeline such as ontology and
model settings, input folder) is stored in ``output/.grounded_sam/manifest.json``; a rerun
with a different one raises :class:`LabelingConfigError` unless ``overwrite=True``, which
drops the old records and labels everything again. One job per output folder at a time.
Output paths never leave ``output_folder`` (:func:`~grounded_sam.safe_io.safe_output_path`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import supervision as sv

from grounded_sam.export import CocoWriter, JsonlWriter, detections_to_record, dumps, write_data_yaml, yolo_lines
from grounded_sam.files import list_images
from runtime.images import load_image
from grounded_sam.safe_io import TMP_SUFFIX, atomic_copy, atomic_write_text, safe_output_path

__all__ = ["label_folder", "LabelReport", "LabelingConfigError", "STORE_DIR", "LabelItem", "LabelJob", "ItemResult",
           "prepare_job", "pending_items", "predict_chunk", "store_results", "assemble"]

STORE_DIR = ".grounded_sam"
STORE_VERSION = 1
FORMATS = ("coco", "yolo", "jsonl")
COPY_MODES = ("copy", "hardlink", "symlink", "none")

PredictFn = Callable[[np.ndarray], sv.Detections]
PredictBatchFn = Callable[[list[np.ndarray]], list[sv.Detections]]


class LabelingConfigError(ValueError):
    """The output folder holds records made with a different ontology/config."""


@dataclass
class LabelReport:
    """What a :func:`label_folder` run did."""

    output_folder: Path
    format: str
    total: int = 0  # images found
    labeled: int = 0  # predicted in this run
    skipped: int = 0  # valid records from an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason
    images_written: int = 0  # images in the assembled dataset
    instances_written: int = 0  # annotations / label lines in the dataset
    files: list[Path] = field(default_factory=list)  # main dataset files

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        lines = [
            f"{self.total} images: {self.labeled} labeled, {self.skipped} already done, {len(self.failed)} failed; "
            f"{self.instances_written} instances in {self.images_written} images -> "
            f"{self.output_folder} ({self.format})"
        ]
        lines += [f"  failed: {p}: {reason}" for p, reason in self.failed.items()]
        return "\n".join(lines)


@dataclass(frozen=True)
class LabelItem:
    """One input image: where it is and its POSIX path relative to the input folder."""

    path: Path  # source file
    rel: str

    @property
    def name(self) -> str:  # how reports name it
        return str(self.path)

    def stat(self) -> dict[str, int]:
        st = self.path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def load(self) -> np.ndarray:
        return load_image(self.path, name=self.name)

    def copy_to(self, dest: Path) -> None:
        atomic_copy(self.path, dest)


class ItemResult(NamedTuple):
    """One image's outcome: its serialised record (``entry``) or why it failed (``error``)."""

    name: str
    rel: str
    entry: str | None
    error: str | None


@dataclass
class LabelJob:
    """A prepared job (:func:`prepare_job`): inputs, output store, dataset settings and report."""

    items: list[LabelItem]
    out: Path
    store: Path
    digest: str
    classes: list[str]
    format: str
    copy_images: str
    polygons: bool
    multipart: Literal["merge", "largest"]
    input_id: str  # the input folder as the fingerprint and COCO ``info.image_root`` name it
    report: LabelReport
    progress: bool


def _class_names(classes: Any) -> list[str]:
    names = list(classes.classes()) if hasattr(classes, "classes") else list(classes)
    if isinstance(classes, str) or not names or not all(isinstance(c, str) and c for c in names):
        raise ValueError(f"classes must be a non-empty list of class names, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique (they become category ids), got {names}")
    return names


def _fingerprint(classes: list[str], extra: Mapping[str, Any] | None, input_root: str) -> dict[str, Any]:
    try:
        extra_json = json.loads(json.dumps(dict(extra or {}), sort_keys=True, default=str))
    except (TypeError, ValueError) as e:
        raise ValueError(f"fingerprint must be JSON-serialisable: {e}") from e
    return {"classes": classes, "config": extra_json, "input_folder": input_root}


def _digest(fp: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()


def _check_manifest(store: Path, fp: dict[str, Any], overwrite: bool) -> str:
    manifest = store / "manifest.json"
    digest = _digest(fp)
    old = None
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
    if old is not None and old.get("digest") != digest and not overwrite:
        before = old.get("fingerprint", {})
        changed = [k for k in fp if before.get(k) != fp[k]] or ["store version"]
        diff = "; ".join(f"{k}: was {_short(before.get(k))}, now {_short(fp.get(k))}" for k in changed)
        raise LabelingConfigError(
            f"{store.parent} was labeled with a different {', '.join(changed)} ({diff}). Pass overwrite=True "
            "(CLI: --overwrite) to relabel everything, or choose another output folder."
        )
    if overwrite or old is None or old.get("digest") != digest:
        shutil.rmtree(store / "records", ignore_errors=True)
        atomic_write_text(manifest, dumps({"version": STORE_VERSION, "digest": digest, "fingerprint": fp}) + "\n")
    return digest


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _record_path(store: Path, rel: str) -> Path:
    h = hashlib.sha256(rel.encode("utf-8")).hexdigest()
    return store / "records" / h[:2] / f"{h[2:42]}.json"


def _read_record(store: Path, item: LabelItem, digest: str) -> dict[str, Any] | None:
    """The item's record if it exists and is still valid, else ``None``."""
    try:
        data = json.loads(_record_path(store, item.rel).read_text(encoding="utf-8"))
        valid = (
            data.get("version") == STORE_VERSION
            and data.get("digest") == digest
            and data.get("rel") == item.rel
            and data.get("source") == item.stat()
        )
        return data["record"] if valid else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _yolo_label_name(rel: str) -> str:
    return "labels/" + str(Path(rel).with_suffix(".txt").as_posix())


def _check_outputs(out: Path, names: Sequence[str]) -> None:
    for name in names:  # raises UnsafePathError if a symlinked entry points outside
        safe_output_path(out, name)


def predict_chunk(items: Sequence[LabelItem], predict_fn: PredictFn | None, predict_batch_fn: PredictBatchFn | None,
                  classes: list[str], digest: str) -> list[ItemResult]:
    """Load, predict and serialise one chunk of images (one batch); a bad image fails alone.

    The same function runs in the local loop and in Ray workers, so both make the same records.
    """
    out: list[ItemResult] = []
    batch: list[tuple[LabelItem, np.ndarray]] = []
    for item in items:
        try:
            batch.append((item, item.load()))
        except (ValueError, OSError) as e:
            out.append(ItemResult(item.name, item.rel, None, str(e)))
    if not batch:
        return out
    results: list[Any] | None = None
    if predict_batch_fn is not None and (len(batch) > 1 or predict_fn is None):
        try:
            results = list(predict_batch_fn([im for _, im in batch]))
            if len(results) != len(batch):
                raise ValueError(f"predict_batch_fn returned {len(results)} results for {len(batch)} images")
        except Exception as e:  # noqa: BLE001 - isolate the failing image one by one
            if predict_fn is None:
                return out + [ItemResult(it.name, it.rel, None, f"prediction failed: {type(e).__name__}: {e}")
                              for it, _ in batch]
            results = None
    for k, (item, image) in enumerate(batch):
        step = "prediction failed"
        try:  # every failure is reported against its image; none aborts the job
            dets = results[k] if results is not None else predict_fn(image)  # type: ignore[misc]
            step = "invalid detections"
            h, w = image.shape[:2]
            record = detections_to_record(dets, item.rel, w, h, classes)
            step = "could not stat its source"
            entry = {"version": STORE_VERSION, "digest": digest, "rel": item.rel, "source": item.stat(), "record": record}
            out.append(ItemResult(item.name, item.rel, dumps(entry), None))
        except Exception as e:  # noqa: BLE001
            out.append(ItemResult(item.name, item.rel, None, f"{step}: {type(e).__name__}: {e}"))
    return out


def store_results(job: LabelJob, results: Sequence[ItemResult]) -> None:
    """Write the records of :func:`predict_chunk` results (atomically) and count them in the report."""
    for r in results:
        if r.entry is None:
            job.report.failed[r.name] = r.error or "failed"
            continue
        try:
            atomic_write_text(_record_path(job.store, r.rel), r.entry)
            job.report.labeled += 1
        except OSError as e:
            job.report.failed[r.name] = f"could not write its record: {type(e).__name__}: {e}"


def _already_placed(item: LabelItem, dest: Path, mode: str) -> bool:
    if mode == "symlink":
        return dest.is_symlink() and os.readlink(dest) == str(item.path.resolve())
    if not dest.is_file() or dest.is_symlink():
        return False
    if mode == "hardlink" and os.path.samefile(item.path, dest):
        return True
    s, d = item.stat(), dest.stat()  # a copy is newer than its source unless the source changed since
    return s["size"] == d.st_size and d.st_mtime_ns >= s["mtime_ns"]


def _place_image(item: LabelItem, out: Path, mode: str) -> str:
    """Put the source under ``images/`` (unless ``mode == "none"``); return its dataset file name."""
    if mode == "none":
        return item.rel
    name = "images/" + item.rel
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


def _progress(iterable: Any, total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", disable=not enabled)


def label_folder(
    predict_fn: PredictFn | None,
    input_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    classes: Sequence[str] | Any,
    extension: str | Sequence[str] | None = ".jpg",
    format: Literal["coco", "yolo", "jsonl"] = "coco",  # noqa: A002 - the public name
    recursive: bool = False,
    batch_size: int = 1,
    predict_batch_fn: PredictBatchFn | None = None,
    progress: bool = True,
    *,
    overwrite: bool = False,
    fingerprint: Mapping[str, Any] | None = None,
    copy_images: Literal["copy", "hardlink", "symlink", "none"] = "copy",
    polygons: bool = False,
    multipart: Literal["merge", "largest"] = "merge",
) -> LabelReport:
    """Label every image of ``input_folder`` into a dataset in ``output_folder`` (module docs).

    ``predict_fn(image)`` / ``predict_batch_fn(images)`` take ``(H, W, 3)`` uint8 RGB arrays and
    return ``sv.Detections`` whose ``class_id`` indexes ``classes`` (a list of names or an
    ontology with ``classes()``). ``polygons``: COCO polygons instead of RLE. ``multipart``: how
    YOLO-seg joins multi-part masks. Raises ``ValueError`` for bad arguments,
    :class:`LabelingConfigError` for a changed fingerprint and
    :class:`~grounded_sam.safe_io.UnsafePathError` for an output folder whose entries link outside it.
    """
    if predict_fn is None and predict_batch_fn is None:
        raise ValueError("give predict_fn or predict_batch_fn")
    job = prepare_job(input_folder, output_folder, classes, extension, format, recursive, batch_size,
                      overwrite=overwrite, fingerprint=fingerprint, copy_images=copy_images, polygons=polygons,
                      multipart=multipart, progress=progress)
    pending = pending_items(job, "labeling", progress)
    for chunk in iter(lambda: list(itertools.islice(pending, batch_size)), []):  # consecutive chunks of pending items
        store_results(job, predict_chunk(chunk, predict_fn, predict_batch_fn, job.classes, job.digest))
    assemble(job)
    return job.report


def prepare_job(
    input_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    classes: Sequence[str] | Any,
    extension: str | Sequence[str] | None = ".jpg",
    format: str = "coco",  # noqa: A002 - the public name
    recursive: bool = False,
    batch_size: int = 1,
    *,
    overwrite: bool = False,
    fingerprint: Mapping[str, Any] | None = None,
    copy_images: str = "copy",
    polygons: bool = False,
    multipart: Literal["merge", "largest"] = "merge",
    progress: bool = True,
    listing: tuple[str, list[LabelItem]] | None = None,
) -> LabelJob:
    """Check the arguments, list the inputs and open the output store (its manifest) for a job.

    ``listing``: ``(input id, items)`` listed by the caller (e.g. a remote folder); by default
    the local ``input_folder`` is listed with :func:`~grounded_sam.files.list_images`.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if copy_images not in COPY_MODES:
        raise ValueError(f"copy_images must be one of {COPY_MODES}, got {copy_images!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    names = _class_names(classes)
    out = Path(output_folder).resolve()
    if listing is None:
        in_root = Path(input_folder).resolve()
        if out == in_root:
            raise ValueError(f"output_folder must differ from input_folder ({in_root})")
        paths = list_images(in_root, extension, recursive=recursive, exclude=out)
        input_id, listed = str(in_root), [LabelItem(p, p.relative_to(in_root).as_posix()) for p in paths]
    else:
        input_id, listed = listing
    _check_outputs(out, [STORE_DIR, f"{STORE_DIR}/records", "images", "labels",
                         "annotations.json", "annotations.jsonl", "data.yaml"])
    out.mkdir(parents=True, exist_ok=True)
    store = out / STORE_DIR
    report = LabelReport(output_folder=out, format=format, total=len(listed))
    digest = _check_manifest(store, _fingerprint(names, fingerprint, input_id), overwrite)

    items, seen = [], {}
    for item in listed:
        if format == "yolo":
            label = _yolo_label_name(item.rel)
            if label in seen:
                report.failed[item.name] = f"its label file {label} would collide with {seen[label]!r}"
                continue
            seen[label] = item.rel
        items.append(item)
    return LabelJob(items, out, store, digest, names, format, copy_images, polygons, multipart, input_id, report, progress)


def pending_items(job: LabelJob, desc: str = "labeling", progress: bool = True) -> Iterator[LabelItem]:
    """The job's items without a valid record, in order (the others are counted as skipped)."""
    for item in _progress(job.items, len(job.items), desc, progress):
        if _read_record(job.store, item, job.digest) is not None:
            job.report.skipped += 1
        else:
            yield item


def assemble(job: LabelJob) -> None:
    """Write the dataset files from the records (one record in memory at a time)."""
    out, store, digest, classes, format, report = job.out, job.store, job.digest, job.classes, job.format, job.report
    copy_images, items = job.copy_images, job.items
    writer: CocoWriter | JsonlWriter | None = None
    if format == "coco":
        info = {"image_root": job.input_id} if copy_images == "none" else None
        writer = CocoWriter(out / "annotations.json", classes, polygons=job.polygons, info=info)
    elif format == "jsonl":
        writer = JsonlWriter(out / "annotations.jsonl")
    try:
        for item in _progress(items, len(items), "writing dataset", job.progress):
            record = _read_record(store, item, digest)
            if record is None:
                if format == "yolo":  # a stale label from an earlier run must not outlive its record
                    safe_output_path(out, _yolo_label_name(item.rel)).unlink(missing_ok=True)
                continue
            try:
                file_name = _place_image(item, out, copy_images)
            except OSError as e:  # e.g. the source vanished since it was labeled
                report.failed[item.name] = f"could not copy into the dataset: {e}"
                continue
            report.images_written += 1
            if isinstance(writer, CocoWriter):
                writer.add_image(file_name, record["width"], record["height"], record["instances"])
            elif isinstance(writer, JsonlWriter):
                writer.add({**record, "file_name": file_name})
                report.instances_written += len(record["instances"])
            else:
                lines = yolo_lines(record["instances"], record["width"], record["height"], multipart=job.multipart)
                report.instances_written += len(lines)
                label = safe_output_path(out, _yolo_label_name(item.rel))
                text = "".join(line + "\n" for line in lines)
                if not (label.is_file() and label.read_text(encoding="utf-8") == text):
                    atomic_write_text(label, text)
    except BaseException as e:
        if isinstance(writer, CocoWriter):
            writer.abort()
        elif isinstance(writer, JsonlWriter):
            writer.close(e)
        raise
    if isinstance(writer, CocoWriter):
        report.files.append(writer.close())
        report.instances_written = writer.num_annotations
    elif isinstance(writer, JsonlWriter):
        writer.close()
        report.files.append(writer.path)
    else:
        report.files.append(write_data_yaml(out / "data.yaml", classes, out))
