"""Dataset labeling on a Ray cluster, with the records and files of the local backend.

:func:`label_folder_ray` runs the phases of :mod:`grounded_sam.labeling.job` with the prediction
step spread over a pool of Ray actors (:mod:`~grounded_sam.labeling.ray_pool`):

1. The driver lists the inputs, opens the output store and keeps the images without a valid
   record (resume is ours: finished images never reach Ray), cut into the same consecutive
   chunks of ``batch_size`` that the local backend predicts as one batch.
2. ``num_workers`` actors each build the predictor once, from a picklable ``factory`` (for
   a pipeline: :class:`PipelineFactory`, the constructor arguments; models are never
   pickled). Each chunk is one actor task: a small JSON list of paths goes out,
   :func:`~grounded_sam.labeling.job.predict_chunk` loads, predicts and serialises each image's
   record (masks as COCO RLE strings) and only those strings (or the reason an image failed)
   come back. The job's constants (classes, digest, prompts, filesystem) are put in the object
   store once.
3. The driver writes each record as its chunk comes back
   (:func:`~grounded_sam.labeling.job.store_results`, atomic), so a killed driver keeps what
   reached it and a rerun resumes. Only the driver writes to ``output_folder``: workers need no
   shared output storage, only read access to the inputs.
4. A worker process or node that dies costs only its in-flight chunks: they are given to
   another worker and counted in :attr:`LabelReport.retried`; Ray restarts the actor
   (``max_restarts``; see :mod:`~grounded_sam.labeling.ray_pool` for the limits).
5. The dataset files are assembled locally by :func:`~grounded_sam.labeling.assemble.assemble`.

Same chunks, same function, same records, same assembly: for a deterministic predictor the
files are byte-identical to :func:`~grounded_sam.labeling.local.label_folder`'s, however often
a chunk was retried. That is also why the actors decode the images with the local loader (EXIF
orientation, CMYK, 16-bit, alpha handled as :func:`~gsam_runtime.images.load_image` does).

Inputs: a local folder (shared with the workers on a multi-node cluster), a ``file://`` URI,
or any URI pyarrow understands (``s3://``, ``gs://``, ``hdfs://``, ``abfs://`` ...), or a path
on an explicit ``filesystem`` (a ``pyarrow.fs.FileSystem``), listed by
:mod:`~grounded_sam.labeling.sources`. Remote images are listed once by the driver (size and
mtime from the listing decide whether a record is still valid), read by the workers and copied
into ``images/`` by the driver (``copy_images="copy"`` or ``"none"``).

Ray (:class:`~grounded_sam.labeling.options.RayOptions`): ``ray.init(address=address)`` is called
only when Ray is not initialised yet; an existing session (``ray.init`` by the caller, a Ray
job) is used as it is. Ray is imported only here, when a job runs.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from grounded_sam.labeling.assemble import assemble
from grounded_sam.labeling.job import (
    ItemResult, LabelJob, LabelReport, job_progress, pending_items, predict_chunk, prepare_job, store_results,
)
from grounded_sam.labeling.options import ImagePrompts, LabelOptions, RayOptions, split_options
from grounded_sam.labeling.ray_pool import PoolTask, import_ray, init_ray, run_pool
from grounded_sam.labeling.sources import LabelItem, Listing, RemoteItem, is_remote, list_remote_images, local_folder

__all__ = ["label_folder_ray", "PipelineFactory"]


@dataclass(frozen=True)
class PipelineFactory:
    """Picklable recipe for a :class:`~grounded_sam.pipeline.Pipeline`: its constructor kwargs."""

    kwargs: Mapping[str, Any]

    def __call__(self) -> Any:
        from grounded_sam.pipeline import Pipeline

        return Pipeline(**self.kwargs)


def _encode(item: LabelItem) -> list[Any]:
    if isinstance(item, RemoteItem):
        return [str(item.path), item.rel, item.uri, item.size, item.mtime_ns]
    return [str(item.path), item.rel]


def _decode(row: list[Any], filesystem: Any) -> LabelItem:
    if len(row) == 2:
        return LabelItem(Path(row[0]), row[1])
    path, rel, uri, size, mtime_ns = row
    return RemoteItem(PurePosixPath(path), rel, uri=uri, size=size, mtime_ns=mtime_ns, fs=filesystem)


@dataclass(frozen=True)
class _ChunkContext:
    """What every chunk of a job shares (put in the object store once)."""

    classes: list[str]
    digest: str
    filesystem: Any = None
    prompts: ImagePrompts | None = None


def _predict_chunk_task(model: Any, ctx: _ChunkContext, rows: str) -> list[ItemResult]:
    """A pool task (runs in an actor): one chunk of images -> their serialised records."""
    predict_fn, predict_batch_fn = getattr(model, "predict", None), getattr(model, "predict_batch", None)
    if predict_fn is None and predict_batch_fn is None:
        raise TypeError(f"the factory made a {type(model).__name__}, which has no predict / predict_batch")
    items = [_decode(row, ctx.filesystem) for row in json.loads(rows)]
    return predict_chunk(items, predict_fn, predict_batch_fn, ctx.classes, ctx.digest, ctx.prompts)


def label_folder_ray(
    factory: Callable[[], Any],
    input_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    classes: Sequence[str] | Any,
    options: LabelOptions | None = None,
    ray_options: RayOptions | None = None,
    *,
    fingerprint: Mapping[str, Any] | None = None,
    filesystem: Any = None,
    **changes: Any,
) -> LabelReport:
    """:func:`~grounded_sam.labeling.local.label_folder` with the predictions made by Ray actors (module docs).

    ``factory()`` runs once in each actor and returns an object with ``predict(image)`` and/or
    ``predict_batch(images)`` (as ``label_folder`` takes them); it must pickle (e.g.
    :class:`PipelineFactory`, a top-level class or ``functools.partial``). ``ray_options``
    (default :class:`RayOptions`) says where and how many actors run; ``changes`` are field names of
    :class:`LabelOptions` or :class:`RayOptions` (``num_workers=4``). ``filesystem``: a
    ``pyarrow.fs.FileSystem`` the input folder is a path on. The other arguments and the
    returned report are ``label_folder``'s.
    """
    label_changes, ray_changes = split_options(changes, LabelOptions, RayOptions)
    opts = (options or LabelOptions()).update(**label_changes)
    cluster = (ray_options or RayOptions()).update(**ray_changes)
    if not callable(factory):
        raise ValueError(f"factory must be a callable that builds the predictor, got {type(factory).__name__}")
    listing = None
    if is_remote(input_folder, filesystem):
        if opts.copy_images in ("hardlink", "symlink"):
            raise ValueError(f"copy_images={opts.copy_images!r} needs local inputs; "
                             f"use 'copy' or 'none' for {input_folder}")
        input_id, items, filesystem = list_remote_images(os.fspath(input_folder), opts.extension, opts.recursive,
                                                         filesystem)
        listing = Listing(input_id, list(items))
    else:
        input_folder = local_folder(input_folder)
    job = prepare_job(input_folder, output_folder, classes, opts, fingerprint=fingerprint, listing=listing)
    pending = list(pending_items(job, "checking records"))
    if pending:
        size = opts.batch_size
        chunks = [pending[i : i + size] for i in range(0, len(pending), size)]
        _run(job, factory, chunks, cluster, filesystem)
    assemble(job)
    return job.report


def _run(job: LabelJob, factory: Callable[[], Any], chunks: list[list[LabelItem]], cluster: RayOptions,
         filesystem: Any) -> None:
    """Predict ``chunks`` on a Ray actor pool and write each record as its chunk comes back."""
    ray = import_ray()
    init_ray(ray, cluster.address)
    workers = min(cluster.num_workers, len(chunks))
    _warn_if_unschedulable(ray, workers, cluster.num_gpus_per_worker, cluster.num_cpus_per_worker)
    context = _ChunkContext(job.classes, job.store.digest, filesystem, job.options.prompts)
    tasks = [PoolTask(tuple(it.name for it in chunk), _predict_chunk_task, json.dumps([_encode(it) for it in chunk]))
             for chunk in chunks]
    with job_progress(job.report, sum(len(c) for c in chunks), "labeling (ray)", job.options.progress) as bar:

        def done(task: PoolTask, results: list[ItemResult]) -> None:
            store_results(job, results)
            bar.advance(len(results))

        run_pool(ray, factory, context, tasks, cluster, on_result=done,
                 on_fail=lambda task, why: bar.fail(task.names, why),
                 on_retry=lambda task, why: bar.retry(task.names, why))


def _warn_if_unschedulable(ray: Any, workers: int, gpus: float, cpus: float | None) -> None:
    have = ray.cluster_resources()
    need = {"CPU": workers * (1.0 if cpus is None else cpus), "GPU": workers * gpus}
    short = [f"{need[k]:g} {k}s (the cluster has {have.get(k, 0):g})" for k in need
             if need[k] and need[k] > have.get(k, 0) + 1e-9]
    if short:
        warnings.warn(f"{workers} Ray workers need {' and '.join(short)}; they wait until the cluster grows "
                      "(lower --workers or the per-worker resources)", RuntimeWarning, stacklevel=3)
    if gpus == 0 and have.get("GPU", 0) > 0:
        warnings.warn("the cluster has GPUs but num_gpus_per_worker=0: the workers run on CPU", RuntimeWarning,
                      stacklevel=3)
