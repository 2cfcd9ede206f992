"""The SAM 1 model (ViT-B/L/H): image encoder, prompt encoder, mask decoder and SAM 1's transforms.

Attribute names reproduce the official ``segment_anything`` keys (``image_encoder.*``,
``prompt_encoder.*``, ``mask_decoder.*``), so the released ``sam_vit_*.pth`` files load strictly.
Besides the network, the model carries what :class:`~segmenter.ImagePredictor` needs to be
model-agnostic (:class:`~segmenter.modeling.interface.SegmentationModel`): :meth:`preprocess`,
:meth:`transform_coords`, :meth:`postprocess_masks`, :meth:`encode_images`, :meth:`decode_masks`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from segmenter.config import SAM1Config
from segmenter.modeling.interface import HW, ImageFeatures, MaskLogits, OutputStyle, Points
from segmenter.modeling.prompt_encoder import PromptEncoder
from segmenter.modeling.sam1.image_encoder import ImageEncoderViT
from segmenter.modeling.sam1.mask_decoder import SAM1MaskDecoder
from segmenter.modeling.sam1.transforms import resize_longest_side, scale_coords, unpad_and_resize_masks

__all__ = ["SAM1Model"]


class SAM1Model(nn.Module):
    """SAM 1 built from a :class:`SAM1Config` (``load_model_config("sam_vit_b")`` ...)."""

    output_style = OutputStyle(bool_masks=True, low_res_clamp=None, amg_int_boxes=True)

    def __init__(self, cfg: SAM1Config) -> None:
        super().__init__()
        self.config = cfg
        self.image_size = cfg.image_size
        self.image_encoder = ImageEncoderViT(cfg.vit, cfg.image_size)
        self.prompt_encoder = PromptEncoder.from_config(cfg)
        self.mask_decoder = SAM1MaskDecoder(cfg.decoder)
        # 0..255 RGB statistics; not part of the checkpoints (non-persistent, as in the reference)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ transforms
    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[HW]]:
        """RGB uint8 (H, W, 3) arrays -> (B, 3, S, S) model input and each image's resized (h, w).

        Each image is resized so that its longest side is S, normalised, and zero-padded at the
        bottom / right to S x S.
        """
        s = self.image_size
        out = torch.zeros(len(images), 3, s, s, device=self.device)
        input_hw = []
        for i, img in enumerate(images):
            small = torch.from_numpy(resize_longest_side(img, s).copy()).to(self.device)
            x = small.permute(2, 0, 1).float()  # (3, h, w)
            h, w = x.shape[-2:]
            out[i, :, :h, :w] = (x - self.pixel_mean) / self.pixel_std
            input_hw.append((h, w))
        return out, input_hw

    def transform_coords(
        self,
        coords: np.ndarray,
        orig_hw: HW,
        input_hw: HW,
        normalized: bool = False,
    ) -> torch.Tensor:
        """(..., 2) x/y in original pixels (or [0, 1] with ``normalized``) -> model-input pixels."""
        return torch.as_tensor(scale_coords(coords, orig_hw, input_hw, normalized), device=self.device)

    def postprocess_masks(self, low_res: torch.Tensor, input_hw: HW, orig_hw: HW) -> torch.Tensor:
        """(B, M, 4h, 4w) logits -> (B, M, H, W) logits at the original image size."""
        return unpad_and_resize_masks(low_res, self.image_size, input_hw, orig_hw)

    # ------------------------------------------------------------------ network
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed images -> (B, 256, S/16, S/16) image embeddings (the bare tensor)."""
        s = self.image_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (s, s):
            raise ValueError(f"expected images of shape (B, 3, {s}, {s}), got {tuple(images.shape)}")
        return self.image_encoder(images)

    def encode_images(self, images: torch.Tensor) -> ImageFeatures:
        """:meth:`embed_images` as the model interface's features (SAM 1 has no high-res features)."""
        return ImageFeatures(self.embed_images(images), ())

    def decode_masks(
        self,
        image_embed: torch.Tensor,
        points: Points | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        high_res_feats: Sequence[torch.Tensor] = (),
    ) -> MaskLogits:
        """Run the prompt encoder and the mask decoder on one image embedding.

        Args:
            image_embed: (1, C, h, w).
            points: coords (B, N, 2) in model-input pixels (x, y) and labels (B, N), 1 = foreground,
                0 = background; a padding point is appended when there is no box.
            boxes: (B, 4) xyxy in model-input pixels.
            mask_input: (B, 1, 4h, 4w) low-res mask logits.
            high_res_feats: must be empty (SAM 1's decoder has no high-resolution skip features).
        Returns:
            low-res mask logits (B, M, 4h, 4w) and IoU predictions (B, M); M = 3 or 1.
        """
        if len(high_res_feats):
            raise ValueError("SAM 1's mask decoder takes no high_res_feats")
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        low_res, iou = self.mask_decoder(
            image_embeddings=image_embed,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
        return MaskLogits(low_res, iou)
