"""The interface every dataset format implements: add images one at a time, then close.

A writer takes :class:`~grounded_sam.export.records.ImageRecord` s whose ``file_name`` is the
image's name in the dataset (``images/a.jpg``). Nothing the writer produces is visible until
:meth:`DatasetWriter.close`, which completes it (atomically, for files that must not be seen
half-written); :meth:`DatasetWriter.abort` drops what is pending instead. Used as a context
manager it closes on success and aborts on an exception.

Implementations: :class:`~grounded_sam.export.coco.CocoWriter` (``annotations.json``),
:class:`~grounded_sam.export.yolo.YoloWriter` (``labels/*.txt`` + ``data.yaml``) and
:class:`~grounded_sam.export.jsonl.JsonlWriter` (``annotations.jsonl``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, TypeVar

from grounded_sam.export.records import ImageRecord

__all__ = ["DatasetWriter"]

_W = TypeVar("_W", bound="DatasetWriter")


class DatasetWriter(ABC):
    """One dataset format (module docs)."""

    @abstractmethod
    def add(self, record: ImageRecord) -> None:
        """Add one image and its instances."""

    def discard(self, file_name: str) -> None:  # noqa: B027 - most formats keep nothing per image
        """Say that ``file_name`` is not in the dataset (anymore): drop what an earlier run left for it."""

    @property
    @abstractmethod
    def num_instances(self) -> int:
        """Instances written so far (annotations, label lines, JSONL instances)."""

    @abstractmethod
    def close(self) -> Path:
        """Complete the dataset; returns its main file. Closing twice does nothing more."""

    @abstractmethod
    def abort(self) -> None:
        """Drop what was added and not yet completed (files from an earlier close stay)."""

    def __enter__(self: _W) -> _W:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
