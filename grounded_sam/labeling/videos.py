"""Label a folder of videos: one video-COCO file per video plus a combined index, resumable per video.

How a job runs (:func:`label_videos` in this process, :func:`label_videos_ray` on a Ray pool):

1. The videos are listed like images (:mod:`~grounded_sam.labeling.sources`; extensions
   :data:`VIDEO_EXTENSIONS` unless given), and the record store is opened with the job's
   fingerprint, which includes the tracking settings (:class:`TrackOptions`).
2. Each video without a valid record is tracked **sequentially, as one task**
   (:func:`track_video`: ``grounded_sam.tracking.make_tracker(pipeline, ...).frames`` through
   :func:`~grounded_sam.tracking.outputs.write_tracking_outputs`, COCO only) into the text of its
   COCO file: a ``videos`` entry, one image per frame (``video_id``, ``frame_index``) and one
   annotation per tracked instance (``video_id``, ``track_id``, RLE mask). With the Ray backend
   each video is one actor task (:mod:`~grounded_sam.labeling.ray_pool`: a lost worker's video
   is given to another worker and restarts from its first frame); the text comes back to the
   driver, so workers need read access to the videos only. A whole video's COCO text is held in
   memory once, by the worker and then by the driver.
3. The driver writes ``videos/<relative path>.json`` atomically, then the video's record
   (source size and mtime, frame / track / instance counts and the file's SHA-256). A video is
   done when its record is valid and its file still has that hash; a crashed or killed video
   has neither a file nor a record (or a stale pair that fails the check) and is tracked again
   from the start on the next run; finished videos are never redone.
4. ``index.json`` is written from the records in sorted order: the categories and one entry
   per finished video (``name``, ``file_name``, ``width``, ``height``, ``fps``, ``frames``,
   ``tracks``, ``instances``, ``sha256``). A video that failed (reported by name in
   :attr:`~grounded_sam.labeling.LabelReport.failed`) is left out and its stale file removed.

Same function, same records, same index: the Ray backend writes byte-identical files to the
local one for a deterministic pipeline.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grounded_sam.export.coco import coco_categories
from grounded_sam.export.records import dumps
from grounded_sam.export.safe_io import atomic_write_text, safe_output_path
from grounded_sam.labeling.job import LabelJob, LabelReport, job_progress, prepare_job
from grounded_sam.labeling.options import LabelOptions, RayOptions, split_options
from grounded_sam.labeling.ray_pool import PoolTask, import_ray, init_ray, run_pool
from grounded_sam.labeling.sources import LabelItem, list_local_items, local_folder
from grounded_sam.labeling.store import StoredRecord
from grounded_sam.pipeline.files import VIDEO_EXTENSIONS
from grounded_sam.tracking.factory import TRACKERS

__all__ = ["VIDEO_EXTENSIONS", "TrackOptions", "VideoResult", "track_video", "label_videos", "label_videos_ray",
           "INDEX_NAME", "VIDEOS_DIR"]

VIDEOS_DIR = "videos"
INDEX_NAME = "index.json"


@dataclass(frozen=True)
class TrackOptions:
    """How each video is tracked (:func:`grounded_sam.tracking.make_tracker`'s ``tracker``, ``redetect_every``
    and ``memory``; ``None``: the tracker's default). :meth:`resolved` fills in what ``"auto"``
    and the defaults stand for, which is what the job's fingerprint records."""

    tracker: str = "auto"
    redetect_every: int | None = None
    memory: str | None = None

    def __post_init__(self) -> None:
        if self.tracker not in TRACKERS:
            raise ValueError(f"tracker must be one of {TRACKERS}, got {self.tracker!r}")
        n = self.redetect_every
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(f"redetect_every must be a positive integer, got {n!r}")
        if self.memory is not None:
            from segmenter.video.policies import POLICIES

            if self.memory not in POLICIES:
                raise ValueError(f"unknown memory policy {self.memory!r}; choose one of: {', '.join(POLICIES)}")

    def resolved(self, pipeline: Any) -> TrackOptions:
        """The options in effect with ``pipeline``: the tracker ``"auto"`` picks, and for
        ``"sam2"`` its default re-detection interval and memory policy."""
        from grounded_sam.pipeline.defaults import DEFAULT_MEMORY, DEFAULT_REDETECT_EVERY

        from grounded_sam.tracking import tracker_kind

        kind = tracker_kind(pipeline, self.tracker)
        if kind == "sam2":
            return TrackOptions(kind, self.redetect_every or DEFAULT_REDETECT_EVERY, self.memory or DEFAULT_MEMORY)
        return TrackOptions(kind, self.redetect_every, self.memory)  # sam3 refuses the sam2 options when tracking

    def to_json(self) -> dict[str, Any]:
        return {"tracker": self.tracker, "redetect_every": self.redetect_every, "memory": self.memory}

    def tracker_options(self) -> dict[str, Any]:
        """Keywords for :func:`grounded_sam.tracking.make_tracker` (the unset ones left to its defaults)."""
        return {"tracker": self.tracker, "redetect_every": self.redetect_every,
                **({"memory": self.memory} if self.memory is not None else {})}


@dataclass(frozen=True)
class VideoResult:
    """One video's outcome: its COCO text and counts, or why it failed."""

    name: str
    rel: str
    coco: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # width, height, fps, frames, tracks, instances
    source: dict[str, int] | None = None  # size and mtime_ns before it was read
    error: str | None = None


def track_video(pipeline: Any, track: TrackOptions, item: LabelItem) -> VideoResult:
    """Track one video, frame after frame, into the text of its COCO file (never raises for a bad video)."""
    from grounded_sam.tracking.outputs import write_tracking_outputs

    try:
        source = item.stat()
        with tempfile.TemporaryDirectory(prefix="gs-video-") as tmp:
            write_tracking_outputs(pipeline, item.path, tmp, outputs=("coco",), **track.tracker_options())
            text = (Path(tmp) / "annotations.json").read_text(encoding="utf-8")
        return VideoResult(item.name, item.rel, text, _coco_info(text), source)
    except Exception as e:  # noqa: BLE001 - reported against the video; the job goes on
        return VideoResult(item.name, item.rel, error=f"{type(e).__name__}: {e}")


def _coco_info(text: str) -> dict[str, Any]:
    data = json.loads(text)
    video = (data.get("videos") or [{}])[0]
    tracks = {a["track_id"] for a in data["annotations"] if "track_id" in a}
    return {"width": video.get("width"), "height": video.get("height"), "fps": video.get("fps"),
            "frames": len(data["images"]), "tracks": len(tracks), "instances": len(data["annotations"])}


def video_file_name(rel: str) -> str:
    """Where a video's COCO file goes in the output folder."""
    return f"{VIDEOS_DIR}/{rel}.json"


def _prepare(input_folder: str | os.PathLike, output_folder: str | os.PathLike, classes: Sequence[str] | Any,
             options: LabelOptions, track: TrackOptions, fingerprint: Mapping[str, Any] | None) -> LabelJob:
    if options.format != "coco":
        raise ValueError(f"videos are labeled as video COCO; format={options.format!r} is for images")
    if options.prompts:
        raise ValueError("per-image prompts (exemplars) do not apply to videos")
    out = Path(output_folder).resolve()
    listing = list_local_items(local_folder(input_folder), options.extension or VIDEO_EXTENSIONS, options.recursive,
                               out)
    job = prepare_job(input_folder, out, classes, options, listing=listing,
                      fingerprint={**(fingerprint or {}), "videos": track.to_json()})
    job.report.unit = "videos"
    job.report.format = "video-coco"
    return job


def _valid_record(job: LabelJob, item: LabelItem) -> dict[str, Any] | None:
    """The video's record when it is valid and its COCO file is the one the record describes."""
    record = job.store.read(item)
    if record is None or record.get("file_name") != video_file_name(item.rel):
        return None
    try:
        data = safe_output_path(job.out, record["file_name"]).read_bytes()
    except OSError:
        return None
    return dict(record) if hashlib.sha256(data).hexdigest() == record.get("sha256") else None


def _pending(job: LabelJob) -> list[LabelItem]:
    pending = []
    for item in job.items:
        if _valid_record(job, item) is None:
            pending.append(item)
        else:
            job.report.skipped += 1
    return pending


def _store(job: LabelJob, result: VideoResult) -> None:
    """Write a video's COCO file, then its record (both atomically)."""
    if result.coco is None or result.source is None:
        job.report.failed[result.name] = result.error or "failed"
        return
    name = video_file_name(result.rel)
    try:
        path = safe_output_path(job.out, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, result.coco)
        record = {"file_name": name, **result.info, "sha256": hashlib.sha256(result.coco.encode("utf-8")).hexdigest()}
        job.store.write(result.rel, StoredRecord(job.store.digest, result.rel, result.source, record).to_json())
        job.report.labeled += 1
    except OSError as e:
        job.report.failed[result.name] = f"could not write its files: {type(e).__name__}: {e}"


def _write_index(job: LabelJob) -> None:
    """``index.json`` from the records (sorted); stale files of videos without a valid record go."""
    videos = []
    for item in job.items:
        record = _valid_record(job, item)
        if record is None:
            safe_output_path(job.out, video_file_name(item.rel)).unlink(missing_ok=True)
            continue
        videos.append({"id": len(videos) + 1, "name": item.rel, **record})
        job.report.images_written += record["frames"]
        job.report.instances_written += record["instances"]
    index = {"info": {"description": "grounded-sam videos", "video_root": job.input_id},
             "categories": coco_categories(job.classes), "videos": videos}
    path = job.out / INDEX_NAME
    atomic_write_text(path, dumps(index) + "\n")
    job.report.files.append(path)


def label_videos(
    pipeline: Any,
    input_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    options: LabelOptions | None = None,
    track: TrackOptions | None = None,
    *,
    fingerprint: Mapping[str, Any] | None = None,
    **changes: Any,
) -> LabelReport:
    """Track every video of ``input_folder`` in this process into ``output_folder`` (module docs).

    ``pipeline``: a :class:`~grounded_sam.pipeline.Pipeline` (its ``classes``; tracked by
    :func:`grounded_sam.tracking.make_tracker`). ``options`` (:class:`LabelOptions`, with ``changes`` applied): ``extension``
    (``None``: :data:`VIDEO_EXTENSIONS`), ``recursive``, ``progress``, ``overwrite``.
    """
    opts = (options or LabelOptions(extension=None)).update(**changes)
    track = (track or TrackOptions()).resolved(pipeline)
    job = _prepare(input_folder, output_folder, pipeline.classes, opts, track, fingerprint)
    pending = _pending(job)
    with job_progress(job.report, len(pending), "tracking videos", opts.progress) as bar:
        for item in pending:
            _store(job, track_video(pipeline, track, item))
            bar.advance(1)
    _write_index(job)
    return job.report


def _track_task(model: Any, track: TrackOptions, row: list[str]) -> VideoResult:
    """A pool task (runs in an actor): one whole video."""
    return track_video(model, track, LabelItem(Path(row[0]), row[1]))


def label_videos_ray(
    factory: Callable[[], Any],
    input_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    classes: Sequence[str] | Any,
    options: LabelOptions | None = None,
    ray_options: RayOptions | None = None,
    track: TrackOptions | None = None,
    *,
    fingerprint: Mapping[str, Any] | None = None,
    **changes: Any,
) -> LabelReport:
    """:func:`label_videos` with each video tracked as one task on a Ray actor pool.

    ``factory()`` builds the pipeline in each actor (:class:`~grounded_sam.labeling.PipelineFactory`);
    ``track`` should be resolved (:meth:`TrackOptions.resolved`) by the caller, which has the pipeline;
    ``changes`` are fields of :class:`LabelOptions` or :class:`RayOptions`. The input folder must be
    readable by every worker (a shared path); the files are written by this process only.
    """
    label_changes, ray_changes = split_options(changes, LabelOptions, RayOptions)
    opts = (options or LabelOptions(extension=None)).update(**label_changes)
    cluster = (ray_options or RayOptions()).update(**ray_changes)
    track = track or TrackOptions()
    if not callable(factory):
        raise ValueError(f"factory must be a callable that builds the pipeline, got {type(factory).__name__}")
    job = _prepare(input_folder, output_folder, classes, opts, track, fingerprint)
    pending = _pending(job)
    if pending:
        ray = import_ray()
        init_ray(ray, cluster.address)
        tasks = [PoolTask((it.name,), _track_task, [str(it.path), it.rel]) for it in pending]
        with job_progress(job.report, len(pending), "tracking videos (ray)", opts.progress) as bar:

            def done(task: PoolTask, result: VideoResult) -> None:
                _store(job, result)
                bar.advance(1)

            run_pool(ray, factory, track, tasks, cluster, on_result=done,
                     on_fail=lambda task, why: bar.fail(task.names, why),
                     on_retry=lambda task, why: bar.retry(task.names, why))
    _write_index(job)
    return job.report
