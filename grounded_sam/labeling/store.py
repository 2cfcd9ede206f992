"""The record store of a job, ``<output>/.grounded_sam``: what makes labeling resumable.

- ``manifest.json`` holds the job's **fingerprint** (classes, the ``config`` the predictor
  describes itself with: ontology, every model setting and the weights by content, see
  :meth:`grounded_sam.pipeline.Pipeline.fingerprint`; and the input folder) and its digest.
  Opening the store with a different fingerprint raises :class:`LabelingConfigError`, which names
  each differing setting with its old and new value, before anything is written, unless
  ``overwrite=True``: then the old records are dropped, except the ones reviewed in the app
  (``"reviewed": true``, human work), which are kept under the new fingerprint unless
  ``discard_reviewed=True``. The records are reset before the new manifest is written, so a
  reset cut short is done again by the next ``overwrite`` run and never loses a reviewed record.
- A reviewed image's record also keeps the model's own instances for it (``model``, beside the
  record: not in the dataset files), so that the labels can be scored against the reviewed images.
  The review stores the model output it replaced; an ``overwrite`` keeps the reviewed instances and
  has the image predicted again for a fresh ``model`` under the new settings.
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

__all__ = ["STORE_DIR", "STORE_VERSION", "REVIEWED", "LabelingConfigError", "StoredRecord", "RecordStore",
           "job_fingerprint", "fingerprint_changes"]

STORE_DIR = ".grounded_sam"
STORE_VERSION = 1
REVIEWED = "reviewed"  # the record key that marks an image reviewed (fixed by a person) in the app
_MISSING = object()


class LabelingConfigError(ValueError):
    """The output folder holds records made with other settings.

    ``changes``: ``(setting, old value, new value)`` for each differing setting (dotted names,
    e.g. ``detector.box_threshold``; a value absent on one side is ``None``).
    """

    def __init__(self, message: str, changes: list[tuple[str, Any, Any]] | None = None) -> None:
        super().__init__(message)
        self.changes = changes or []


@dataclass(frozen=True)
class StoredRecord:
    """One labeled image in the store: its record and what it was made from."""

    digest: str  # the job's fingerprint digest
    rel: str  # the source's path relative to the input folder
    source: dict[str, int]  # the source's size and mtime_ns when it was labeled
    record: ImageRecord  # file_name = rel
    version: int = STORE_VERSION
    model: list[Any] | None = None  # a reviewed image: the model's own instances (module docs)

    @property
    def reviewed(self) -> bool:
        return bool(self.record.get(REVIEWED))

    def to_json(self) -> str:
        data = {"version": self.version, "digest": self.digest, "rel": self.rel, "source": self.source,
                "record": self.record}
        if self.model is not None:
            data["model"] = self.model
        return dumps(data)

    @classmethod
    def from_json(cls, text: str) -> StoredRecord:
        """Parse a record file; raises ``ValueError`` / ``KeyError`` / ``TypeError`` when it is malformed."""
        data = json.loads(text)
        return cls(digest=data["digest"], rel=data["rel"], source=data["source"], record=data["record"],
                   version=data["version"], model=data.get("model"))


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
    kept_reviewed: int = 0  # reviewed records carried over by an overwrite

    @classmethod
    def open(cls, output: Path, fingerprint: dict[str, Any], overwrite: bool = False,
             discard_reviewed: bool = False) -> RecordStore:
        """Check (or write) the manifest of ``output``'s store; see the module docs and
        :class:`LabelingConfigError`. Nothing is written when the check fails."""
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
            changes = fingerprint_changes(old.get("fingerprint", {}), fingerprint)
            raise LabelingConfigError(_refusal(output, changes), changes)
        kept = 0
        if overwrite or old is None or old.get("digest") != digest:
            kept = _reset_records(root / "records", digest, keep_reviewed=not discard_reviewed)
            manifest_text = dumps({"version": STORE_VERSION, "digest": digest, "fingerprint": fingerprint}) + "\n"
            atomic_write_text(manifest, manifest_text)
        return cls(root, digest, kept)

    def record_path(self, rel: str) -> Path:
        h = hashlib.sha256(rel.encode("utf-8")).hexdigest()
        return self.root / "records" / h[:2] / f"{h[2:42]}.json"

    def read(self, item: LabelItem) -> ImageRecord | None:
        """The item's record if it exists and is still valid, else ``None``."""
        stored = self.read_stored(item)
        return stored.record if stored is not None else None

    def read_stored(self, item: LabelItem) -> StoredRecord | None:
        """The item's :class:`StoredRecord` if it exists and is still valid, else ``None``."""
        try:
            stored = StoredRecord.from_json(self.record_path(item.rel).read_text(encoding="utf-8"))
            valid = (stored.version == STORE_VERSION and stored.digest == self.digest and stored.rel == item.rel
                     and stored.source == item.stat())
            return stored if valid else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def read_rel(self, rel: str) -> StoredRecord | None:
        """The record stored for ``rel`` under this store's digest (its source not checked), else ``None``."""
        try:
            stored = StoredRecord.from_json(self.record_path(rel).read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        ok = stored.version == STORE_VERSION and stored.digest == self.digest and stored.rel == rel
        return stored if ok else None

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


def _reset_records(records: Path, digest: str, keep_reviewed: bool) -> int:
    """Delete the record files, re-stamping the reviewed ones with ``digest`` when
    ``keep_reviewed``; returns how many were kept."""
    kept = 0
    for path in sorted(records.glob("*/*.json")):
        try:
            stored = StoredRecord.from_json(path.read_text(encoding="utf-8"))
            reviewed = keep_reviewed and bool(stored.record.get(REVIEWED))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            reviewed = False
        if reviewed:  # kept, its model output to be made anew (model=None: the next run predicts it)
            restamped = StoredRecord(digest=digest, rel=stored.rel, source=stored.source, record=stored.record)
            atomic_write_text(path, restamped.to_json())
            kept += 1
        else:
            path.unlink(missing_ok=True)
    if not kept:
        shutil.rmtree(records, ignore_errors=True)  # stray temporary files too
    return kept


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def fingerprint_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """The settings that differ between two fingerprints: ``(dotted name, old, new)``, the
    predictor's ``config.`` prefix left out of the names; ``None`` for a value one side lacks."""
    before, after = _flatten(old), _flatten(new)
    changes = []
    for key in [*after, *(k for k in before if k not in after)]:
        a, b = before.get(key, _MISSING), after.get(key, _MISSING)
        if a != b:
            name = key[len("config."):] if key.startswith("config.") else key
            changes.append((name, None if a is _MISSING else a, None if b is _MISSING else b))
    return changes


def _refusal(output: Path, changes: list[tuple[str, Any, Any]]) -> str:
    lines = [f"{output} was labeled with other settings; this run would mix two kinds of labels in one dataset, "
             "so nothing was changed. What differs (before -> now):"]
    lines += [f"  {name}: {_short(a)} -> {_short(b)}" for name, a, b in changes or [("store version", None, None)]]
    lines.append("Relabel the folder with the new settings with overwrite=True (CLI: --overwrite; images reviewed in "
                 "the app are kept unless discard_reviewed=True / --discard-reviewed), or choose another output folder.")
    return "\n".join(lines)


def _short(value: Any, limit: int = 160) -> str:
    if value is None:
        return "(none)"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
