"""A labeling job and its phases, shared by every backend so that all make the same records.

:func:`prepare_job` checks the inputs and opens the output store; :func:`pending_items` yields
the images without a valid record; :func:`predict_chunk` loads, predicts and serialises one
chunk of them (one predictor batch; this is what a Ray worker runs); :func:`store_results`
writes the records; :func:`~grounded_sam.labeling.assemble.assemble` then writes the dataset.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from grounded_sam.export.records import detections_to_record
from grounded_sam.export.safe_io import safe_output_path
from grounded_sam.export.yolo import yolo_label_name
from grounded_sam.labeling.options import ImagePrompts, LabelOptions
from grounded_sam.labeling.sources import LabelItem, Listing, list_local_items
from grounded_sam.labeling.store import STORE_DIR, RecordStore, StoredRecord, job_fingerprint

__all__ = ["PredictFn", "PredictBatchFn", "LabelReport", "LabelJob", "ItemResult", "prepare_job", "pending_items",
           "predict_chunk", "store_results", "progress_bar", "JobProgress", "job_progress"]

PredictFn = Callable[[np.ndarray], sv.Detections]
PredictBatchFn = Callable[[list[np.ndarray]], list[sv.Detections]]

OUTPUT_NAMES = (STORE_DIR, f"{STORE_DIR}/records", "images", "labels", "annotations.json", "annotations.jsonl",
                "data.yaml")  # what a job may write in its output folder
SHOWN_OTHERS = 5  # files the summary names of those left out for their extension


@dataclass
class LabelReport:
    """What a labeling run did."""

    output_folder: Path
    format: str
    total: int = 0  # images found
    labeled: int = 0  # predicted in this run
    skipped: int = 0  # valid records from an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason
    images_written: int = 0  # images in the assembled dataset
    instances_written: int = 0  # annotations / label lines in the dataset
    files: list[Path] = field(default_factory=list)  # main dataset files
    retried: dict[str, int] = field(default_factory=dict)  # path -> times re-run after its worker was lost
    unit: str = "images"  # what total / labeled count ("videos" for a video job)
    kept_reviewed: int = 0  # reviewed records an overwrite kept (counted in skipped when still valid)
    other_files: list[str] = field(default_factory=list)  # files left out for their extension (relative paths)
    extensions: tuple[str, ...] = ()  # the extensions looked for

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        retried = f", {len(self.retried)} retried after a lost worker" if self.retried else ""
        retried += f", {self.kept_reviewed} reviewed kept" if self.kept_reviewed else ""
        lines = [
            f"{self.total} {self.unit}: {self.labeled} labeled, {self.skipped} already done, {len(self.failed)} failed"
            f"{retried}; {self.instances_written} instances in {self.images_written} images -> "
            f"{self.output_folder} ({self.format})"
        ]
        lines += [f"  failed: {p}: {reason}" for p, reason in self.failed.items()]
        lines += [f"  retried: {p} ({n}x)" for p, n in self.retried.items()]
        if self.other_files:
            shown = ", ".join(self.other_files[:SHOWN_OTHERS])
            more = f" and {len(self.other_files) - SHOWN_OTHERS} more" if len(self.other_files) > SHOWN_OTHERS else ""
            lines.append(f"  not labeled: {len(self.other_files)} file(s) whose extension is not "
                         f"{', '.join(self.extensions)} ({shown}{more})")
        return "\n".join(lines)


@dataclass(frozen=True)
class ItemResult:
    """One image's outcome: its serialised :class:`StoredRecord` (``entry``) or why it failed (``error``)."""

    name: str
    rel: str
    entry: str | None
    error: str | None


@dataclass
class LabelJob:
    """A prepared job (:func:`prepare_job`): inputs, output store, options and report."""

    items: list[LabelItem]
    out: Path
    store: RecordStore
    classes: list[str]
    options: LabelOptions
    input_id: str  # the input folder as the fingerprint and COCO ``info.image_root`` name it
    report: LabelReport


def _class_names(classes: Any) -> list[str]:
    names = list(classes.classes()) if hasattr(classes, "classes") else list(classes)
    if isinstance(classes, str) or not names or not all(isinstance(c, str) and c for c in names):
        raise ValueError(f"classes must be a non-empty list of class names, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique (they become category ids), got {names}")
    return names


def prepare_job(
    input_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    classes: Sequence[str] | Any,
    options: LabelOptions,
    *,
    fingerprint: Mapping[str, Any] | None = None,
    listing: Listing | None = None,
) -> LabelJob:
    """Check the arguments, list the inputs and open the output store (its manifest) for a job.

    ``classes``: names or an ontology with ``classes()``. ``fingerprint``: the predictor's
    settings (JSON-able), see :mod:`~grounded_sam.labeling.store`. ``listing``: inputs listed by
    the caller (e.g. a remote folder); by default the local ``input_folder`` is listed.
    """
    names = _class_names(classes)
    out = Path(output_folder).resolve()
    if listing is None:
        listing = list_local_items(input_folder, options.extension, options.recursive, out)
    for name in OUTPUT_NAMES:  # raises UnsafePathError if a symlinked entry points outside
        safe_output_path(out, name)
    config = job_fingerprint(names, fingerprint, listing.input_id)
    out.mkdir(parents=True, exist_ok=True)
    report = LabelReport(output_folder=out, format=options.format, total=len(listing.items),
                         other_files=list(listing.others), extensions=listing.extensions)
    store = RecordStore.open(out, config, options.overwrite,
                             options.discard_reviewed)
    report.kept_reviewed = store.kept_reviewed

    items, seen = [], {}
    for item in listing.items:
        if options.format == "yolo":
            label = yolo_label_name(item.rel, image_dir=None)
            if label in seen:
                report.failed[item.name] = f"its label file {label} would collide with {seen[label]!r}"
                continue
            seen[label] = item.rel
        items.append(item)
    return LabelJob(items, out, store, names, options, listing.input_id, report)


