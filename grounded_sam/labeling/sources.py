"""The images a job labels: :class:`LabelItem` (a local file) and :class:`RemoteItem` (pyarrow).

An item knows its POSIX path relative to the input folder (``rel``, the key of its record), how
reports name it, its size and mtime (a record stays valid while they do not change), how to
decode it (:func:`gsam_runtime.images.load_image`) and how to copy its bytes into the dataset.

Local folders are listed by :func:`list_local_items` (:func:`~grounded_sam.pipeline.files.scan_folder`'s
rules); a URI that pyarrow understands (``s3://``, ``gs://``, ``hdfs://``, ``abfs://`` ...), or a
path on an explicit ``pyarrow.fs.FileSystem``, by :func:`list_remote_images`, with the same rules.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from grounded_sam.export.safe_io import atomic_copy, atomic_open
from grounded_sam.pipeline.files import normalise_extensions, scan_folder
from gsam_runtime.images import load_image, load_image_bytes

__all__ = ["LabelItem", "RemoteItem", "Listing", "list_local_items", "list_remote_images", "is_remote",
           "local_folder"]


@dataclass(frozen=True)
class LabelItem:
    """One input image: where it is and its POSIX path relative to the input folder."""

    path: Path  # source file
    rel: str

    @property
    def name(self) -> str:  # how reports name it
        return str(self.path)

    def stat(self) -> dict[str, int]:
        """``{"size", "mtime_ns"}`` of the source, as its record stores them."""
        st = self.path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def load(self) -> np.ndarray:
        return load_image(self.path, name=self.name)

    def copy_to(self, dest: Path) -> None:
        atomic_copy(self.path, dest)


@dataclass(frozen=True)
class RemoteItem(LabelItem):
    """An image on a pyarrow filesystem; ``path`` is its path there, ``uri`` how reports name it."""

    uri: str = ""
    size: int = 0
    mtime_ns: int = 0
    fs: Any = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.uri

    def stat(self) -> dict[str, int]:  # as listed: one listing call instead of a request per image
        return {"size": self.size, "mtime_ns": self.mtime_ns}

    def load(self) -> np.ndarray:
        with self.fs.open_input_stream(str(self.path)) as f:
            return load_image_bytes(f.read(), name=self.uri)

    def copy_to(self, dest: Path) -> None:
        with self.fs.open_input_stream(str(self.path)) as src, atomic_open(dest, "wb") as out:
            shutil.copyfileobj(src, out, length=1 << 20)


@dataclass(frozen=True)
class Listing:
    """The inputs of a job: the input folder as records and reports name it, and its images.

    ``others``: the files left out for their extension (relative paths; local folders only), and
    ``extensions`` the ones looked for, so that the report can say what it did not label.
    """

    input_id: str
    items: list[LabelItem]
    others: list[str] = field(default_factory=list)
    extensions: tuple[str, ...] = ()


def list_local_items(
    input_folder: str | os.PathLike, extension: str | Sequence[str] | None, recursive: bool, output: Path
) -> Listing:
    """The images of a local folder, leaving out ``output`` when it lies inside it."""
    root = Path(input_folder).resolve()
    if output == root:
        raise ValueError(f"output_folder must differ from input_folder ({root})")
    scan = scan_folder(root, extension, recursive=recursive, exclude=output)
    return Listing(str(root), [LabelItem(p, p.relative_to(root).as_posix()) for p in scan.files],
                   [p.relative_to(root).as_posix() for p in scan.others], normalise_extensions(extension))


def is_remote(folder: Any, filesystem: Any = None) -> bool:
    """Whether ``folder`` is read through pyarrow (an explicit filesystem, or a non-``file://`` URI)."""
    return filesystem is not None or (isinstance(folder, str) and "://" in folder and not folder.startswith("file://"))


def local_folder(folder: str | os.PathLike) -> Path:
    """A local folder, or the path of a ``file://`` URI."""
    text = os.fspath(folder)
    return Path(unquote(urlparse(text).path)) if text.startswith("file://") else Path(text)


def list_remote_images(
    folder: str, extension: str | Sequence[str] | None = ".jpg", recursive: bool = False, filesystem: Any = None
) -> tuple[str, list[RemoteItem], Any]:
    """``(input id, items, filesystem)`` for a URI or a path on ``filesystem``.

    The rules of :func:`~grounded_sam.pipeline.files.scan_folder`: case-insensitive extensions, hidden
    files and folders skipped, sorted by the POSIX path relative to ``folder``.
    """
    from pyarrow import fs as pafs

    if filesystem is None:
        filesystem, root = pafs.FileSystem.from_uri(folder)
    else:
        root = folder
    root = root.rstrip("/") or "/"
    display = folder.rstrip("/") or folder
    kind = filesystem.get_file_info(root).type
    if kind == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input folder not found: {folder!r}")
    if kind != pafs.FileType.Directory:
        raise NotADirectoryError(f"not a folder: {folder!r}")
    suffixes = normalise_extensions(extension)
    found = []
    for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=recursive)):
        rel = posixpath.relpath("/" + info.path.lstrip("/"), "/" + root.strip("/"))  # some filesystems drop the "/"
        if info.type != pafs.FileType.File or any(p.startswith(".") for p in rel.split("/")):
            continue
        if rel.lower().endswith(suffixes):
            found.append(RemoteItem(PurePosixPath(info.path), rel, uri=f"{display}/{rel}", size=int(info.size or 0),
                                    mtime_ns=int(info.mtime_ns or 0), fs=filesystem))
    found.sort(key=lambda it: it.rel)
    return display, found, filesystem
