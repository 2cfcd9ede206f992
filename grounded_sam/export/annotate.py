"""Drawing results: annotated images on supervision's annotators, and browser-playable MP4.

- :func:`annotate_image` draws masks, boxes and labels (``"dog 0.87"``, ``"#3 dog 0.87"`` with a
  tracker id) on an RGB image and returns a new RGB array of the same shape. supervision's
  annotators treat numpy images as BGR (OpenCV's order); this module converts, so palette
  colours come out as named. Colours follow the class, or the track when ``tracker_id`` is set.
- :func:`plot` is ``autodistill.utils.plot``: annotate, then show (matplotlib) or return.
- :class:`VideoWriter` writes RGB frames as H.264 (libx264, ``yuv420p``, ``+faststart``) MP4
  through PyAV: the combination every browser plays. Odd widths/heights are padded by one
  edge-replicated pixel (H.264 4:2:0 needs even sizes). Without libx264 it falls back to
  MPEG-4 Part 2 with a warning (that file does not play in browsers).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from gsam_runtime.images import ImageSource, load_image

__all__ = ["label_texts", "annotate_image", "plot", "VideoWriter"]


def label_texts(detections: sv.Detections, classes: Sequence[str] | None = None) -> list[str]:
    """``"[#track ]class[ score]"`` per detection; names from ``classes``, ``data["class_name"]`` or the id."""
    if classes is not None and hasattr(classes, "classes"):  # an ontology: its class names
        classes = classes.classes()
    names = detections.data.get("class_name") if detections.data else None
    texts = []
    for i in range(len(detections)):
        cid = None if detections.class_id is None else int(detections.class_id[i])
        if classes is not None and cid is not None and 0 <= cid < len(classes):
            name = str(classes[cid])
        elif names is not None:
            name = str(names[i])
        else:
            name = "object" if cid is None else str(cid)
        if detections.tracker_id is not None:
            name = f"#{int(detections.tracker_id[i])} {name}"
        if detections.confidence is not None:
            name = f"{name} {float(detections.confidence[i]):.2f}"
        texts.append(name)
    return texts


def annotate_image(
    image: ImageSource,
    detections: sv.Detections,
    classes: Sequence[str] | None = None,
    *,
    masks: bool = True,
    boxes: bool = True,
    labels: bool = True,
    opacity: float = 0.5,
    text_scale: float | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """Draw ``detections`` on an RGB image; returns a new ``(H, W, 3)`` uint8 RGB array.

    ``text_scale``/``thickness`` default to sizes that suit the image resolution.
    """
    rgb = load_image(image)
    h, w = rgb.shape[:2]
    if len(detections) and detections.mask is not None and detections.mask.shape[1:] != (h, w):
        raise ValueError(f"detection masks are {detections.mask.shape[1:]} (H, W) but the image is {(h, w)}")
    scene = np.ascontiguousarray(rgb[:, :, ::-1])  # supervision draws on BGR arrays
    if len(detections) == 0:
        return rgb.copy()
    if detections.tracker_id is not None:
        lookup = sv.ColorLookup.TRACK
    elif detections.class_id is not None:
        lookup = sv.ColorLookup.CLASS
    else:
        lookup = sv.ColorLookup.INDEX
    if text_scale is None:
        text_scale = sv.calculate_optimal_text_scale((w, h))
    if thickness is None:
        thickness = sv.calculate_optimal_line_thickness((w, h))
    if masks and detections.mask is not None:
        scene = sv.MaskAnnotator(opacity=opacity, color_lookup=lookup).annotate(scene, detections)
    if boxes:
        scene = sv.BoxAnnotator(thickness=thickness, color_lookup=lookup).annotate(scene, detections)
    if labels:
        annotator = sv.LabelAnnotator(color_lookup=lookup, text_scale=text_scale, text_thickness=max(1, thickness // 2),
                                      smart_position=True)
        scene = annotator.annotate(scene, detections, labels=label_texts(detections, classes))
    return np.ascontiguousarray(scene[:, :, ::-1])


def plot(
    image: ImageSource,
    detections: sv.Detections,
    classes: Sequence[str] | None = None,
    raw: bool = False,
    size: tuple[int, int] = (8, 8),
) -> np.ndarray | None:
    """Annotate like ``autodistill.utils.plot``: ``raw=True`` returns the RGB array, else shows it."""
    annotated = annotate_image(image, detections, classes)
    if raw:
        return annotated
    sv.plot_image(np.ascontiguousarray(annotated[:, :, ::-1]), size=size)  # plot_image expects BGR
    return None


def _pick_codec(codec: str) -> str:
    import av

    try:
        av.codec.Codec(codec, "w")
        return codec
    except Exception:  # noqa: BLE001 - unknown/unavailable encoder
        if codec not in ("libx264", "h264"):
            raise ValueError(f"video encoder {codec!r} is not available in this PyAV/FFmpeg build") from None
    warnings.warn(
        "libx264 is not available in this PyAV build; writing MPEG-4 Part 2 (mp4v) instead, "
        "which browsers do not play. Install a PyAV wheel with libx264 (pip install av).",
        RuntimeWarning,
        stacklevel=3,
    )
    return "mpeg4"


class VideoWriter:
    """Write RGB uint8 ``(H, W, 3)`` frames to a video file (H.264 MP4 by default).

    Use as a context manager; the size is fixed by the first frame. ``crf``/``preset`` tune
    libx264 (quality 0-51, lower is better; speed ``ultrafast``..``veryslow``). ``codec`` is the
    encoder actually used; ``frames_written`` counts frames. Nothing is written for zero frames.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = 30.0,
        *,
        codec: str = "libx264",
        crf: int = 23,
        preset: str = "medium",
    ) -> None:
        if not fps or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.codec = _pick_codec(codec)
        self.crf, self.preset = int(crf), str(preset)
        self.frames_written = 0
        self.size: tuple[int, int] | None = None  # (H, W) of the input frames
        self._container: Any = None
        self._stream: Any = None

    def _open(self, h: int, w: int) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        options = {"movflags": "+faststart"} if self.path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
        self._container = av.open(str(self.path), mode="w", options=options)
        stream = self._container.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        if self.codec in ("libx264", "h264"):
            stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._stream = stream
        self.size = (h, w)

    def write(self, frame: np.ndarray) -> None:
        import av

        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be (H, W, 3) uint8 RGB arrays, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        if self._container is None:
            if h == 0 or w == 0:
                raise ValueError(f"frame is empty ({h}x{w})")
            self._open(h, w)
        elif (h, w) != self.size:
            raise ValueError(f"frame {self.frames_written} is {h}x{w} but the video is {self.size[0]}x{self.size[1]}")
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.frames_written
        vf.time_base = 1 / self.fps
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):  # flush delayed frames
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
