"""The frame source interface: lazily decoded video frames addressed by index, a bounded cache.

:class:`FrameSource` is what every input becomes (:func:`segmenter.video.frames.open_video`):
in-memory arrays, folders, iterators (:mod:`~segmenter.video.frames`) and video files
(:mod:`~segmenter.video.decoder`) implement ``_read``.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from segmenter.image.transforms import as_rgb_array

__all__ = ["FrameSource", "FrameDroppedError", "DEFAULT_CACHE_SIZE"]

DEFAULT_CACHE_SIZE = 16


class FrameDroppedError(LookupError):
    """A forward-only (iterator) source was asked for a frame it no longer holds."""


class FrameSource(ABC):
    """Lazily decoded video frames, addressed by index, with a bounded LRU cache.

    ``num_frames`` is None while unknown (iterators; containers without a frame count) and is
    set to the true count once the end has been reached. ``height``/``width`` are those of
    frame 0 (sources read it when opened). ``get(idx)`` raises IndexError past the end.
    """

    def __init__(self, name: str, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.name = name
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._num_frames: int | None = None
        self._hw: tuple[int, int] | None = None
        self._closed = False

    # -- public API ---------------------------------------------------------------------------
    @property
    def num_frames(self) -> int | None:
        return self._num_frames

    @property
    def height(self) -> int | None:
        return None if self._hw is None else self._hw[0]

    @property
    def width(self) -> int | None:
        return None if self._hw is None else self._hw[1]

    @property
    def fps(self) -> float | None:
        """Frames per second when the input carries it (video files), else None."""
        return None

    def count_frames(self) -> int:
        """``num_frames``, working it out if needed (a video file without a count is decoded
        once, keeping nothing); an iterator's length is unknown until it has ended."""
        if self._num_frames is None:
            raise ValueError(
                f"the length of {self.name} is unknown until its last frame has been read"
            )
        return self._num_frames

    def get(self, idx: int) -> np.ndarray:
        """Frame ``idx`` as an (H, W, 3) uint8 RGB array."""
        idx = self._check_index(idx)
        frame = self._cache.get(idx)
        if frame is None:
            frame = self._read(idx)
            self._remember(idx, frame)
        else:
            self._cache.move_to_end(idx)
        return frame

    def __getitem__(self, idx: int) -> np.ndarray:
        return self.get(idx)

    def __iter__(self) -> Iterator[np.ndarray]:
        """All frames in order, from frame 0 to the end."""
        idx = 0
        while True:
            try:
                frame = self.get(idx)
            except IndexError:
                return
            yield frame
            idx += 1

    def close(self) -> None:
        self._cache.clear()
        self._closed = True

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, num_frames={self._num_frames}, "
            f"size={self.height}x{self.width})"
        )

    # -- for subclasses -----------------------------------------------------------------------
    @abstractmethod
    def _read(self, idx: int) -> np.ndarray:
        """Decode frame ``idx`` (not in the cache); raise IndexError past the end."""

    def _check_index(self, idx: int) -> int:
        if self._closed:
            raise ValueError(f"{self.name} is closed")
        idx = operator.index(idx)
        if idx < 0:
            raise IndexError(f"frame index {idx} is negative; frame indices start at 0")
        if self._num_frames is not None and idx >= self._num_frames:
            raise IndexError(self._out_of_range(idx))
        return idx

    def _out_of_range(self, idx: int) -> str:
        return f"frame index {idx} is out of range: {self.name} has {self._num_frames} frames"

    def _end_reached(self, count: int, idx: int) -> IndexError:
        self._num_frames = count
        return IndexError(self._out_of_range(idx))

    def _remember(self, idx: int, frame: np.ndarray) -> None:
        self._cache[idx] = frame
        self._cache.move_to_end(idx)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _validate(self, frame: Any, idx: int) -> np.ndarray:
        """Check one frame (dtype, shape, same size as frame 0) and return it as RGB uint8."""
        arr = as_rgb_array(frame, name=f"frame {idx} of {self.name}")
        self._check_size(arr.shape[0], arr.shape[1], idx)
        return arr

    def _check_size(self, h: int, w: int, idx: int) -> None:
        if self._hw is None:
            self._hw = (h, w)
        elif (h, w) != self._hw:
            raise ValueError(
                f"frame {idx} of {self.name} is {h}x{w} (HxW) but frame 0 is "
                f"{self._hw[0]}x{self._hw[1]}; all frames of a video must have the same size"
            )
