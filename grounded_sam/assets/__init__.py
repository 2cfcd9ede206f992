"""Sample inputs shipped with the package, so that the first command runs on a fresh machine.

- :func:`sample_image`: ``chelsea.jpg``, "Chelsea the cat" (451 x 300), CC0 by Stéfan van der Walt,
  from scikit-image's data directory.
- :func:`sample_video`: ``chelsea_pan.mp4``, 16 frames (2 s, 320 x 224, H.264) panning and zooming
  over the same photo (made by :mod:`grounded_sam.assets.make_samples`).

Both show one cat: :data:`SAMPLE_PROMPT` finds it. Licences: NOTICE.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SAMPLE_PROMPT", "sample_image", "sample_video"]

SAMPLE_PROMPT = "a cat:cat"
_HERE = Path(__file__).resolve().parent


def _asset(name: str) -> Path:
    path = _HERE / name
    if not path.is_file():
        raise FileNotFoundError(f"the sample {name} is missing from this installation ({path}); reinstall grounded-sam")
    return path


def sample_image() -> Path:
    """Path of the bundled sample photo (a cat)."""
    return _asset("chelsea.jpg")


def sample_video() -> Path:
    """Path of the bundled sample clip (the same cat, panned and zoomed)."""
    return _asset("chelsea_pan.mp4")
