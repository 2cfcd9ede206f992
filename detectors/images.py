"""Image input for detectors: RGB ``uint8`` arrays, PIL images or file paths, validated once.

Every detector turns its input into a list of RGB PIL images (what the transformers processors
take without guessing the channel layout) plus the original ``(width, height)`` of each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["ImageInput", "ImagesInput", "load_image", "load_images"]

ImageInput = Union[np.ndarray, "PILImage.Image", str, os.PathLike]
"""One image: an RGB ``uint8`` array ``(H, W, 3)``, a PIL image (any mode) or a file path."""

ImagesInput = ImageInput | Sequence[ImageInput]
"""One image, a sequence of images, or an ``(N, H, W, 3)`` uint8 array."""


def _from_array(array: np.ndarray, where: str) -> PILImage.Image:
    from PIL import Image

    if array.dtype != np.uint8:
        raise ValueError(
            f"{where}: expected an RGB uint8 array, got dtype {array.dtype}; convert with "
            "(array * 255).clip(0, 255).astype(np.uint8) for floats in [0, 1]"
        )
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{where}: expected an RGB array of shape (H, W, 3), got shape {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{where}: the image is empty (shape {tuple(array.shape)})")
    return Image.fromarray(np.ascontiguousarray(array))


def _from_path(path: str | os.PathLike, where: str) -> PILImage.Image:
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{where}: image file not found: {str(p)!r}")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{where}: could not read image file {str(p)!r}: {e}") from e


def load_image(image: ImageInput, where: str = "image") -> PILImage.Image:
    """Validate one image and return it as an RGB PIL image (``where`` names it in errors)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"{where}: the image is empty ({image.width}x{image.height})")
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, np.ndarray):
        return _from_array(image, where)
    if isinstance(image, (str, os.PathLike)):
        return _from_path(image, where)
    raise ValueError(
        f"{where}: expected an RGB uint8 numpy array, a PIL image or a file path, got {type(image).__name__}"
    )


def load_images(images: ImagesInput) -> list[PILImage.Image]:
    """Normalise a single image or a batch to a list of RGB PIL images.

    A 3-D array, a PIL image, a ``str`` or a path is one image; a 4-D ``(N, H, W, 3)`` array
    or a list/tuple is a batch. Errors name the offending item (``images[2]``).
    """
    from PIL import Image

    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [_from_array(a, f"images[{i}]") for i, a in enumerate(images)]
    if isinstance(images, (np.ndarray, Image.Image, str, os.PathLike)):
        return [load_image(images, "image")]
    if isinstance(images, Sequence):
        return [load_image(im, f"images[{i}]") for i, im in enumerate(images)]
    raise ValueError(
        "images must be an image (RGB uint8 array, PIL image, path) or a list of them, "
        f"got {type(images).__name__}"
    )
