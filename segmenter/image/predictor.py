"""Promptable single-image segmentation: embed once, decode many prompts.

Arguments, return types and shapes follow the official ``SAM2ImagePredictor`` for SAM 2 models
and ``segment_anything.SamPredictor`` for SAM 1 models (whose ``predict`` returns bool masks and
unclamped low-res logits); on top of that, inputs are validated with clear errors and every box
of an image is decoded in one call. The predictor is typed against
:class:`~segmenter.modeling.interface.SegmentationModel`: what differs between the families
(preprocessing, the prompt frame, how boxes are encoded, how masks go back to the image, the
output types) is the model's own business.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gsam_runtime.device import autocast
from segmenter.image.transforms import ImageInput, as_rgb_array, check_boxes, check_mask_input, check_points
from segmenter.modeling.interface import HW, MaskLogits, Points, SegmentationModel

if TYPE_CHECKING:
    from segmenter.export.runtime import OnnxImagePredictor

__all__ = ["ImagePredictor", "EmbeddedImages"]


@dataclass
class EmbeddedImages:
    """The image(s) set on a predictor: their features and where each sits in the model input."""

    image_embed: torch.Tensor  # (B, C, h, w); SAM 2: no-memory embedding added
    high_res_feats: list[torch.Tensor]  # SAM 2: [(B, 32, 4h, 4w), (B, 64, 2h, 2w)]; SAM 1: []
    orig_hw: list[HW]
    input_hw: list[HW]  # the image's extent inside the square model input


class ImagePredictor:
    """``set_image`` computes the embedding; ``predict`` turns prompts into masks.

    Args:
        model: a SAM 2 or SAM 1 model from :func:`segmenter.build_sam` / :func:`segmenter.from_pretrained`.
        mask_threshold: logits above it are foreground.
        autocast: run under bf16 autocast; ``None`` = on for CUDA devices, off elsewhere.
    """

    def __init__(self, model: SegmentationModel, mask_threshold: float = 0.0, autocast: bool | None = None) -> None:
        if not isinstance(model, SegmentationModel):
            raise ValueError(
                f"ImagePredictor needs a SAM 2 or SAM 1 model (segmenter.build_sam), got {type(model).__name__}"
            )
        self.model = model
        model.eval()
        self.mask_threshold = float(mask_threshold)
        self._autocast = autocast
        self._features: EmbeddedImages | None = None
        self._is_batch = False

    @classmethod
    def from_pretrained(
        cls, model_id: str, device: str | torch.device | None = None, image_size: int | None = None, **kwargs: Any
    ) -> ImagePredictor:
        """Load a model by hub id or local checkpoint (see :func:`segmenter.from_pretrained`)."""
        from segmenter.build import from_pretrained

        return cls(from_pretrained(model_id, device=device, image_size=image_size), **kwargs)

    @staticmethod
    def from_onnx(folder: str | os.PathLike[str], **kwargs: Any) -> OnnxImagePredictor:
        """An ONNX Runtime predictor with the same ``set_image`` / ``predict`` for a folder written by
        ``grounded-sam export --format onnx`` (:class:`segmenter.export.runtime.OnnxImagePredictor`;
        ``kwargs``: ``mask_threshold``, ``providers``, ``verify``, ``threads``). Needs ``grounded-sam[onnx]``."""
        from segmenter.export.runtime import OnnxImagePredictor

        return OnnxImagePredictor(folder, **kwargs)

    # ------------------------------------------------------------------ state
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def is_image_set(self) -> bool:
        return self._features is not None

    def reset_predictor(self) -> None:
        self._features = None
        self._is_batch = False

    def _amp(self):
        enabled = self.device.type == "cuda" if self._autocast is None else self._autocast
        return autocast(self.device, enabled=enabled)

    # ------------------------------------------------------------------ embedding
    @torch.inference_mode()
    def set_image(self, image: ImageInput) -> None:
        """Embed one RGB image ((H, W, 3) uint8 array or PIL image)."""
        self.reset_predictor()
        img = as_rgb_array(image)
        self._features = self._embed([img])

    @torch.inference_mode()
    def set_image_batch(self, image_list: Sequence[ImageInput]) -> None:
        """Embed several RGB images in one forward pass (for :meth:`predict_batch`)."""
        self.reset_predictor()
        if isinstance(image_list, np.ndarray) or not isinstance(image_list, Sequence):
            raise ValueError("set_image_batch expects a list of images (RGB uint8 arrays or PIL images)")
        if len(image_list) == 0:
            raise ValueError("set_image_batch got an empty list of images")
        imgs = [as_rgb_array(im, name=f"image_list[{i}]") for i, im in enumerate(image_list)]
        self._features = self._embed(imgs)
        self._is_batch = True

    def _embed(self, imgs: list[np.ndarray]) -> EmbeddedImages:
        x, input_hw = self.model.preprocess(imgs)
        with self._amp():
            feats = self.model.encode_images(x)
        return EmbeddedImages(feats.image_embed, list(feats.high_res_feats), [im.shape[:2] for im in imgs], input_hw)

    def get_image_embedding(self) -> torch.Tensor:
        """The (B, 256, h, w) embedding of the image(s) set (h = w = image_size / 16)."""
        return self._require_features().image_embed

    def _require_features(self) -> EmbeddedImages:
        if self._features is None:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        return self._features

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for prompts on the image set with :meth:`set_image`.

        Args:
            point_coords: (N, 2) or (B, N, 2) points (x, y), in pixels of the original image
                (or in [0, 1] with ``normalize_coords=False``).
            point_labels: (N,) or (B, N), 1 = foreground, 0 = background.
            box: (4,) or (B, 4) xyxy boxes; B boxes are decoded in one batched call.
            mask_input: (1, h, w) or (B, 1, h, w) low-res logits from a previous call.
        Returns:
            masks (C, H, W) — or (B, C, H, W) for B prompts — as float 0/1 for SAM 2, bool for
            SAM 1 (logits with ``return_logits``), IoU predictions (C,) / (B, C) and low-res
            logits (C, h, w) / (B, C, h, w) (SAM 2: clamped to ±32). C is 3 with
            ``multimask_output`` else 1.
        """
        self._require_features()
        if self._is_batch:
            raise RuntimeError("a batch of images is set; use predict_batch, or set_image for one image")
        masks, iou, low = self._predict(
            0, point_coords, point_labels, box, mask_input, multimask_output, return_logits, normalize_coords
        )
        return self._np_masks(masks.squeeze(0)), _np(iou.squeeze(0)), _np(low.squeeze(0))

    def predict_batch(
        self,
        point_coords_batch: Sequence[np.ndarray | None] | None = None,
        point_labels_batch: Sequence[np.ndarray | None] | None = None,
        box_batch: Sequence[np.ndarray | None] | None = None,
        mask_input_batch: Sequence[np.ndarray | None] | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """:meth:`predict` for each image set with :meth:`set_image_batch`; returns lists."""
        feats = self._require_features()
        if not self._is_batch:
            raise RuntimeError("predict_batch needs images set with set_image_batch(...)")
        n = len(feats.orig_hw)
        for name, seq in (
            ("point_coords_batch", point_coords_batch),
            ("point_labels_batch", point_labels_batch),
            ("box_batch", box_batch),
            ("mask_input_batch", mask_input_batch),
        ):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{name} has {len(seq)} entries for {n} images")
        out: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
        for i in range(n):
            pick = lambda seq: None if seq is None else seq[i]  # noqa: E731
            masks, iou, low = self._predict(
                i,
                pick(point_coords_batch),
                pick(point_labels_batch),
                pick(box_batch),
                pick(mask_input_batch),
                multimask_output,
                return_logits,
                normalize_coords,
            )
            out[0].append(self._np_masks(masks.squeeze(0)))
            out[1].append(_np(iou.squeeze(0)))
            out[2].append(_np(low.squeeze(0)))
        return out

    @torch.inference_mode()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        img_idx: int = 0,
        normalize_coords: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Like :meth:`predict` but takes and returns (B, ...) tensors on the model's device.

        Coordinates are pixels of the original image for SAM 1 models too (``SamPredictor.predict_torch``
        wants them already resized; do not apply its ``transform`` here).
        """
        prompts = (point_coords, point_labels, boxes, mask_input)
        return self._predict(img_idx, *prompts, multimask_output, return_logits, normalize_coords)

    @torch.inference_mode()
    def predict_low_res(
        self,
        point_coords: Any = None,
        point_labels: Any = None,
        boxes: Any = None,
        mask_input: Any = None,
        multimask_output: bool = True,
        img_idx: int = 0,
        normalize_coords: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder outputs only: unclamped low-res logits (B, C, h, w) and IoU predictions (B, C).

        Same prompts as :meth:`predict_torch`; :meth:`upscale_logits` brings the logits to the image.
        """
        low_res, iou = self._decode(
            img_idx, point_coords, point_labels, boxes, mask_input, multimask_output, normalize_coords
        )
        return low_res.float(), iou.float()

    @torch.inference_mode()
    def upscale_logits(self, low_res: torch.Tensor, img_idx: int = 0) -> torch.Tensor:
        """(B, C, h, w) low-res logits -> (B, C, H, W) logits at the size of the image set."""
        feats = self._require_features()
        return self.model.postprocess_masks(low_res.float(), feats.input_hw[img_idx], feats.orig_hw[img_idx])

    @torch.inference_mode()
    def _predict(
        self,
        img_idx: int,
        point_coords: Any,
        point_labels: Any,
        box: Any,
        mask_input: Any,
        multimask_output: bool,
        return_logits: bool,
        normalize_coords: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low_res, iou = self._decode(
            img_idx, point_coords, point_labels, box, mask_input, multimask_output, normalize_coords
        )
        low_res = low_res.float()
        masks = self.upscale_logits(low_res, img_idx)  # (B, C, H, W)
        if not return_logits:
            masks = masks > self.mask_threshold
        clamp = self.model.output_style.low_res_clamp
        return masks, iou.float(), low_res if clamp is None else low_res.clamp(-clamp, clamp)

    def _decode(
        self,
        img_idx: int,
        point_coords: Any,
        point_labels: Any,
        box: Any,
        mask_input: Any,
        multimask_output: bool,
        normalize_coords: bool,
    ) -> MaskLogits:
        feats = self._require_features()
        if not 0 <= img_idx < len(feats.orig_hw):
            raise ValueError(f"img_idx {img_idx} is out of range for {len(feats.orig_hw)} image(s) set")
        orig_hw, input_hw = feats.orig_hw[img_idx], feats.input_hw[img_idx]
        low_hw = tuple(4 * s for s in feats.image_embed.shape[-2:])
        coords, labels = check_points(point_coords, point_labels)
        boxes = check_boxes(box, orig_hw, normalized=not normalize_coords)
        masks_in = check_mask_input(mask_input, low_hw)

        dev = self.device
        points: Points | None = None
        if coords is not None:
            xy = self.model.transform_coords(coords, orig_hw, input_hw, not normalize_coords)  # (B, N, 2) or (N, 2)
            lab = torch.as_tensor(labels, device=dev)
            points = (xy[None], lab[None]) if xy.ndim == 2 else (xy, lab)
        corners = None
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            corners = self.model.transform_coords(corners, orig_hw, input_hw, not normalize_coords)  # (B, 2, 2)
            if points is not None and points[0].shape[0] != corners.shape[0]:
                if points[0].shape[0] != 1:
                    raise ValueError(
                        f"{corners.shape[0]} boxes but {points[0].shape[0]} point sets; "
                        "give one point set per box or a single shared one"
                    )
                points = (points[0].expand(len(corners), -1, -1), points[1].expand(len(corners), -1))
        masks_t = None if masks_in is None else torch.as_tensor(masks_in, device=dev)
        num_prompts = points[0].shape[0] if points is not None else 1 if corners is None else corners.shape[0]
        if masks_t is not None and num_prompts > 1 and masks_t.shape[0] not in (1, num_prompts):
            raise ValueError(f"mask_input has {masks_t.shape[0]} masks for {num_prompts} prompts")

        with self._amp():
            return self.model.decode_masks(
                feats.image_embed[img_idx : img_idx + 1],
                points=points,
                boxes=None if corners is None else corners.reshape(-1, 4),
                mask_input=masks_t,
                multimask_output=multimask_output,
                high_res_feats=[f[img_idx : img_idx + 1] for f in feats.high_res_feats],
            )

    def _np_masks(self, masks: torch.Tensor) -> np.ndarray:
        # SAM 1's predictor returns bool masks, SAM 2's float 0/1 (logits stay float either way)
        if masks.dtype == torch.bool and self.model.output_style.bool_masks:
            return masks.cpu().numpy()
        return _np(masks)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.float().cpu().numpy()
