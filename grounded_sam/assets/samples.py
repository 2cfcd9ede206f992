"""Sample inputs with exact ground truth: synthetic scenes of moving coloured shapes.

The notebooks use them when no data path is given; the tests and benchmarks use them as data
whose true masks and boxes are known.

A :class:`SyntheticScene` renders frame ``t`` deterministically: a smooth static background and
``K`` objects (rectangles / ellipses) moving at constant velocity and bouncing off the frame
edges; later objects are drawn over earlier ones. Ground truth is amodal (the full object, even
where another object covers it): ``masks(t)`` (K, H, W) bool and ``boxes(t)`` (K, 4) inclusive
pixel ``xyxy`` (the same convention as ``supervision.mask_to_xyxy``).

:func:`write_synthetic_video` encodes a scene to a file with PyAV (H.264 via libx264 when
available, else MPEG-4 Part 2) and returns the boxes of every frame.
"""

from __future__ import annotations

import fractions
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["SyntheticObject", "SyntheticScene", "write_synthetic_video"]

_PALETTE = ((230, 40, 40), (40, 200, 60), (50, 90, 240), (240, 200, 30), (200, 60, 220), (30, 210, 220))


@dataclass(frozen=True)
class SyntheticObject:
    """One moving shape; positions are the top-left corner in pixels, velocities in pixels/frame."""

    shape: Literal["rect", "ellipse"]
    color: tuple[int, int, int]
    size: tuple[int, int]  # (h, w)
    start: tuple[float, float]  # (y, x) of the top-left corner at t = 0
    velocity: tuple[float, float]  # (vy, vx)


def _bounce(p0: float, v: float, t: int, span: int) -> int:
    """Position at time t of a point moving in [0, span] and reflecting at both ends."""
    if span <= 0:
        return 0
    q = (p0 + v * t) % (2 * span)
    return int(round(q if q <= span else 2 * span - q))


