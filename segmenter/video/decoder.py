"""Lazy decoding of video files (PyAV, with OpenCV as a fallback) behind :class:`VideoFileSource`.

Forward access keeps the demuxer and decoder open and decodes on from where they are, so
reading a file in order decodes each frame once. Going back (or jumping far ahead to a frame
seen before) seeks to the keyframe before the wanted window and decodes forward from there,
keeping the last ``cache_size`` frames up to the target: reverse playback costs about one GOP
of decoding per ``cache_size`` frames, never the whole file, and memory stays bounded.
Frame indices are the decoder's output order (presentation order); seeking maps frames back to
indices by the timestamps recorded on the first pass (8 bytes per frame).

``num_frames`` starts as the container's frame count (None when it has none, e.g. most
.mkv/.webm) and becomes the true decoded count once the end is reached.
"""

from __future__ import annotations

import bisect
import io
import os
from array import array
from pathlib import Path

import numpy as np

from segmenter.video.source import DEFAULT_CACHE_SIZE, FrameSource

__all__ = ["VideoFileSource"]

# forward jumps longer than this to a frame whose timestamp is known use a seek
_SEEK_AHEAD = 64


class _PyAVReader:
    """Sequential PyAV decoding with timestamp-indexed seeking; ``position`` = next frame index."""

    backend = "pyav"

    def __init__(self, video: Path | bytes) -> None:
        import av

        self._av = av
        self._video = video
        self._pts = array("q")  # pts of frames 0, 1, ... seen so far (presentation order)
        self._monotonic = True
        self.decoded = 0
        self._container = None
        self._open()
        stream = self._stream
        self.num_frames = int(stream.frames) or None
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None

    def _open(self) -> None:
        self.close()
        src = io.BytesIO(self._video) if isinstance(self._video, bytes) else str(self._video)
        container = self._av.open(src, mode="r")
        if not container.streams.video:
            container.close()
            raise ValueError("it has no video stream")
        self._container = container
        self._stream = container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._frames = container.decode(self._stream)
        self._pending = None  # a frame decoded by seek() and not yet handed out
        self.position = 0

    def restart(self) -> None:
        self._open()

    def _decode(self):  # noqa: ANN202 -> av.VideoFrame | None
        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        except self._av.error.FFmpegError as e:
            raise ValueError(f"cannot decode frame {self.position}: {e}") from e
        self.decoded += 1
        return frame

    def next(self, want: bool) -> np.ndarray | None:
        """Decode the frame at ``position`` (RGB array if ``want``); raise EOFError at the end."""
        frame, self._pending = self._pending, None
        if frame is None:
            frame = self._decode()
        if frame is None:
            raise EOFError
        if self.position == len(self._pts):
            if frame.pts is None or (self._pts and frame.pts <= self._pts[-1]):
                self._monotonic = False
            self._pts.append(-1 if frame.pts is None else frame.pts)
        self.position += 1
        return frame.to_ndarray(format="rgb24") if want else None

    def can_seek(self, idx: int) -> bool:
        return self._monotonic and idx < len(self._pts)

    def seek(self, first: int) -> None:
        """Position the reader at or before frame ``first`` (a frame already seen)."""
        if self.can_seek(first):
            try:
                self._container.seek(
                    self._pts[first], stream=self._stream, backward=True, any_frame=False
                )
                self._frames = self._container.decode(self._stream)
                frame = self._decode()
            except (self._av.error.FFmpegError, ValueError):  # unseekable input
                frame = None
            if frame is not None and frame.pts is not None:
                j = bisect.bisect_left(self._pts, frame.pts)
                if j <= first and self._pts[j] == frame.pts:
                    self._pending, self.position = frame, j
                    return
        self.restart()  # no usable timestamp: decode from the start

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class _OpenCVReader:
    """Sequential ``cv2.VideoCapture`` decoding; going back reopens the file (no seeking)."""

    backend = "opencv"

    def __init__(self, path: Path) -> None:
        import cv2

        self._cv2 = cv2
        self._path = path
        self._cap = None
        self.decoded = 0
        self.restart()
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.num_frames = count if count > 0 else None
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps > 0 else None

    def restart(self) -> None:
        self.close()
        self._cap = self._cv2.VideoCapture(str(self._path))
        if not self._cap.isOpened():
            raise ValueError("cv2.VideoCapture cannot open it")
        self.position = 0

    def next(self, want: bool) -> np.ndarray | None:
        if not self._cap.grab():
            raise EOFError
        self.decoded += 1
        self.position += 1
        if not want:
            return None
        ok, bgr = self._cap.retrieve()
        if not ok:
            raise ValueError(f"cannot decode frame {self.position - 1}")
        return self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)

    def can_seek(self, idx: int) -> bool:
        return False

    def seek(self, first: int) -> None:
        self.restart()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _open_reader(video: Path | bytes, label: str) -> _PyAVReader | _OpenCVReader:
    try:
        return _PyAVReader(video)
    except Exception as e:  # noqa: BLE001 - PyAV missing (it is optional) or cannot open the file
        pyav_error = e
    if isinstance(video, bytes):
        raise ValueError(f"cannot read video {label}: {pyav_error}") from pyav_error
    try:
        return _OpenCVReader(video)
    except ValueError as e:
        raise ValueError(
            f"cannot read video file {label}: PyAV: {pyav_error}; OpenCV: {e}"
        ) from pyav_error


class VideoFileSource(FrameSource):
    """Frames of a video file (or its bytes), decoded lazily; see the module docstring."""

    def __init__(self, video: str | os.PathLike | bytes, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        is_bytes = isinstance(video, bytes)
        label = f"<{len(video)} bytes>" if is_bytes else repr(str(video))
        super().__init__(f"video {label}", cache_size)
        if is_bytes and not video:
            raise ValueError("the video bytes are empty")
        src = video if is_bytes else Path(video)
        if not is_bytes and src.stat().st_size == 0:
            raise ValueError(f"cannot read video file {label}: the file is empty (0 bytes)")
        self._src = src
        self._reader = _open_reader(src, label)
        self._num_frames = self._reader.num_frames
        try:
            self.get(0)
        except IndexError:
            self.close()
            raise ValueError(f"video file {label} contains no decodable frames") from None
        except ValueError:
            self.close()
            raise

    @property
    def fps(self) -> float | None:
        return self._reader.fps

    @property
    def backend(self) -> str:
        """``"pyav"`` or ``"opencv"``."""
        return self._reader.backend

    @property
    def decoded_frames(self) -> int:
        """How many frames the decoder has produced so far (all restarts and seeks included)."""
        return self._reader.decoded

    def count_frames(self) -> int:
        if self._num_frames is None:  # decode the file once with a second reader
            counter = type(self._reader)(self._src)
            try:
                while True:
                    counter.next(want=False)
            except EOFError:
                self._num_frames = counter.position
            except ValueError as e:
                raise ValueError(f"{self.name}: {e}") from e
            finally:
                counter.close()
        return self._num_frames

    def _read(self, idx: int) -> np.ndarray:
        r = self._reader
        keep_from = max(0, idx - self.cache_size + 1)
        if idx < r.position or (idx - r.position > _SEEK_AHEAD and r.can_seek(idx)):
            r.seek(keep_from)
        while True:
            i = r.position
            try:
                rgb = r.next(want=i >= keep_from)
            except EOFError:
                raise self._end_reached(i, idx) from None
            except ValueError as e:
                raise ValueError(f"{self.name}: {e}") from e
            if rgb is None:
                continue
            frame = self._validate(rgb, i)
            if i == idx:
                return frame
            self._remember(i, frame)

    def close(self) -> None:
        super().close()
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()
