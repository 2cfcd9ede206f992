"""Video tasks for the Label Studio backend: a ``<Video>`` with a ``<VideoRectangle>`` becomes tracks.

Label Studio labels objects in a video with a ``VideoRectangle`` control on a ``<Video>``; the
class comes from a ``<Labels>`` control on the same video (``VideoRectangle`` holds no labels of
its own). Pre-annotation runs the pipeline's tracker (``GroundedSAM.track``: detection, SAM 2
memory tracking, re-detection) over the whole video and writes one ``videorectangle`` region per
track, in Label Studio's format:

- ``value.sequence``: one keyframe per frame the track is present in, ``frame`` counted from 1,
  ``x`` / ``y`` / ``width`` / ``height`` in percent of the frame, ``rotation`` 0, ``time`` the
  frame's start in seconds; ``enabled: false`` on the last keyframe before a gap and on the
  last one of all (Label Studio draws the track's lifespan up to the next enabled keyframe,
  so a track that leaves the view and comes back shows a gap);
- ``value.labels``: the track's class; ``value.framesCount`` / ``value.duration``: the video's;
- ``score``: the track's mean score over its frames.

Each box is the mask's tight box where the track has a mask on that frame, else the tracker's box.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["VideoControl", "parse_video_controls", "predict_video", "track_regions", "video_ontology"]


@dataclass(frozen=True)
class VideoControl:
    """A ``VideoRectangle`` (``name``) on the ``<Video>`` ``to_name`` whose task data key is ``data_key``;
    ``labels_from``: the ``<Labels>`` control giving classes, ``captions``: label -> captions."""

    name: str
    to_name: str
    data_key: str
    labels_from: str
    labels: tuple[str, ...]
    captions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def parse_video_controls(
    xml: str, class_captions: Mapping[str, Sequence[str]] | None = None
) -> tuple[list[VideoControl], list[str]]:
    """The config's video tracking controls and the problems found (labels without a caption, a
    ``VideoRectangle`` without ``<Labels>`` on its video). Captions as for images: a label's
    ``hint`` / ``alias``, else ``class_captions`` (the server's ontology)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        return [], [f"the labeling config is not valid XML: {e}"]
    videos = {el.get("name", ""): el.get("value", "").lstrip("$") for el in root.iter() if el.tag.lower() == "video"}
    labels_on: dict[str, ET.Element] = {}
    for el in root.iter():
        if el.tag.lower() == "labels" and el.get("toName", "") in videos:
            labels_on.setdefault(el.get("toName", ""), el)
    controls: list[VideoControl] = []
    problems: list[str] = []
    class_captions = class_captions or {}
    for el in root.iter():
        if el.tag.lower() != "videorectangle" or el.get("toName", "") not in videos:
            continue
        name, to_name = el.get("name", ""), el.get("toName", "")
        labels_el = labels_on.get(to_name)
        if labels_el is None:
            problems.append(f'<VideoRectangle name="{name}">: no <Labels toName="{to_name}"> gives its classes')
            continue
        labels, captions = [], {}
        for lab in labels_el:
            value = lab.get("value", "")
            if lab.tag.lower() != "label" or not value:
                continue
            labels.append(value)
            given = (lab.get("hint") or lab.get("alias") or "").strip()
            found = (given,) if given else tuple(class_captions.get(value, ()))
            if found:
                captions[value] = found
            else:
                problems.append(f'<Labels name="{labels_el.get("name", "")}">: label "{value}" has no caption: give it '
                                f'hint="what to look for", or start the server with a --prompt naming the class "{value}"')
        controls.append(VideoControl(name, to_name, videos[to_name], labels_el.get("name", ""), tuple(labels), captions))
    return controls, problems


def video_ontology(controls: Iterable[VideoControl]) -> dict[str, str]:
    """``{caption: label}`` over the video controls (a ``CaptionOntology`` mapping)."""
    out: dict[str, str] = {}
    for control in controls:
        for label, captions in control.captions.items():
            for caption in captions:
                out.setdefault(caption, label)
    return out


def track_regions(
    frames: Iterable[tuple[int, Any]],
    classes: Sequence[str],
    controls: Sequence[VideoControl],
    frame_hw: tuple[int, int],
    fps: float,
    frames_count: int | None = None,
) -> list[dict[str, Any]]:
    """``videorectangle`` regions (module docs) of every control from a tracker's ``(frame_index,
    sv.Detections)`` with ``tracker_id``, consumed once (only keyframes are kept, not masks).
    A class outside a control's labels is left out of that control. ``frames_count``: the video's
    (default: one more than the last frame index seen)."""
    h, w = frame_hw
    keyframes: dict[int, list[dict[str, Any]]] = {}
    scores: dict[int, list[float]] = {}
    label_of: dict[int, str] = {}
    wanted = {label for control in controls for label in control.labels}
    last = -1
    for t, det in frames:
        last = max(last, int(t))
        if len(det) == 0 or det.tracker_id is None:
            continue
        boxes = _boxes(det)
        for k in range(len(det)):
            label = classes[int(det.class_id[k])] if det.class_id is not None else None
            if label not in wanted:
                continue
            tid = int(det.tracker_id[k])
            x0, y0, x1, y1 = (float(v) for v in boxes[k])
            keyframes.setdefault(tid, []).append({
                "frame": int(t) + 1, "enabled": True, "rotation": 0,
                "x": 100.0 * x0 / w, "y": 100.0 * y0 / h,
                "width": 100.0 * (x1 - x0) / w, "height": 100.0 * (y1 - y0) / h,
                "time": int(t) / fps,
            })
            scores.setdefault(tid, []).append(float(det.confidence[k]) if det.confidence is not None else 1.0)
            label_of.setdefault(tid, label)
    count = int(frames_count) if frames_count is not None else last + 1
    regions = []
    for control in controls:
        for tid in sorted(keyframes):
            if label_of[tid] not in control.labels:
                continue
            sequence = [dict(f) for f in sorted(keyframes[tid], key=lambda f: f["frame"])]
            for a, b in zip(sequence, sequence[1:]):
                if b["frame"] - a["frame"] > 1:
                    a["enabled"] = False  # the track is absent until b: no lifespan line across the gap
            sequence[-1]["enabled"] = False
            regions.append({
                "id": f"{control.name}-track{tid}",
                "from_name": control.name,
                "to_name": control.to_name,
                "type": "videorectangle",
                "origin": "prediction",
                "value": {"sequence": sequence, "labels": [label_of[tid]], "framesCount": count,
                          "duration": count / fps},
                "score": float(np.mean(scores[tid])),
            })
    return regions


def predict_video(pipeline: Any, path: str, controls: Sequence[VideoControl], **track_options: Any) -> list[dict[str, Any]]:
    """Track ``pipeline``'s ontology (the controls' captions) through the video file ``path``: the
    regions of every control on it, the frames streamed (no mask is kept). ``track_options`` go to
    ``pipeline.track`` (``tracker``, ``redetect_every``, ``memory``)."""
    from segmenter.video.frames import open_video

    with open_video(path) as probe:
        fps = float(probe.fps or 30.0)
        hw = (int(probe.height or 0), int(probe.width or 0))
        total = probe.num_frames
    if not all(hw):
        raise ValueError(f"the video {path!r}: its frame size is unknown")
    return track_regions(pipeline.track(path, **track_options), pipeline.classes, controls, hw, fps, total)


def _boxes(det: Any) -> np.ndarray:  # (N, 4) xyxy: the mask's tight box where there is a mask, else the box
    boxes = np.asarray(det.xyxy, dtype=np.float64).copy()
    if det.mask is None:
        return boxes
    for k in range(len(det)):
        m = np.asarray(det.mask[k])
        ys = np.flatnonzero(m.any(axis=1))
        if ys.size == 0:
            continue
        xs = np.flatnonzero(m.any(axis=0))
        boxes[k] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes
