"""Drop-in for Meta's ``segment_anything`` (SAM 1): change the import lines, keep the code.

::

    # from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
    from segmenter.compat.segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry

    sam = sam_model_registry["vit_h"](checkpoint="sam_vit_h_4b8939.pth")
    predictor = SamPredictor(sam)

``sam_model_registry[...]`` returns our :class:`~segmenter.SAM1Model` on the CPU in eval mode
(move it with ``sam.to(device)``, as with Meta's). The model is built at the input size its
checkpoint was saved for (1024 for Meta's files; ``image_size=`` picks another). As in Meta's
``SamPredictor``, ``predict`` takes prompts in pixels of the original image while
``predict_torch`` takes them in the resized frame of the model input, made with
``predictor.transform.apply_coords_torch`` / ``apply_boxes_torch``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from segmenter.amg.generator import AutomaticMaskGenerator
from segmenter.build import build_model, read_checkpoint
from segmenter.checkpoints.sam1 import saved_image_size
from segmenter.config import SAM1Config, load_model_config
from segmenter.image.predictor import EmbeddedImages, ImagePredictor
from segmenter.modeling.sam1 import SAM1Model
from segmenter.modeling.sam1.transforms import preprocess_shape, resize_longest_side

__all__ = [
    "ResizeLongestSide",
    "SamAutomaticMaskGenerator",
    "SamPredictor",
    "build_sam",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "sam_model_registry",
]


def _build(name: str, checkpoint: str | Path | None = None, image_size: int | None = None) -> SAM1Model:
    cfg = load_model_config(name)
    if not isinstance(cfg, SAM1Config):
        raise ValueError(f"{name!r} is not a SAM 1 config")
    state = None
    if checkpoint is not None:
        state = read_checkpoint(checkpoint, cfg)
        if image_size is None:  # the size the checkpoint was saved for
            image_size = saved_image_size(state, cfg.vit.patch_size)
    model = build_model(cfg.with_image_size(image_size), state, "cpu", source=str(checkpoint))
    assert isinstance(model, SAM1Model)
    return model


def build_sam_vit_h(checkpoint: str | Path | None = None, image_size: int | None = None) -> SAM1Model:
    """SAM ViT-H (``sam_vit_h_4b8939.pth``); random weights without a checkpoint."""
    return _build("sam_vit_h", checkpoint, image_size)


def build_sam_vit_l(checkpoint: str | Path | None = None, image_size: int | None = None) -> SAM1Model:
    """SAM ViT-L (``sam_vit_l_0b3195.pth``)."""
    return _build("sam_vit_l", checkpoint, image_size)


def build_sam_vit_b(checkpoint: str | Path | None = None, image_size: int | None = None) -> SAM1Model:
    """SAM ViT-B (``sam_vit_b_01ec64.pth``)."""
    return _build("sam_vit_b", checkpoint, image_size)


build_sam = build_sam_vit_h

sam_model_registry: dict[str, Callable[..., SAM1Model]] = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
}


class ResizeLongestSide:
    """Resize so that the longest side is ``target_length``; coordinates and boxes follow."""

    def __init__(self, target_length: int) -> None:
        self.target_length = int(target_length)

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        return preprocess_shape(oldh, oldw, long_side_length)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) uint8 -> resized (h, w, C) uint8 (the model's own resize), a new writable array."""
        return np.array(resize_longest_side(image, self.target_length))

    def apply_coords(self, coords: np.ndarray, original_size: Sequence[int]) -> np.ndarray:
        """(..., 2) x/y in original pixels -> float64 pixels of the resized image."""
        sx, sy = self._scales(original_size)
        out = np.array(coords, dtype=float)
        out[..., 0] = out[..., 0] * sx
        out[..., 1] = out[..., 1] * sy
        return out

    def apply_boxes(self, boxes: np.ndarray, original_size: Sequence[int]) -> np.ndarray:
        """(B, 4) xyxy -> (B, 4) in the resized image."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float -> (B, C, h, w), antialiased bilinear (close to, not equal to, apply_image)."""
        size = preprocess_shape(image.shape[-2], image.shape[-1], self.target_length)
        return F.interpolate(image, size, mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: Sequence[int]) -> torch.Tensor:
        """(..., 2) tensor -> float32 tensor in the resized image (a copy)."""
        sx, sy = self._scales(original_size)
        out = coords.detach().clone().to(torch.float)
        out[..., 0] = out[..., 0] * sx
        out[..., 1] = out[..., 1] * sy
        return out

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: Sequence[int]) -> torch.Tensor:
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def _scales(self, original_size: Sequence[int]) -> tuple[float, float]:
        old_h, old_w = (int(s) for s in original_size)
        new_h, new_w = preprocess_shape(old_h, old_w, self.target_length)
        return new_w / old_w, new_h / old_h


