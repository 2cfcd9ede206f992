"""The local backend: label a folder in this process, one predictor batch at a time."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from typing import Any

from grounded_sam.labeling.assemble import assemble
from grounded_sam.labeling.job import (
    LabelReport, PredictBatchFn, PredictFn, pending_items, predict_chunk, prepare_job, store_results,
)
from grounded_sam.labeling.options import LabelOptions

__all__ = ["label_folder"]


def label_folder(
    predict_fn: PredictFn | None,
    input_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    classes: Sequence[str] | Any,
    options: LabelOptions | None = None,
    *,
    predict_batch_fn: PredictBatchFn | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    **changes: Any,
) -> LabelReport:
    """Label every image of ``input_folder`` into a dataset in ``output_folder`` (:mod:`grounded_sam.labeling`).

    ``predict_fn(image)`` / ``predict_batch_fn(images)`` take ``(H, W, 3)`` uint8 RGB arrays and
    return ``sv.Detections`` whose ``class_id`` indexes ``classes`` (a list of names or an
    ontology with ``classes()``). ``options`` (default :class:`LabelOptions`), with ``changes``
    (its field names, e.g. ``format="yolo"``) applied, say what to label and write.
    ``fingerprint``: the predictor's settings; a rerun with other settings is refused.
    Raises ``ValueError`` for bad arguments, :class:`~grounded_sam.labeling.store.LabelingConfigError`
    for a changed fingerprint and :class:`~grounded_sam.export.safe_io.UnsafePathError` for an
    output folder whose entries link outside it.
    """
    if predict_fn is None and predict_batch_fn is None:
        raise ValueError("give predict_fn or predict_batch_fn")
    opts = (options or LabelOptions()).update(**changes)
    job = prepare_job(input_folder, output_folder, classes, opts, fingerprint=fingerprint)
    pending = pending_items(job, "labeling")
    for chunk in iter(lambda: list(itertools.islice(pending, opts.batch_size)), []):  # consecutive chunks
        store_results(job, predict_chunk(chunk, predict_fn, predict_batch_fn, job.classes, job.store.digest,
                                         opts.prompts))
    assemble(job)
    return job.report
