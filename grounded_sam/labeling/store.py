"""The record store of a job, ``<output>/.grounded_sam``: what makes labeling resumable.

- ``manifest.json`` holds the job's **fingerprint** (classes, the ``config`` the predictor
  describes itself with, such as ontology and model settings, and the input folder) and its
  digest. Opening the store with a different fingerprint raises :class:`LabelingConfigError`
  unless ``overwrite=True``, which drops the old records.
- ``records/<xx>/<sha256 of the relative path>.json`` holds one :class:`StoredRecord` per
  labeled image, written atomically. It is valid when it parses, has the store's version and
  digest, names the same relative path, and the source still has the size and mtime it had.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grounded_sam.export.records import ImageRecord, dumps
from grounded_sam.export.safe_io import atomic_write_text
from grounded_sam.labeling.sources import LabelItem

__all__ = ["STORE_DIR", "STORE_VERSION", "LabelingConfigError", "StoredRecord", "RecordStore", "job_fingerprint"]

STORE_DIR = ".grounded_sam"
STORE_VERSION = 1


class LabelingConfigError(ValueError):
    """The output folder holds records made with a different ontology/config."""


@dataclass(frozen=True)
class StoredRecord:
    """One labeled image in the store: its record and what it was made from."""

    digest: str  # the job's fingerprint digest
    rel: str  # the source's path relative to the input folder
    source: dict[str, int]  # the source's size and mtime_ns when it was labeled
    record: ImageRecord  # file_name = rel
    version: int = STORE_VERSION

    def to_json(self) -> str:
        return dumps({"version": self.version, "digest": self.digest, "rel": self.rel, "source": self.source,
                      "record": self.record})

    @classmethod
    def from_json(cls, text: str) -> StoredRecord:
        """Parse a record file; raises ``ValueError`` / ``KeyError`` / ``TypeError`` when it is malformed."""
        data = json.loads(text)
        return cls(digest=data["digest"], rel=data["rel"], source=data["source"], record=data["record"],
                   version=data["version"])


def job_fingerprint(classes: list[str], config: Mapping[str, Any] | None, input_id: str) -> dict[str, Any]:
    """What a job's labels depend on: classes, the predictor's ``config`` (JSON-able), the input folder."""
    try:
        config_json = json.loads(json.dumps(dict(config or {}), sort_keys=True, default=str))
    except (TypeError, ValueError) as e:
        raise ValueError(f"fingerprint must be JSON-serialisable: {e}") from e
    return {"classes": classes, "config": config_json, "input_folder": input_id}


@dataclass(frozen=True)
class RecordStore:
    """An opened store (module docs): where the records are and the digest they must carry."""

    root: Path
    digest: str

    @classmethod
    def open(cls, output: Path, fingerprint: dict[str, Any], overwrite: bool = False) -> RecordStore:
        """Check (or write) the manifest of ``output``'s store; see :class:`LabelingConfigError`."""
        root = output / STORE_DIR
        manifest = root / "manifest.json"
        digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
        old = None
        if manifest.exists():
            try:
                old = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
        if old is not None and old.get("digest") != digest and not overwrite:
            before = old.get("fingerprint", {})
            changed = [k for k in fingerprint if before.get(k) != fingerprint[k]] or ["store version"]
            diff = "; ".join(f"{k}: was {_short(before.get(k))}, now {_short(fingerprint.get(k))}" for k in changed)
            raise LabelingConfigError(
                f"{output} was labeled with a different {', '.join(changed)} ({diff}). Pass overwrite=True "
                "(CLI: --overwrite) to relabel everything, or choose another output folder."
            )
        if overwrite or old is None or old.get("digest") != digest:
            shutil.rmtree(root / "records", ignore_errors=True)
            manifest_text = dumps({"version": STORE_VERSION, "digest": digest, "fingerprint": fingerprint}) + "\n"
            atomic_write_text(manifest, manifest_text)
        return cls(root, digest)

    def record_path(self, rel: str) -> Path:
        h = hashlib.sha256(rel.encode("utf-8")).hexdigest()
        return self.root / "records" / h[:2] / f"{h[2:42]}.json"

    def read(self, item: LabelItem) -> ImageRecord | None:
        """The item's record if it exists and is still valid, else ``None``."""
        try:
            stored = StoredRecord.from_json(self.record_path(item.rel).read_text(encoding="utf-8"))
            valid = (stored.version == STORE_VERSION and stored.digest == self.digest and stored.rel == item.rel
                     and stored.source == item.stat())
            return stored.record if valid else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def write(self, rel: str, entry: str) -> None:
        """Store a serialised :class:`StoredRecord` (atomically)."""
        atomic_write_text(self.record_path(rel), entry)

    def stored(self) -> Iterator[StoredRecord]:
        """Every record file of this job (its version and digest, at its own path), in file order;
        unreadable files are left out. The source is not checked (see :meth:`read`)."""
        for path in sorted((self.root / "records").glob("*/*.json")):
            try:
                stored = StoredRecord.from_json(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
            if stored.version == STORE_VERSION and stored.digest == self.digest and self.record_path(stored.rel) == path:
                yield stored


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
