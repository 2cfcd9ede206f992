"""Finding the images (or videos) of a folder: extensions matched case-insensitively, hidden files
skipped, sorted; :func:`scan_folder` also names the files it left out, so a command can say so."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "FolderScan", "scan_folder", "list_images", "normalise_extensions"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""Extensions :func:`list_images` matches when ``extension=None``: the one list of every command."""
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v")
"""Extensions of the videos a video labeling job picks up by default."""


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


@dataclass(frozen=True)
class FolderScan:
    """What :func:`scan_folder` found: the matching files and the other (non-hidden) files it left out."""

    files: list[Path]
    others: list[Path]


def scan_folder(
    folder: str | os.PathLike,
    extension: str | Sequence[str] | None = ".jpg",
    recursive: bool = False,
    exclude: str | os.PathLike | None = None,
) -> FolderScan:
    """The files of ``folder`` whose name ends with ``extension`` (rules of :func:`list_images`), and
    the other files of the folders it looked in (hidden ones and ``exclude``'s aside), both sorted."""
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"input folder not found: {str(root)!r}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {str(root)!r}")
    suffixes = normalise_extensions(extension)
    skip = os.path.realpath(exclude) if exclude is not None else None
    found: list[tuple[str, Path]] = []
    others: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skip is not None and os.path.realpath(here) == skip:
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        for f in filenames:
            p = here / f
            if f.startswith(".") or not p.is_file():
                continue
            (found if f.lower().endswith(suffixes) else others).append((p.relative_to(root).as_posix(), p))
    return FolderScan(_by_rel(found), _by_rel(others))


def _by_rel(entries: list[tuple[str, Path]]) -> list[Path]:
    return [p for _, p in sorted(entries, key=lambda t: t[0])]


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
    return scan_folder(folder, extension, recursive, exclude).files