class SyntheticScene:
    """Deterministic renderer of a (H, W) RGB video with ``objects`` moving shapes."""

    def __init__(
        self,
        size: tuple[int, int],
        objects: int | Sequence[SyntheticObject] = 2,
        seed: int = 0,
    ) -> None:
        h, w = (int(s) for s in size)
        if h < 8 or w < 8:
            raise ValueError(f"size must be at least (8, 8), got {size}")
        self.size = (h, w)
        if isinstance(objects, int):
            if objects < 0:
                raise ValueError(f"objects must be >= 0, got {objects}")
            objects = self._random_objects(objects, seed)
        self.objects: tuple[SyntheticObject, ...] = tuple(objects)
        for k, obj in enumerate(self.objects):
            oh, ow = obj.size
            if not (1 <= oh <= h and 1 <= ow <= w):
                raise ValueError(f"object {k} of size {obj.size} does not fit in a {h}x{w} frame")
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        bg = np.stack([60 + 60 * yy / h, 70 + 50 * xx / w, 90 + 30 * (xx + yy) / (h + w)], axis=-1)
        self._background = bg.astype(np.uint8)  # (H, W, 3)
        self._shapes = [self._shape_mask(obj) for obj in self.objects]  # (h, w) bool each

    def _random_objects(self, n: int, seed: int) -> list[SyntheticObject]:
        rng = np.random.default_rng(seed)
        h, w = self.size
        out = []
        for k in range(n):
            oh = int(rng.integers(max(2, h // 8), max(3, h // 3)))
            ow = int(rng.integers(max(2, w // 8), max(3, w // 3)))
            start = (float(rng.uniform(0, h - oh)), float(rng.uniform(0, w - ow)))
            speed = max(h, w) / 100
            velocity = (float(rng.uniform(-speed, speed)), float(rng.uniform(-speed, speed)))
            shape = "rect" if k % 2 == 0 else "ellipse"
            out.append(SyntheticObject(shape, _PALETTE[k % len(_PALETTE)], (oh, ow), start, velocity))
        return out

    @staticmethod
    def _shape_mask(obj: SyntheticObject) -> np.ndarray:
        oh, ow = obj.size
        if obj.shape == "rect":
            return np.ones((oh, ow), dtype=bool)
        if obj.shape == "ellipse":
            yy, xx = np.mgrid[0:oh, 0:ow]
            ry, rx = oh / 2, ow / 2
            inside = ((yy + 0.5 - ry) / ry) ** 2 + ((xx + 0.5 - rx) / rx) ** 2 <= 1.0
            return inside
        raise ValueError(f"unknown shape {obj.shape!r}; use 'rect' or 'ellipse'")

    def _origin(self, k: int, t: int) -> tuple[int, int]:
        obj = self.objects[k]
        h, w = self.size
        y = _bounce(obj.start[0], obj.velocity[0], t, h - obj.size[0])
        x = _bounce(obj.start[1], obj.velocity[1], t, w - obj.size[1])
        return y, x

    def frame(self, t: int) -> np.ndarray:
        """Frame t as (H, W, 3) uint8 RGB."""
        img = self._background.copy()
        for k, (obj, shape) in enumerate(zip(self.objects, self._shapes)):
            y, x = self._origin(k, t)
            patch = img[y : y + obj.size[0], x : x + obj.size[1]]
            patch[shape] = obj.color
        return img

    def frames(self, num_frames: int) -> Iterator[np.ndarray]:
        for t in range(num_frames):
            yield self.frame(t)

    def masks(self, t: int) -> np.ndarray:
        """Amodal object masks of frame t: (K, H, W) bool."""
        out = np.zeros((len(self.objects), *self.size), dtype=bool)
        for k, (obj, shape) in enumerate(zip(self.objects, self._shapes)):
            y, x = self._origin(k, t)
            out[k, y : y + obj.size[0], x : x + obj.size[1]] = shape
        return out

    def boxes(self, t: int) -> np.ndarray:
        """Amodal boxes of frame t: (K, 4) int64 inclusive pixel xyxy."""
        out = np.zeros((len(self.objects), 4), dtype=np.int64)
        for k, shape in enumerate(self._shapes):
            y, x = self._origin(k, t)
            rows, cols = np.flatnonzero(shape.any(1)), np.flatnonzero(shape.any(0))
            out[k] = (x + cols[0], y + rows[0], x + cols[-1], y + rows[-1])
        return out


def _add_video_stream(container, rate: fractions.Fraction, codec: str | None):  # noqa: ANN001, ANN202
    import av

    candidates = [codec] if codec else ["libx264", "mpeg4"]
    errors = []
    for name in candidates:
        try:
            return container.add_stream(name, rate=rate), name
        except (av.error.FFmpegError, ValueError) as e:  # unknown / unavailable encoder
            errors.append(f"{name}: {e}")
    raise ValueError(f"no usable video encoder ({'; '.join(errors)})")


def write_synthetic_video(
    path: str | os.PathLike,
    num_frames: int,
    size: tuple[int, int] = (240, 320),
    fps: float = 24.0,
    objects: int | Sequence[SyntheticObject] = 2,
    seed: int = 0,
    codec: str | None = None,
    crf: int = 18,
    keyframe_interval: int = 30,
    bframes: int = 0,
) -> np.ndarray:
    """Encode ``num_frames`` frames of a :class:`SyntheticScene` to ``path``.

    The container follows the extension (.mp4, .mkv, .avi, .mov, ...). ``size`` is (H, W) and must
    be even (yuv420p). ``keyframe_interval`` is the GOP length and ``bframes`` the number of
    consecutive B-frames (0 keeps the encoder's preset). Returns the ground-truth boxes
    (num_frames, K, 4) int64 inclusive pixel xyxy; ``SyntheticScene(size, objects, seed)``
    re-renders the exact (pre-compression) frames.
    """
    import av

    h, w = (int(s) for s in size)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if h % 2 or w % 2:
        raise ValueError(f"size must be even for yuv420p video, got {size}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    scene = SyntheticScene((h, w), objects, seed)
    rate = fractions.Fraction(fps).limit_denominator(100_000)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    boxes = np.stack([scene.boxes(t) for t in range(num_frames)])  # (T, K, 4)
    with av.open(str(path), mode="w") as container:
        stream, codec_name = _add_video_stream(container, rate, codec)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec_name == "libx264":
            stream.options = {"crf": str(crf), "preset": "ultrafast"}
        else:
            stream.codec_context.bit_rate = max(200_000, h * w * 8)  # plenty for flat shapes
        stream.codec_context.gop_size = keyframe_interval
        if bframes:
            stream.codec_context.max_b_frames = bframes
        for t in range(num_frames):
            frame = av.VideoFrame.from_ndarray(scene.frame(t), format="rgb24")
            frame.pts, frame.time_base = t, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return boxes


def shapes_image(h: int = 120, w: int = 160) -> np.ndarray:
    """Four flat shapes of distinct colours, one near each corner, on a flat background (H, W, 3) uint8."""
    img = np.full((h, w, 3), 40, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    colours = [(230, 40, 40), (40, 200, 60), (50, 90, 240), (240, 200, 30)]
    for k, (fx, fy) in enumerate([(0.2, 0.2), (0.8, 0.2), (0.2, 0.8), (0.8, 0.8)]):
        dx, dy = (xx - fx * w) / (0.12 * w), (yy - fy * h) / (0.12 * h)
        inside = dx**2 + dy**2 < 1 if k % 2 else (abs(dx) < 1) & (abs(dy) < 1)
        img[inside] = colours[k]
    return img
