"""Input validation for the image predictor: images, points, boxes and mask prompts.

PIL images are decoded by the one image decoder of the project, :func:`gsam_runtime.images.load_image`
(EXIF orientation applied, alpha composited over white, CMYK / 16-bit / palette converted);
arrays must already be RGB uint8 (H, W, 3). The model-specific transforms (resize, prompt
frame) belong to the models: :mod:`segmenter.modeling.transforms` (SAM 2) and
:mod:`segmenter.modeling.sam1.transforms` (SAM 1).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image

from gsam_runtime.images import load_image

if TYPE_CHECKING:
    import torch

__all__ = ["ImageInput", "as_rgb_array", "is_tensor", "check_points", "check_boxes", "check_mask_input"]

ImageInput = Union[np.ndarray, Image.Image]
"""An RGB uint8 (H, W, 3) array or a PIL image."""


def is_tensor(x: Any) -> bool:
    """Whether ``x`` is a ``torch.Tensor``, without importing torch (none exists before it is imported)."""
    torch_module = sys.modules.get("torch")
    return torch_module is not None and isinstance(x, torch_module.Tensor)


def as_rgb_array(image: ImageInput, name: str = "image") -> np.ndarray:
    """Validate an image and return it as an (H, W, 3) uint8 RGB array (no copy for arrays).

    PIL images are decoded with :func:`gsam_runtime.images.load_image` (a new, writable array).
    """
    if isinstance(image, Image.Image):
        return load_image(image, name=name)
    if is_tensor(image):
        raise ValueError(
            f"{name} is a torch.Tensor; pass an (H, W, 3) uint8 RGB numpy array or a PIL image"
        )
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"{name} must be an (H, W, 3) uint8 RGB numpy array or a PIL image, got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise ValueError(
            f"{name} must have dtype uint8 with values in [0, 255], got {image.dtype}; "
            "convert with (img * 255).clip(0, 255).astype(np.uint8) if it is a [0, 1] float image"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{name} must have shape (H, W, 3) (RGB, channels last), got {tuple(image.shape)}"
            + ("; convert grayscale with np.stack([img] * 3, -1)" if image.ndim == 2 else "")
            + ("; drop the alpha channel with img[..., :3]" if image.ndim == 3 and image.shape[2] == 4 else "")
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {tuple(image.shape)}")
    return image


def _finite(name: str, arr: np.ndarray) -> None:
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def check_points(
    point_coords: Any, point_labels: Any
) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """Points (N, 2) or (B, N, 2) with labels (N,) or (B, N) of 0 (background) / 1 (foreground)."""
    if point_coords is None:
        if point_labels is not None:
            raise ValueError("point_labels were given without point_coords")
        return None, None
    if point_labels is None:
        raise ValueError("point_labels must be given with point_coords (1 = foreground, 0 = background)")
    coords = np.asarray(_to_numpy(point_coords), dtype=np.float32)
    labels = np.asarray(_to_numpy(point_labels))
    if coords.ndim not in (2, 3) or coords.shape[-1] != 2:
        raise ValueError(f"point_coords must have shape (N, 2) or (B, N, 2), got {coords.shape}")
    if labels.shape != coords.shape[:-1]:
        raise ValueError(
            f"point_labels shape {labels.shape} does not match point_coords shape {coords.shape} "
            f"(expected {coords.shape[:-1]})"
        )
    if coords.shape[-2] == 0:
        raise ValueError("point_coords is empty; pass None for no points")
    _finite("point_coords", coords)
    if labels.dtype.kind == "f":
        _finite("point_labels", labels)
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        raise ValueError(
            f"point_labels must be 0 (background) or 1 (foreground), got {np.unique(labels[bad]).tolist()}"
        )
    return coords, labels.astype(np.int32)


def check_boxes(box: Any, image_hw: tuple[int, int] | None, normalized: bool) -> np.ndarray | None:
    """Boxes xyxy (4,) or (B, 4); they must overlap the image and have x0 <= x1, y0 <= y1."""
    if box is None:
        return None
    boxes = np.asarray(_to_numpy(box), dtype=np.float32)
    if boxes.shape == (4,):
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"box must have shape (4,) or (B, 4) in xyxy format, got {np.shape(box)}")
    if boxes.shape[0] == 0:
        raise ValueError("box is empty; pass None for no box")
    _finite("box", boxes)
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        i = int(np.flatnonzero(inverted)[0])
        raise ValueError(f"box {i} {boxes[i].tolist()} is not xyxy (x0 <= x1 and y0 <= y1)")
    w, h = (1.0, 1.0) if normalized else (float(image_hw[1]), float(image_hw[0]))
    outside = (boxes[:, 2] < 0) | (boxes[:, 3] < 0) | (boxes[:, 0] > w) | (boxes[:, 1] > h)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"box {i} {boxes[i].tolist()} lies entirely outside the image "
            f"({'normalised [0, 1]' if normalized else f'width {int(w)}, height {int(h)}'})"
        )
    return boxes


def check_mask_input(mask_input: Any, low_res_hw: tuple[int, int]) -> np.ndarray | torch.Tensor | None:
    """Low-res mask logits (1, h, w) or (B, 1, h, w), as returned by a previous ``predict``.

    A tensor stays on its device (no host round trip), as float32.
    """
    if mask_input is None:
        return None
    tensor = is_tensor(mask_input)
    m = mask_input.detach().float() if tensor else np.asarray(mask_input, dtype=np.float32)
    given = tuple(m.shape)
    if m.ndim == 3:
        m = m[None]
    if m.ndim != 4 or m.shape[1] != 1 or tuple(m.shape[2:]) != tuple(low_res_hw):
        raise ValueError(
            f"mask_input must have shape (1, {low_res_hw[0]}, {low_res_hw[1]}) or "
            f"(B, 1, {low_res_hw[0]}, {low_res_hw[1]}) (low-res logits from a previous predict), got {given}"
        )
    if not (bool(m.isfinite().all()) if tensor else np.isfinite(m).all()):
        raise ValueError("mask_input contains NaN or infinite values")
    return m


def _to_numpy(x: Any) -> Any:
    if is_tensor(x):
        return x.detach().float().cpu().numpy()
    return x