def progress_bar(iterable: Any, total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", disable=not enabled)


class JobProgress:
    """The driver's progress line: inputs done, failed and retried (``tqdm`` on stderr)."""

    def __init__(self, report: LabelReport, total: int, desc: str, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.report, self.enabled = report, enabled
        self.bar = tqdm(total=total, desc=desc, unit=report.unit[:-1] if report.unit.endswith("s") else report.unit,
                        disable=not enabled)
        self._show()

    def _show(self) -> None:
        self.bar.set_postfix(failed=len(self.report.failed), retried=len(self.report.retried), refresh=False)

    def advance(self, n: int) -> None:
        self._show()
        self.bar.update(n)

    def fail(self, names: Sequence[str], why: str) -> None:
        """Report ``names`` failed for ``why`` and count them done."""
        self.report.failed.update(dict.fromkeys(names, why))
        self.advance(len(names))

    def retry(self, names: Sequence[str], why: str) -> None:
        """Count ``names`` as retried (their worker was lost) and say so."""
        for name in names:
            self.report.retried[name] = self.report.retried.get(name, 0) + 1
        if self.enabled:
            self.bar.write(f"worker lost ({why}); re-running {len(names)} {self.report.unit}: {', '.join(names)}")
        self._show()
        self.bar.refresh()

    def close(self) -> None:
        self._show()
        self.bar.close()


@contextlib.contextmanager
def job_progress(report: LabelReport, total: int, desc: str, enabled: bool) -> Iterator[JobProgress]:
    progress = JobProgress(report, total, desc, enabled)
    try:
        yield progress
    finally:
        progress.close()


def pending_items(job: LabelJob, desc: str = "labeling") -> Iterator[LabelItem]:
    """The job's items to predict, in order: those without a valid record, and reviewed ones whose
    model output is missing (after an overwrite); the others are counted as skipped."""
    for item in progress_bar(job.items, len(job.items), desc, job.options.progress):
        stored = job.store.read_stored(item)
        if stored is not None and (not stored.reviewed or stored.model is not None):
            job.report.skipped += 1
        else:
            yield item


def predict_chunk(items: Sequence[LabelItem], predict_fn: PredictFn | None, predict_batch_fn: PredictBatchFn | None,
                  classes: list[str], digest: str, prompts: ImagePrompts | None = None) -> list[ItemResult]:
    """Load, predict and serialise one chunk of images (one batch); a bad image fails alone.

    ``prompts``: keyword arguments for the predictor per image; ``predict_batch_fn`` then gets
    each keyword as a list with one value (or ``None``) per image.
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
    kwargs = [dict(prompts.for_image(it.rel)) if prompts else {} for it, _ in batch]
    keys = sorted(set().union(*kwargs))
    results: list[Any] | None = None
    if predict_batch_fn is not None and (len(batch) > 1 or predict_fn is None):
        try:
            results = list(predict_batch_fn([im for _, im in batch], **{k: [kw.get(k) for kw in kwargs] for k in keys}))
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
            dets = results[k] if results is not None else predict_fn(image, **kwargs[k])  # type: ignore[misc]
            step = "invalid detections"
            h, w = image.shape[:2]
            record = detections_to_record(dets, item.rel, w, h, classes)
            step = "could not stat its source"
            entry = StoredRecord(digest=digest, rel=item.rel, source=item.stat(), record=record)
            out.append(ItemResult(item.name, item.rel, entry.to_json(), None))
        except Exception as e:  # noqa: BLE001
            out.append(ItemResult(item.name, item.rel, None, f"{step}: {type(e).__name__}: {e}"))
    return out


def _keep_review(store: RecordStore, entry: str) -> str:
    """A fresh record, or, for an image reviewed in the app (same source), the reviewed record with
    the fresh instances as its model output."""
    fresh = StoredRecord.from_json(entry)
    old = store.read_rel(fresh.rel)
    if old is None or not old.reviewed or old.source != fresh.source:
        return entry
    return StoredRecord(fresh.digest, fresh.rel, fresh.source, old.record, model=fresh.record["instances"]).to_json()


def store_results(job: LabelJob, results: Sequence[ItemResult]) -> None:
    """Write the records of :func:`predict_chunk` results (atomically) and count them in the report."""
    for r in results:
        if r.entry is None:
            job.report.failed[r.name] = r.error or "failed"
            continue
        try:
            job.store.write(r.rel, _keep_review(job.store, r.entry))
            job.report.labeled += 1
        except OSError as e:
            job.report.failed[r.name] = f"could not write its record: {type(e).__name__}: {e}"
