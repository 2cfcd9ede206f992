"""The model interface the predictors are typed against, shared by SAM 2 and SAM 1.

:class:`~segmenter.ImagePredictor`, :class:`~segmenter.AutomaticMaskGenerator` and the drop-in
predictors of :mod:`segmenter.compat` need only what :class:`SegmentationModel` lists: the
input size and device, the image transform (RGB arrays in, prompt coordinates to the model
input, masks back to the image), the image encoder and one ``decode_masks`` contract. What
differs between the families is carried by the model itself (its transform methods and its
:class:`OutputStyle`), so no caller branches on the family; :mod:`segmenter.build` is the only
place that knows which model class a config builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "LOW_RES_CLAMP",
    "HW",
    "Points",
    "ImageFeatures",
    "MaskLogits",
    "OutputStyle",
    "SegmentationModel",
]

LOW_RES_CLAMP = 32.0
"""SAM 2's predictors clamp the low-res logits they return (and feed back as mask prompts) to ±this."""

HW = tuple[int, int]
Points = tuple[torch.Tensor, torch.Tensor]  # coords (B, N, 2) x/y in model-input pixels, labels (B, N)


@dataclass
class ImageFeatures:
    """What the image encoder gives the mask decoder for a batch of B images."""

    image_embed: torch.Tensor  # (B, C, h, w) the embedding prompts are decoded against
    high_res_feats: tuple[torch.Tensor, ...]  # SAM 2: (B, C/8, 4h, 4w), (B, C/4, 2h, 2w); SAM 1: ()


class MaskLogits(NamedTuple):
    """The mask decoder's answer for B prompt sets."""

    low_res: torch.Tensor  # (B, M, 4h, 4w) mask logits; M = 3 with multimask output, else 1
    iou: torch.Tensor  # (B, M) predicted IoU


@dataclass(frozen=True)
class OutputStyle:
    """How the official predictors of a model shape their outputs; the drop-in predictors keep it.

    Attributes:
        bool_masks: ``predict`` returns bool masks (``SamPredictor``) rather than float 0/1
            (``SAM2ImagePredictor``).
        low_res_clamp: the returned low-res logits are clamped to ±this (None: unclamped).
        amg_int_boxes: automatic-mask-generator records hold integer boxes and float64 point
            coordinates (``SamAutomaticMaskGenerator``) rather than float boxes and float32 points.
    """

    bool_masks: bool
    low_res_clamp: float | None
    amg_int_boxes: bool


@runtime_checkable
class SegmentationModel(Protocol):
    """A promptable segmentation model (SAM 2 / SAM 2.1, SAM 1) as the predictors use it.

    Coordinates are pixels: of the original image for ``transform_coords`` inputs, of the square
    ``image_size`` model input everywhere else. ``input_hw`` is the extent of an image inside
    that square (SAM 2 stretches every image to fill it; SAM 1 pads at the bottom / right).
    """

    config: Any
    image_size: int
    output_style: OutputStyle

    @property
    def device(self) -> torch.device: ...

    def eval(self) -> Any: ...

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[HW]]:
        """RGB uint8 (H, W, 3) arrays -> (B, 3, S, S) model input on ``device`` and each image's ``input_hw``."""
        ...

    def transform_coords(
        self, coords: np.ndarray, orig_hw: HW, input_hw: HW, normalized: bool = False
    ) -> torch.Tensor:
        """(..., 2) x/y in original pixels (in [0, 1] with ``normalized``) -> model-input pixels on ``device``."""
        ...

    def postprocess_masks(self, low_res: torch.Tensor, input_hw: HW, orig_hw: HW) -> torch.Tensor:
        """(B, M, 4h, 4w) logits -> (B, M, H, W) logits at the original image size."""
        ...

    def encode_images(self, images: torch.Tensor) -> ImageFeatures:
        """(B, 3, S, S) preprocessed images -> their features."""
        ...

    def decode_masks(
        self,
        image_embed: torch.Tensor,
        points: Points | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        high_res_feats: Sequence[torch.Tensor] = (),
    ) -> MaskLogits:
        """Decode B prompt sets against one image embedding (1, C, h, w) or one each (B, C, h, w).

        Args:
            points: coords (B, N, 2) and labels (B, N), 1 = foreground, 0 = background.
            boxes: (B, 4) xyxy.
            mask_input: (B, 1, 4h, 4w) low-res logits of a previous prediction.
            high_res_feats: the :class:`ImageFeatures` ``high_res_feats`` of the same images.
        """
        ...
