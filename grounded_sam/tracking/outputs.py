"""Video export: a tracking run as an annotated H.264 MP4, per-frame JSONL and a video COCO file."""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grounded_sam.export.coco import CocoWriter
from grounded_sam.export.jsonl import JsonlWriter
from grounded_sam.export.records import detections_to_record
from grounded_sam.export.safe_io import safe_output_path
from grounded_sam.tracking.factory import make_tracker

if TYPE_CHECKING:
    from grounded_sam.pipeline import Pipeline

__all__ = ["write_tracking_outputs", "OUTPUTS"]

OUTPUTS = ("mp4", "jsonl", "coco")


def write_tracking_outputs(
    pipeline: Pipeline,
    video: Any,
    out: str | Path,
    *,
    redetect_every: int | None = None,
    tracker: str = "auto",
    progress: bool = False,
    outputs: Collection[str] = OUTPUTS,
    **tracker_options: Any,
) -> str:
    """Track ``video`` and write ``tracked.mp4``, ``frames.jsonl`` and ``annotations.json`` in ``out``.

    ``outputs``: which of them (``"mp4"``, ``"jsonl"``, ``"coco"``). Every file is written to a
    temporary name and renamed when complete. Returns a summary line.
    """
    unknown = set(outputs) - set(OUTPUTS)
    if unknown or not outputs:
        raise ValueError(f"outputs must be some of {OUTPUTS}, got {sorted(outputs)}")
    from grounded_sam.export.annotate import VideoWriter, annotate_image
    from segmenter.video.frames import open_video

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open_video(video) as probe:
        fps = probe.fps or 30.0
        total = probe.num_frames
    classes = pipeline.classes
    name = Path(str(video)).name if isinstance(video, (str, Path)) else "video"
    bar = _bar(total, progress)
    frames = 0
    ids: set[int] = set()
    mp4 = safe_output_path(out, "tracked.mp4")
    tmp_mp4 = mp4.with_name(".tracked.partial.mp4")
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(VideoWriter(tmp_mp4, fps=fps)) if "mp4" in outputs else None
        jsonl = stack.enter_context(JsonlWriter(safe_output_path(out, "frames.jsonl"))) if "jsonl" in outputs else None
        coco = stack.enter_context(CocoWriter(safe_output_path(out, "annotations.json"), classes)) \
            if "coco" in outputs else None
        video_id = None
        runner = make_tracker(pipeline, tracker, redetect_every=redetect_every, **tracker_options)
        for t, frame, det in runner.frames(video):
            h, w = frame.shape[:2]
            file_name = f"{Path(name).stem}/{t:06d}.jpg"
            if writer is not None:
                writer.write(annotate_image(frame, det, classes))
            if jsonl is not None:
                jsonl.add(detections_to_record(det, file_name, w, h, classes, frame_index=t))
            if coco is not None:
                if video_id is None:
                    video_id = coco.add_video(name, w, h, fps=float(fps))
                coco.add_image(file_name, w, h, det, video_id=video_id, frame_index=t)
            ids.update(int(i) for i in (det.tracker_id if det.tracker_id is not None else []))
            frames += 1
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if "mp4" in outputs and tmp_mp4.exists():
        tmp_mp4.replace(mp4)
    return f"{frames} frames, {len(ids)} tracks -> {out}"


def _bar(total: int | None, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="track", unit="frame")
