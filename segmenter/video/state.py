"""The state of one video tracking session, and the frame buffer of live streams."""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from segmenter.video.memory_bank import ObjectMemory
from segmenter.video.tracking import FrameFeatures
from segmenter.image.transforms import as_rgb_array

__all__ = ["VideoState", "FrameBuffer"]


class FrameBuffer:
    """A frame source fed one frame at a time (``VideoPredictor.add_frame``).

    Holds only the frames not yet tracked and the last tracked one (for corrections);
    ``num_frames`` is ``None`` because a stream has no known end.
    """

    num_frames: int | None = None

    def __init__(self) -> None:
        self._frames: dict[int, np.ndarray] = {}
        self.count = 0  # frames pushed so far
        self.height: int | None = None
        self.width: int | None = None

    def push(self, frame: Any) -> int:
        img = as_rgb_array(frame, name="frame")
        if self.height is None:
            self.height, self.width = img.shape[:2]
        elif img.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"frame {self.count} has size {img.shape[1]}x{img.shape[0]}, but the stream's frames are "
                f"{self.width}x{self.height}"
            )
        self._frames[self.count] = img
        self.count += 1
        return self.count - 1

    def get(self, idx: int) -> np.ndarray:
        frame = self._frames.get(idx)
        if frame is None:
            if 0 <= idx < self.count:
                raise ValueError(f"frame {idx} of the stream has been released (only untracked frames and the last tracked one are kept)")
            raise IndexError(f"frame {idx} has not been added to the stream ({self.count} frames so far)")
        return frame

    def held(self) -> list[int]:
        return sorted(self._frames)

    def release_before(self, idx: int) -> None:
        for t in [t for t in self._frames if t < idx]:
            del self._frames[t]

    def close(self) -> None:
        self._frames.clear()


@dataclass
class VideoState:
    """Everything a :class:`~segmenter.video.predictor.VideoPredictor` session keeps.

    ``objects`` keeps insertion order (= the order of ``obj_ids`` and of the output masks).
    Per-frame outputs live in each object's :class:`~segmenter.video.memory_bank.ObjectMemory`;
    with ``keep_outputs=False`` only the entries later steps can read are kept.
    """

    source: Any  # a FrameSource (segmenter.video.frames) or a FrameBuffer
    num_frames: int | None  # None: unknown (stream, iterator)
    device: torch.device
    storage_device: torch.device  # where memory features and masks are stored
    keep_outputs: bool = False
    is_stream: bool = False
    objects: dict[Hashable, ObjectMemory] = field(default_factory=dict, repr=False)
    features: FrameFeatures | None = field(default=None, repr=False)  # the most recently encoded frame
    next_frame: int = 0  # streams: the next frame track() processes
    warned_released: bool = False

    @property
    def video_height(self) -> int:
        return self._size()[0]

    @property
    def video_width(self) -> int:
        return self._size()[1]

    def _size(self) -> tuple[int, int]:
        if self.source.height is None:
            raise RuntimeError("the stream has no frame yet; add one with add_frame(state, frame)")
        return int(self.source.height), int(self.source.width)

    @property
    def obj_ids(self) -> list[Hashable]:
        return list(self.objects)

    def object(self, obj_id: Hashable, create: bool = False) -> ObjectMemory:
        """The object ``obj_id``; a new one with ``create``, else unknown ids are an error."""
        try:
            hash(obj_id)
        except TypeError:
            raise ValueError(f"obj_id must be hashable (an int or a string), got {type(obj_id).__name__}") from None
        obj = self.objects.get(obj_id)
        if obj is None:
            if not create:
                raise ValueError(f"unknown object id {obj_id!r}; existing ids: {self.obj_ids}")
            obj = self.objects[obj_id] = ObjectMemory(obj_id)
        return obj

    def frame_available(self, t: int) -> bool:
        """Whether frame ``t`` exists (decoding it if needed; False past the end)."""
        if self.features is not None and self.features.frame_idx == t:
            return True
        try:
            self.source.get(t)
        except IndexError:
            return False
        return True

    def warn_released(self, what: str) -> None:
        """Warn once per session that a step reads outputs released to bound memory."""
        if self.warned_released:
            return
        self.warned_released = True
        warnings.warn(
            f"{what} were released to bound memory (init_state(keep_outputs=False)); this step uses the "
            "memories left and can differ from the reference. Use keep_outputs=True for corrections "
            "anywhere in a tracked video.",
            UserWarning,
            stacklevel=5,
        )

    def close(self) -> None:
        """Release the video (decoder, cached frames) and every stored output."""
        self.objects.clear()
        self.features = None
        self.source.close()

    def num_entries(self) -> int:
        """Stored per-object per-frame outputs (the size of the memory bank)."""
        return sum(obj.num_entries() for obj in self.objects.values())

    def num_memory_entries(self) -> int:
        """Stored per-object per-frame memory features (the bulk of the state's size)."""
        return sum(
            e.maskmem is not None
            for obj in self.objects.values()
            for d in (obj.cond, obj.non_cond, obj.temp_cond, obj.temp_non_cond)
            for e in d.values()
        )