class SamPredictor(ImagePredictor):
    """Meta's ``SamPredictor`` for SAM 1 models: :class:`segmenter.ImagePredictor` plus its extras."""

    def __init__(self, sam_model: SAM1Model, autocast: bool | None = None) -> None:
        if not isinstance(sam_model, SAM1Model):
            raise ValueError(
                "SamPredictor needs a SAM 1 model (sam_model_registry[...]); for SAM 2 use "
                "segmenter.compat.sam2.SAM2ImagePredictor"
            )
        super().__init__(sam_model, mask_threshold=0.0, autocast=autocast)
        self.transform = ResizeLongestSide(sam_model.image_size)

    # ------------------------------------------------------------------ Meta's attributes
    @property
    def features(self) -> torch.Tensor | None:
        """(1, 256, h, w) embedding of the image set, else None."""
        return None if self._features is None else self._features.image_embed

    @property
    def original_size(self) -> tuple[int, int] | None:
        return None if self._features is None else tuple(self._features.orig_hw[0])

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(h, w) of the resized image inside the square model input."""
        return None if self._features is None else tuple(self._features.input_hw[0])

    def reset_image(self) -> None:
        self.reset_predictor()

    # ------------------------------------------------------------------ embedding
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:  # type: ignore[override]
        """Embed an (H, W, 3) uint8 image given as ``"RGB"`` or ``"BGR"`` (OpenCV's order)."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if image_format == "BGR":
            if not isinstance(image, np.ndarray) or image.ndim != 3:
                raise ValueError("a BGR image must be an (H, W, 3) uint8 numpy array")
            image = image[..., ::-1]
        super().set_image(image)

    @torch.inference_mode()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: Sequence[int]) -> None:
        """Embed a (1, 3, h, w) image already resized with ``transform`` (long side = model input size)."""
        s = self.model.image_size
        shape = tuple(transformed_image.shape)
        if len(shape) != 4 or shape[:2] != (1, 3) or max(shape[2:]) != s:
            raise ValueError(f"set_torch_image expects a (1, 3, h, w) tensor with max(h, w) == {s}, got {shape}")
        self.reset_predictor()
        h, w = shape[2:]
        x = (transformed_image.to(self.device).float() - self.model.pixel_mean) / self.model.pixel_std
        x = F.pad(x, (0, s - w, 0, s - h))  # (1, 3, S, S), zero padding at the bottom / right
        with self._amp():
            embed = self.model.embed_images(x)
        orig = (int(original_image_size[0]), int(original_image_size[1]))
        self._features = EmbeddedImages(embed, [], [orig], [(h, w)])

    # ------------------------------------------------------------------ prediction
    @torch.inference_mode()
    def predict_torch(  # type: ignore[override]
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prompts in the model-input frame (``transform.apply_*_torch``), as Meta's.

        Args:
            point_coords: (B, N, 2), point_labels: (B, N); boxes: (B, 4) xyxy; mask_input: (B, 1, h, w).
        Returns:
            masks (B, C, H, W) bool (logits with ``return_logits``), IoU predictions (B, C) and
            low-res logits (B, C, h, w).
        """
        feats = self._require_features()
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        dev = self.device
        points = None
        if point_coords is not None:
            points = (torch.as_tensor(point_coords, device=dev), torch.as_tensor(point_labels, device=dev))
        boxes = None if boxes is None else torch.as_tensor(boxes, device=dev)
        mask_input = None if mask_input is None else torch.as_tensor(mask_input, device=dev)
        with self._amp():
            low_res, iou = self.model.decode_masks(
                feats.image_embed[:1], points=points, boxes=boxes, mask_input=mask_input,
                multimask_output=multimask_output,
            )  # fmt: skip
        low_res = low_res.float()
        masks = self.upscale_logits(low_res)
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, iou.float(), low_res


class SamAutomaticMaskGenerator(AutomaticMaskGenerator):
    """Meta's ``SamAutomaticMaskGenerator``: its arguments, defaults and positional order."""

    def __init__(
        self,
        model: SAM1Model,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
    ) -> None:
        super().__init__(
            model,
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            stability_score_offset=stability_score_offset,
            box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers,
            crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            point_grids=point_grids,
            min_mask_region_area=min_mask_region_area,
            output_mode=output_mode,
        )

