"""Writing files safely: atomic replaces and output paths that cannot leave their folder.

- :func:`safe_output_path` joins a relative name onto an output folder and refuses names that
  would land outside it: absolute paths, drive letters, ``..`` components (POSIX or Windows
  separators), NUL bytes, and symlinks (in the folder or on the way) that resolve outside.
- :class:`AtomicFile`, :func:`atomic_open` / :func:`atomic_write_bytes` / :func:`atomic_write_text` /
  :func:`atomic_copy` write to a temporary file in the target's folder and ``os.replace`` it
  over the target, so a reader (or a resumed job) sees either the old file or the complete new
  one, never a torn one. Durability against power loss (``fsync``) is not attempted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any

__all__ = [
    "UnsafePathError",
    "check_relative_name",
    "safe_output_path",
    "AtomicFile",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_copy",
    "TMP_SUFFIX",
]

TMP_SUFFIX = ".gs-tmp"


class UnsafePathError(ValueError):
    """An output file name would escape its output folder."""


def _within(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        return False


def check_relative_name(name: str | os.PathLike) -> str:
    """Validate a relative file name (no absolute path, drive, ``..`` or NUL); return it as POSIX."""
    text = os.fspath(name)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text or "\x00" in text:
        raise UnsafePathError(f"invalid output file name {text!r}")
    posix, win = PurePosixPath(text), PureWindowsPath(text)
    if posix.is_absolute() or win.is_absolute() or win.drive or win.root:
        raise UnsafePathError(f"output file name {text!r} is absolute; it must be relative to the output folder")
    if ".." in posix.parts or ".." in win.parts:
        raise UnsafePathError(f"output file name {text!r} contains '..'; it must stay inside the output folder")
    parts = [p for p in posix.parts if p not in ("", ".")]
    if not parts:
        raise UnsafePathError(f"invalid output file name {text!r}")
    return "/".join(parts)


def safe_output_path(root: str | os.PathLike, name: str | os.PathLike) -> Path:
    """``root / name``, guaranteed to resolve inside ``root`` (raises :class:`UnsafePathError`)."""
    parts = check_relative_name(name).split("/")
    text = os.fspath(name)
    root_real = os.path.realpath(root)
    target = os.path.join(root_real, *parts)
    if not _within(os.path.realpath(target), root_real):
        raise UnsafePathError(
            f"output file {text!r} resolves outside the output folder {root_real!r} (through a symlink)"
        )
    return Path(target)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


class AtomicFile:
    """A file written under a temporary name next to ``path``; :meth:`commit` puts it in place.

    :meth:`discard` removes the temporary file and leaves ``path`` as it was. Text mode
    defaults to UTF-8 with ``\\n`` line ends. ``file`` is the open temporary file.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> None:
        if not any(c in mode for c in "wx") or "+" in mode:
            raise ValueError(f"atomic files are new files only; mode {mode!r} is not supported")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = _tmp_name(self.path)
        if "b" not in mode:
            kwargs.setdefault("encoding", "utf-8")
            kwargs.setdefault("newline", "\n")
        self.file: IO[Any] = open(self._tmp, mode.replace("x", "w"), **kwargs)  # noqa: SIM115 - commit/discard close it

    def commit(self) -> Path:
        """Close the temporary file and replace ``path`` with it; returns ``path``."""
        self.file.close()
        os.replace(self._tmp, self.path)
        return self.path

    def discard(self) -> None:
        """Close and remove the temporary file (``path`` is left untouched). Safe to repeat."""
        self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open an :class:`AtomicFile`; on clean exit it replaces ``path`` atomically.

    On an exception (including ``KeyboardInterrupt``) the temporary file is removed and
    ``path`` is left untouched.
    """
    target = AtomicFile(path, mode, **kwargs)
    try:
        yield target.file
        target.commit()
    except BaseException:
        target.discard()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy ``src``'s bytes to ``dst`` (temp file + rename); metadata is not copied."""
    with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, length=1 << 20)
