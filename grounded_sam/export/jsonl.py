"""JSON Lines: one :class:`~grounded_sam.export.records.ImageRecord` a line, and reading them back."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from grounded_sam.export.records import ImageRecord, dumps
from grounded_sam.export.safe_io import AtomicFile
from grounded_sam.export.writer import DatasetWriter

__all__ = ["JsonlWriter", "iter_jsonl"]


class JsonlWriter(DatasetWriter):
    """Write records one JSON line each; the file appears atomically on ``close()``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file: AtomicFile | None = AtomicFile(self.path, "w")
        self.count = 0  # records
        self._instances = 0

    def add(self, record: ImageRecord) -> None:
        if self._file is None:
            raise RuntimeError("JsonlWriter is closed")
        self._file.file.write(dumps(record) + "\n")
        self.count += 1
        self._instances += len(record["instances"])

    @property
    def num_instances(self) -> int:
        return self._instances

    def close(self) -> Path:
        if self._file is not None:
            file, self._file = self._file, None
            file.commit()
        return self.path

    def abort(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.discard()


def iter_jsonl(path: str | os.PathLike) -> Iterator[ImageRecord]:
    """Read records back from a JSONL file, one at a time."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
