"""Finding the images of a folder: extensions matched case-insensitively, hidden files skipped, sorted."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "list_images", "normalise_extensions"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""Extensions :func:`list_images` matches when ``extension=None``."""


def normalise_extensions(extension: str | Sequence[str] | None) -> tuple[str, ...]:
    """One suffix, several, or ``None`` (:data:`IMAGE_EXTENSIONS`) -> lower-case suffixes with a dot."""
    if extension is None:
        return IMAGE_EXTENSIONS
    items = [extension] if isinstance(extension, str) else list(extension)
    if not items:
        raise ValueError("extension: give at least one file extension, e.g. '.jpg'")
    out = []
    for e in items:
        if not isinstance(e, str) or not e.strip(". "):
            raise ValueError(f"extension: invalid file extension {e!r}; expected e.g. '.jpg'")
        e = e.strip().lower()
        out.append(e if e.startswith(".") else "." + e)
    return tuple(out)


def list_images(
    folder: str | os.PathLike,
    extension: str | Sequence[str] | None = ".jpg",
    recursive: bool = False,
    exclude: str | os.PathLike | None = None,
) -> list[Path]:
    """Files under ``folder`` whose name ends with ``extension`` (case-insensitive), sorted.

    ``extension`` is one suffix (``".jpg"`` or ``"jpg"``), a sequence of suffixes, or ``None``
    for :data:`IMAGE_EXTENSIONS`; ``.jpg`` does not match ``.jpeg``. Hidden files and folders
    (names starting with ``.``) are skipped; symlinked sub-folders are not followed.
    ``exclude``: a folder whose contents are left out (e.g. an output folder inside the input).
    Sorted by the path relative to ``folder`` (POSIX form), so the order is the same on every
    platform and run.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"input folder not found: {str(root)!r}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {str(root)!r}")
    suffixes = normalise_extensions(extension)
    skip = os.path.realpath(exclude) if exclude is not None else None
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skip is not None and os.path.realpath(here) == skip:
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        for f in filenames:
            if f.startswith(".") or not f.lower().endswith(suffixes):
                continue
            p = here / f
            if p.is_file():
                found.append((p.relative_to(root).as_posix(), p))
    found.sort(key=lambda t: t[0])
    return [p for _, p in found]
