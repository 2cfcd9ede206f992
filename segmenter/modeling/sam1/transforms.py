"""SAM 1's image and prompt transforms: resize the longest side, pad to a square, and back.

The same arithmetic as ``segment_anything.utils.transforms.ResizeLongestSide`` and
``Sam.preprocess`` / ``Sam.postprocess_masks``: a PIL bilinear resize of the uint8 image (what
torchvision does for PIL inputs), normalisation in 0..255 space, zero padding at the bottom and
right, coordinates scaled per axis in float64.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["preprocess_shape", "resize_longest_side", "scale_coords", "unpad_and_resize_masks"]


def preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """(h, w) of an image whose longest side is resized to ``long_side`` (rounded half up)."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 with max(h, w) == ``long_side`` (PIL bilinear, antialiased)."""
    h, w = preprocess_shape(image.shape[0], image.shape[1], long_side)
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.BILINEAR))


def scale_coords(
    coords: np.ndarray, orig_hw: tuple[int, int], input_hw: tuple[int, int], normalized: bool = False
) -> np.ndarray:
    """(..., 2) x/y in original pixels (or in [0, 1] with ``normalized``) -> pixels of the resized image."""
    (oh, ow), (nh, nw) = orig_hw, input_hw
    sx, sy = (float(nw), float(nh)) if normalized else (nw / ow, nh / oh)
    out = np.array(coords, dtype=np.float64)
    out[..., 0] *= sx
    out[..., 1] *= sy
    return out.astype(np.float32)


def unpad_and_resize_masks(
    masks: torch.Tensor, image_size: int, input_hw: tuple[int, int], orig_hw: tuple[int, int]
) -> torch.Tensor:
    """(B, M, h, w) low-res logits -> (B, M, H, W): up to the padded square, crop the image, resize."""
    masks = F.interpolate(masks, (image_size, image_size), mode="bilinear", align_corners=False)
    masks = masks[..., : input_hw[0], : input_hw[1]]
    return F.interpolate(masks, tuple(orig_hw), mode="bilinear", align_corners=False)
