"""Streaming video input for SAM 2 tracking: lazy frame sources with a small bounded cache.

:func:`open_video` turns any supported input into a :class:`FrameSource`:

- a video file (.mp4/.avi/.mov/.mkv/.webm/...): :class:`VideoFileSource` (``segmenter.video.decoder``),
  decoded with PyAV (OpenCV only when PyAV cannot open the file);
- a folder of frames (.jpg/.jpeg/.png/.bmp/.webp, any case; hidden files and sub-folders are
  ignored): :class:`FolderSource`, decoded with :func:`gsam_runtime.images.load_image` (for RGB
  files the pixels of the reference's PIL loader; EXIF orientation, alpha, CMYK, 16-bit and
  palette files handled like every image of the project). Order:
  numeric by stem when every stem is an integer (the reference's ``<int>.jpg`` rule:
  ``9.jpg`` < ``10.jpg``), otherwise natural order (digit runs compared as numbers,
  ``frame_2`` < ``frame_10``), ties broken by the plain name;
- a list/tuple of RGB uint8 (H, W, 3) arrays or PIL images, or one (T, H, W, 3) array:
  :class:`ArraySource` (random access, arrays are not copied; PIL images are decoded with
  ``load_image`` when read);
- any other iterable/iterator of RGB frames (live input): :class:`IteratorSource`,
  forward-only with a small window of recent frames.

Frames come out as (H, W, 3) uint8 RGB arrays; treat them as read-only. Every source keeps at
most ``cache_size`` decoded frames. :func:`preprocess_video_frame` is the reference video
loader's resize + normalisation, bit for bit.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from gsam_runtime.images import load_image
from segmenter.config import IMAGENET_MEAN, IMAGENET_STD
from segmenter.image.transforms import as_rgb_array, is_tensor
from segmenter.video.decoder import VideoFileSource
from segmenter.video.source import DEFAULT_CACHE_SIZE, FrameDroppedError, FrameSource

if TYPE_CHECKING:
    import torch

__all__ = [
    "FrameSource",
    "ArraySource",
    "FolderSource",
    "IteratorSource",
    "FrameDroppedError",
    "open_video",
    "preprocess_video_frame",
    "preprocess_video_frame_np",
    "FRAME_EXTENSIONS",
]

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

class ArraySource(FrameSource):
    """In-memory frames: a sequence of RGB uint8 arrays / PIL images, or a (T, H, W, 3) array."""

    def __init__(self, frames: Sequence[Any] | np.ndarray, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        super().__init__("the frame list", cache_size)
        if len(frames) == 0:
            raise ValueError("the video frame list is empty; pass at least one (H, W, 3) uint8 RGB frame")
        if isinstance(frames, np.ndarray):
            if frames.ndim != 4:
                raise ValueError(
                    f"a video array must have shape (T, H, W, 3), got {frames.shape}; "
                    "pass a list of (H, W, 3) frames otherwise"
                )
            self._validate(frames[0], 0)  # dtype and channels hold for every frame
        else:
            self._validate(frames[0], 0)  # sets the size (a PIL image is decoded)
            for i, frame in enumerate(frames[1:], start=1):  # cheap: no decoding, no copies
                if not isinstance(frame, Image.Image):  # PIL images are checked when decoded
                    self._validate(frame, i)
        self._frames = frames
        self._num_frames = len(frames)

    def _read(self, idx: int) -> np.ndarray:
        return self._validate(self._frames[idx], idx)

    def close(self) -> None:
        super().close()
        self._frames = ()


def _frame_sort_key(names: list[str]) -> Any:
    stems = [os.path.splitext(n)[0] for n in names]
    try:
        numbers = {n: int(s) for n, s in zip(names, stems)}
    except ValueError:
        return lambda n: ([int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)], n)
    return lambda n: (numbers[n], n)


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """The frame images of ``folder`` in playback order (see the module docstring)."""
    folder = Path(folder)
    names = [
        e.name
        for e in os.scandir(folder)
        if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(FRAME_EXTENSIONS)
    ]
    return [folder / n for n in sorted(names, key=_frame_sort_key(names))]


class FolderSource(FrameSource):
    """A folder of frame images, decoded with ``load_image`` on demand (random access)."""

    def __init__(self, folder: str | os.PathLike, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        super().__init__(f"folder {str(folder)!r}", cache_size)
        self.paths = list_frame_files(folder)
        if not self.paths:
            raise ValueError(
                f"no frame images ({', '.join(FRAME_EXTENSIONS)}) found in folder {str(folder)!r}"
            )
        self._num_frames = len(self.paths)
        self.get(0)  # validates the first image and sets height / width

    def _read(self, idx: int) -> np.ndarray:
        path = self.paths[idx]
        try:
            rgb = load_image(path)  # RGB files: the reference's decode (PIL, then RGB)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read frame {idx} ({path}): {e}") from e
        return self._validate(rgb, idx)


class IteratorSource(FrameSource):
    """Frames pulled from an iterator (live input): forward-only, keeps the last ``cache_size``."""

    def __init__(self, frames: Iterable[Any], cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        super().__init__("the frame iterator", cache_size)
        self._it: Iterator[Any] | None = iter(frames)
        self._next = 0  # index of the next frame the iterator yields
        try:
            self.get(0)
        except IndexError:
            raise ValueError("the video frame iterator yielded no frames") from None

    def _read(self, idx: int) -> np.ndarray:
        if idx < self._next:
            raise FrameDroppedError(
                f"frame {idx} of {self.name} was already dropped: iterator input is forward-only and "
                f"keeps only the last {self.cache_size} frames (now up to frame {self._next - 1}); pass a "
                "list, a folder or a video file for random access, or a larger cache_size"
            )
        while True:
            if self._it is None:
                raise self._end_reached(self._next, idx)
            try:
                raw = next(self._it)
            except StopIteration:
                self._it = None
                raise self._end_reached(self._next, idx) from None
            i = self._next
            frame = self._validate(raw, i)
            self._next += 1
            if i == idx:
                return frame
            self._remember(i, frame)

    def close(self) -> None:
        super().close()
        it, self._it = self._it, None
        if it is not None and hasattr(it, "close"):
            it.close()


def open_video(video: Any, cache_size: int = DEFAULT_CACHE_SIZE) -> FrameSource:
    """Open a video file, a folder of frames, a list of RGB frames or an iterator of them.

    Bad input raises: FileNotFoundError (missing path), ValueError (empty input, unreadable or
    corrupt file, a frame with the wrong dtype/shape/size, naming the frame index).
    """
    if isinstance(video, FrameSource):
        return video
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if path.is_dir():
            return FolderSource(path, cache_size)
        if not path.exists():
            raise FileNotFoundError(f"video not found: {str(path)!r} (no such file or folder)")
        if path.suffix.lower() in FRAME_EXTENSIONS:
            raise ValueError(
                f"{str(path)!r} is a single image, not a video; pass the folder that holds the "
                "frames, or a list of frames"
            )
        return VideoFileSource(path, cache_size)
    if isinstance(video, (bytes, bytearray, memoryview)):
        return VideoFileSource(bytes(video), cache_size)
    if isinstance(video, (list, tuple, np.ndarray)):
        return ArraySource(video, cache_size)
    if is_tensor(video) or isinstance(video, Image.Image):
        raise ValueError(
            f"cannot open a {type(video).__name__} as a video; pass a list of (H, W, 3) uint8 RGB "
            "frames, a (T, H, W, 3) uint8 array, a folder, a video file or an iterator of frames"
        )
    if isinstance(video, Iterable):
        return IteratorSource(video, cache_size)
    raise ValueError(
        f"unsupported video input of type {type(video).__name__}; pass a video file path, a folder "
        "of frames, a list of RGB frames or an iterator of RGB frames"
    )


@functools.lru_cache(maxsize=1)
def _normalisation_table() -> np.ndarray:
    """(3, 256) float32: what the reference loader makes of each uint8 value, per channel.

    The reference computes ``uint8 / 255.0`` in float64, stores it in a float32 tensor, then
    subtracts the float32 mean and divides by the float32 std in place; the same float32
    operations on a table of the 256 values reproduce it exactly.
    """
    scaled = (np.arange(256, dtype=np.uint8) / 255.0).astype(np.float32)  # (256,)
    mean = np.array(IMAGENET_MEAN, dtype=np.float32)[:, None]
    std = np.array(IMAGENET_STD, dtype=np.float32)[:, None]
    return (scaled[None] - mean) / std  # (3, 256) float32


def preprocess_video_frame_np(frame: np.ndarray, image_size: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (3, S, S) float32, normalised, as the reference video loader does.

    PIL ``resize((S, S))`` with bicubic filtering on the uint8 image, /255, ImageNet mean/std:
    bit-identical to ``sam2.utils.misc.load_video_frames_from_jpg_images`` for the same pixels
    (its default synchronous path; the optional async loader rounds differently). Needs no torch.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    rgb = np.ascontiguousarray(as_rgb_array(frame, name="frame"))
    resized = np.asarray(
        Image.fromarray(rgb).resize((image_size, image_size), Image.Resampling.BICUBIC)
    )  # (S, S, 3) uint8
    table = _normalisation_table()
    return np.stack([table[c][resized[..., c]] for c in range(3)])  # (3, S, S) float32


def preprocess_video_frame(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """:func:`preprocess_video_frame_np` as a (3, S, S) float32 CPU tensor."""
    import torch

    return torch.from_numpy(preprocess_video_frame_np(frame, image_size))
