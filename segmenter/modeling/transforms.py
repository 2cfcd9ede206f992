"""SAM 2's image transforms: stretch to the square model input, and back.

The arithmetic of the reference ``SAM2Transforms``: RGB uint8 -> float [0, 1] -> bilinear
antialiased resize to ``image_size`` x ``image_size`` -> ImageNet normalisation (``ToTensor`` +
``Resize`` + ``Normalize`` without torchvision); prompt coordinates are divided by the original
width / height and multiplied by ``image_size``; masks are resized straight back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from segmenter.config import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "resize_to_square", "coords_to_square", "resize_masks"]


def resize_to_square(images: Sequence[np.ndarray], image_size: int, device: torch.device) -> torch.Tensor:
    """RGB uint8 (H, W, 3) arrays -> (B, 3, S, S) normalised float32 on ``device``."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1)
    out = torch.empty(len(images), 3, image_size, image_size, device=device)
    for i, img in enumerate(images):
        x = torch.from_numpy(np.ascontiguousarray(img)).to(device).permute(2, 0, 1)  # (3, H, W) uint8
        # a channel at a time for huge images: the float copy of a 16k x 16k image is 3 GB, of one channel 1 GB
        # (channels are resized independently, so the result is the same)
        groups = [x] if x[0].numel() <= LARGE_IMAGE_PIXELS else list(x.split(1))
        out[i] = torch.cat([_resize_unit(c, image_size) for c in groups])
        out[i] = (out[i] - mean) / std
    return out


LARGE_IMAGE_PIXELS = 4096 * 4096


def _resize_unit(x: torch.Tensor, image_size: int) -> torch.Tensor:  # (C, H, W) uint8 -> (C, S, S) in [0, 1]
    x = x.float().div(255)
    return F.interpolate(x[None], (image_size, image_size), mode="bilinear", align_corners=False, antialias=True)[0]


def coords_to_square(
    coords: np.ndarray | torch.Tensor, orig_hw: tuple[int, int], image_size: int, normalized: bool, device: torch.device
) -> torch.Tensor:
    """(..., 2) x/y in original pixels (or in [0, 1] with ``normalized``) -> pixels of the square input."""
    wh = torch.tensor([1, 1] if normalized else [orig_hw[1], orig_hw[0]], dtype=torch.float32, device=device)
    return torch.as_tensor(coords, device=device) / wh * float(image_size)


def resize_masks(low_res: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
    """(B, M, h, w) logits -> (B, M, H, W), bilinear."""
    return F.interpolate(low_res, orig_hw, mode="bilinear", align_corners=False)
