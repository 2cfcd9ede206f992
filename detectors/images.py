"""Image input for detectors: one image or a batch, decoded by :func:`gsam_runtime.images.load_image`.

Every detector turns its input into a list of RGB PIL images (what the transformers processors
take without guessing the channel layout). Decoding is the one shared by every package: files
come out EXIF-upright, alpha is composited over white, CMYK / 16-bit / palette files are
converted, grey arrays are replicated; errors name the offending item (``images[2]``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import numpy as np

from gsam_runtime.images import ImageSource, load_image

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["ImagesInput", "load_images"]

ImagesInput = Union[ImageSource, Sequence[ImageSource]]
"""One image (RGB ``uint8`` array, PIL image or file path), a sequence of them, or an
``(N, H, W, 3)`` uint8 array."""


def _to_pil(image: ImageSource, where: str) -> PILImage.Image:
    from PIL import Image

    name = f"{where} ({os.fspath(image)!r})" if isinstance(image, (str, os.PathLike)) else where
    return Image.fromarray(load_image(image, name=name))


def load_images(images: ImagesInput) -> list[PILImage.Image]:
    """Normalise a single image or a batch to a list of RGB PIL images.

    A 3-D array, a PIL image, a ``str`` or a path is one image; a 4-D ``(N, H, W, 3)`` array
    or a list/tuple is a batch.
    """
    from PIL import Image

    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [_to_pil(a, f"images[{i}]") for i, a in enumerate(images)]
    if isinstance(images, (np.ndarray, Image.Image, str, os.PathLike)):
        return [_to_pil(images, "image")]
    if isinstance(images, Sequence):
        return [_to_pil(im, f"images[{i}]") for i, im in enumerate(images)]
    raise ValueError(
        "images must be an image (RGB uint8 array, PIL image, path) or a list of them, "
        f"got {type(images).__name__}"
    )
