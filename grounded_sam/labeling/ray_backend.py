"""Dataset labeling on a Ray cluster (Ray Data), with the records and files of the local backend.

:func:`label_folder_ray` runs the phases of :mod:`grounded_sam.labeling.job` with the prediction
step spread over a pool of Ray actors:

1. The driver lists the inputs, opens the output store and keeps the images without a valid
   record (resume is ours: finished images never reach Ray), cut into the same consecutive
   chunks of ``batch_size`` that the local backend predicts as one batch.
2. ``ray.data.from_items`` (one row per chunk: a small JSON list of paths) ->
   ``map_batches(_LabelWorker, compute=ActorPoolStrategy(size=num_workers), num_gpus=...,
   num_cpus=..., batch_size=1)``. Each actor builds its predictor once, from a picklable
   ``factory`` (for ``GroundedSAM``: :class:`PipelineFactory`, the constructor arguments; models
   are never pickled), and runs :func:`~grounded_sam.labeling.job.predict_chunk` on each chunk:
   load, predict and serialise each image's record (masks as COCO RLE strings). Only those
   small strings (or the reason an image failed) travel back through the object store.
3. The driver writes each record as its block arrives
   (:func:`~grounded_sam.labeling.job.store_results`, atomic), so a killed job keeps what
   reached it and a rerun resumes. Only the driver writes to ``output_folder``: workers need no
   shared output storage, only read access to the inputs.
4. The dataset files are assembled locally by :func:`~grounded_sam.labeling.assemble.assemble`.

Same chunks, same function, same records, same assembly: for a deterministic predictor the
files are byte-identical to :func:`~grounded_sam.labeling.local.label_folder`'s. That is also
why the actors decode the images with the local loader (EXIF orientation, CMYK, 16-bit, alpha handled
as :func:`~runtime.images.load_image` does) rather than ``ray.data.read_images``.

Inputs: a local folder (shared with the workers on a multi-node cluster), a ``file://`` URI,
or any URI pyarrow understands (``s3://``, ``gs://``, ``hdfs://``, ``abfs://`` ...), or a path
on an explicit ``filesystem`` (a ``pyarrow.fs.FileSystem``), listed by
:mod:`~grounded_sam.labeling.sources`. Remote images are listed once by the driver (size and
mtime from the listing decide whether a record is still valid), read by the workers and copied
into ``images/`` by the driver (``copy_images="copy"`` or ``"none"``).

Ray (:class:`~grounded_sam.labeling.options.RayOptions`): ``ray.init(address=address)`` is called
only when Ray is not initialised yet; an existing session (``ray.init`` by the caller, a Ray
job) is used as it is. The pipeline has no upstream read tasks (the manifest is in the driver),
so a pool that takes every CPU slot cannot starve them; still, on a small CPU box give CPU
workers a fractional ``num_cpus_per_worker``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from grounded_sam.labeling.assemble import assemble
from grounded_sam.labeling.job import (
    ItemResult, LabelJob, LabelReport, pending_items, predict_chunk, prepare_job, store_results,
)
from grounded_sam.labeling.options import LabelOptions, RayOptions, split_options
from grounded_sam.labeling.sources import LabelItem, Listing, RemoteItem, is_remote, list_remote_images, local_folder

__all__ = ["label_folder_ray", "PipelineFactory"]

MAX_BLOCKS = 10_000  # manifest blocks; results reach the driver (and become records) a block at a time
_RESULT_FIELDS = tuple(f.name for f in fields(ItemResult))


@dataclass(frozen=True)
class PipelineFactory:
    """Picklable recipe for a :class:`~grounded_sam.pipeline.GroundedSAM`: its constructor kwargs."""

    kwargs: Mapping[str, Any]

    def __call__(self) -> Any:
        from grounded_sam.pipeline import GroundedSAM

        return GroundedSAM(**self.kwargs)


def _encode(item: LabelItem) -> list[Any]:
    if isinstance(item, RemoteItem):
        return [str(item.path), item.rel, item.uri, item.size, item.mtime_ns]
    return [str(item.path), item.rel]


def _decode(row: list[Any], filesystem: Any) -> LabelItem:
    if len(row) == 2:
        return LabelItem(Path(row[0]), row[1])
    path, rel, uri, size, mtime_ns = row
    return RemoteItem(PurePosixPath(path), rel, uri=uri, size=size, mtime_ns=mtime_ns, fs=filesystem)


class _LabelWorker:
    """Ray actor: builds the predictor once, then turns chunks of images into record entries."""

    def __init__(self, factory: Callable[[], Any], classes: list[str], digest: str, filesystem: Any = None) -> None:
        self.model = factory()
        self.predict_fn = getattr(self.model, "predict", None)
        self.predict_batch_fn = getattr(self.model, "predict_batch", None)
        if self.predict_fn is None and self.predict_batch_fn is None:
            raise TypeError(f"the factory made a {type(self.model).__name__}, which has no predict / predict_batch")
        self.classes, self.digest, self.fs = classes, digest, filesystem

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results: list[ItemResult] = []
        for payload in batch["chunk"]:  # one row = one chunk = one predictor batch
            items = [_decode(row, self.fs) for row in json.loads(payload)]
            results += predict_chunk(items, self.predict_fn, self.predict_batch_fn, self.classes, self.digest)
        return {key: np.array([getattr(r, key) or "" for r in results], dtype=object) for key in _RESULT_FIELDS}


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


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError('the Ray backend needs Ray Data: pip install "grounded-sam[ray]" (ray[data]>=2.40)') from e
    return ray


def _run(job: LabelJob, factory: Callable[[], Any], chunks: list[list[LabelItem]], cluster: RayOptions,
         filesystem: Any) -> None:
    """Predict ``chunks`` on a Ray actor pool and write each record as its block comes back."""
    from tqdm.auto import tqdm

    ray = _import_ray()
    from ray.data import ActorPoolStrategy, DataContext

    if not ray.is_initialized():
        ray.init(address=cluster.address)
    workers = min(cluster.num_workers, len(chunks))
    gpus, cpus = cluster.num_gpus_per_worker, cluster.num_cpus_per_worker
    _warn_if_unschedulable(ray, workers, gpus, cpus)
    rows = [{"chunk": json.dumps([_encode(it) for it in chunk])} for chunk in chunks]
    resources: dict[str, float] = {"num_cpus": 1.0 if cpus is None else float(cpus)}
    if gpus:
        resources["num_gpus"] = float(gpus)
    ctx = DataContext.get_current()
    saved = ctx.enable_progress_bars
    ctx.enable_progress_bars = job.options.progress
    try:
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
        ds = ds.map_batches(
            _LabelWorker,
            fn_constructor_kwargs={"factory": factory, "classes": job.classes, "digest": job.store.digest,
                                   "filesystem": filesystem},
            compute=ActorPoolStrategy(size=workers),
            batch_size=1,
            **resources,
        )
        total = sum(len(c) for c in chunks)
        with tqdm(total=total, desc="labeling (ray)", unit="img", disable=not job.options.progress) as bar:
            for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
                results = [ItemResult(str(n), str(r), str(e) or None, str(err) or None)
                           for n, r, e, err in zip(block["name"], block["rel"], block["entry"], block["error"])]
                store_results(job, results)
                bar.update(len(results))
    finally:
        ctx.enable_progress_bars = saved


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
