"""The SAM 2 / SAM 2.1 model: image encoder, prompt encoder, mask decoder and memory modules.

Attribute names reproduce Meta's state-dict keys, so official checkpoints load strictly. The
image path lives here; the tracking loop (memory conditioning, memory encoding, object
pointers) builds on the same modules in the video predictor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from segmenter.config import SAM2Config
from segmenter.modeling.common import MLP
from segmenter.modeling.image_encoder import build_image_encoder
from segmenter.modeling.interface import HW, LOW_RES_CLAMP, ImageFeatures, MaskLogits, OutputStyle, Points
from segmenter.modeling.mask_decoder import MaskDecoder
from segmenter.modeling.memory_attention import MemoryAttention
from segmenter.modeling.memory_encoder import MemoryEncoder
from segmenter.modeling.prompt_encoder import PromptEncoder
from segmenter.modeling.transforms import coords_to_square, resize_masks, resize_to_square

__all__ = ["SAM2Model", "ImageEmbeddings", "DecoderOutput"]

BOX_LABELS = (2, 3)  # a box enters SAM 2's prompt encoder as its two corners with these labels


@dataclass
class ImageEmbeddings(ImageFeatures):
    """SAM 2's image-encoder output for B images: the decoder's inputs plus what video tracking reads.

    ``image_embed`` is ``vision_features`` + the no-memory embedding (single-image prompting);
    ``high_res_feats`` are the stride-4 / stride-8 levels projected by the decoder's convs.
    """

    vision_features: torch.Tensor  # (B, C, h, w) stride-16 features, without the no-memory embedding
    vision_pos_enc: torch.Tensor  # (B, C, h, w) their sine position encoding


class DecoderOutput(NamedTuple):
    """Everything SAM 2's mask decoder returns for B prompt sets (video tracking reads it all)."""

    low_res: torch.Tensor  # (B, M, 4h, 4w) mask logits
    iou: torch.Tensor  # (B, M)
    sam_tokens: torch.Tensor  # (B, M', C) output tokens behind the object pointer
    object_score_logits: torch.Tensor  # (B, 1)


class SAM2Model(nn.Module):
    """SAM 2 built from a :class:`SAM2Config`; a :class:`~segmenter.modeling.interface.SegmentationModel`.

    ``with_memory=False`` builds the image-only model (no memory attention / encoder / object
    pointers), e.g. for transformers ``Sam2Model`` checkpoints that do not carry them.
    """

    output_style = OutputStyle(bool_masks=False, low_res_clamp=LOW_RES_CLAMP, amg_int_boxes=False)

    def __init__(self, cfg: SAM2Config, with_memory: bool = True) -> None:
        super().__init__()
        self.config = cfg
        self.image_size = cfg.image_size
        self.with_memory = with_memory
        dim = cfg.decoder.transformer_dim
        mem = cfg.memory

        self.image_encoder = build_image_encoder(cfg)
        self.sam_prompt_encoder = PromptEncoder.from_config(cfg)
        self.sam_mask_decoder = MaskDecoder(cfg.decoder, use_multimask_token_for_obj_ptr=True)
        # added to the stride-16 features of frames that have no memory (every single image)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, dim))
        if with_memory:
            self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, dim))
            self.memory_attention = MemoryAttention.from_config(mem, d_model=dim)
            self.memory_encoder = MemoryEncoder.from_config(mem, in_dim=dim, total_stride=cfg.backbone_stride)
            self.maskmem_tpos_enc = nn.Parameter(torch.zeros(mem.num_maskmem, 1, 1, mem.mem_dim))
            self.no_obj_ptr = nn.Parameter(torch.zeros(1, dim))
            self.obj_ptr_proj = MLP(dim, dim, dim, 3)
            # a mask prompt fed straight to the SAM heads is first brought to the low-res size
            self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
            if mem.proj_tpos_enc_in_obj_ptrs:
                self.obj_ptr_tpos_proj = nn.Linear(dim, mem.mem_dim)
            if mem.no_obj_embed_spatial:
                self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem.mem_dim))
        self._init_like_reference()

    def _init_like_reference(self) -> None:
        # the reference draws these from a truncated normal; the rest keep PyTorch's defaults
        params = [self.no_mem_embed]
        if self.with_memory:
            params += [self.no_mem_pos_enc, self.maskmem_tpos_enc, self.no_obj_ptr]
            if self.config.memory.no_obj_embed_spatial:
                params.append(self.no_obj_embed_spatial)
        for p in params:
            nn.init.trunc_normal_(p, std=0.02)

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    # ------------------------------------------------------------------ transforms
    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[HW]]:
        """RGB uint8 (H, W, 3) arrays -> (B, 3, S, S) input, each image stretched to the square."""
        s = self.image_size
        return resize_to_square(images, s, self.device), [(s, s)] * len(images)

    def transform_coords(
        self, coords: np.ndarray, orig_hw: HW, input_hw: HW, normalized: bool = False
    ) -> torch.Tensor:
        """(..., 2) x/y in original pixels (or [0, 1] with ``normalized``) -> model-input pixels."""
        return coords_to_square(coords, orig_hw, self.image_size, normalized, self.device)

    def postprocess_masks(self, low_res: torch.Tensor, input_hw: HW, orig_hw: HW) -> torch.Tensor:
        """(B, M, 4h, 4w) logits -> (B, M, H, W) logits at the original image size."""
        return resize_masks(low_res, orig_hw)

    # ------------------------------------------------------------------ image path
    def encode_images(self, images: torch.Tensor) -> ImageEmbeddings:
        """Encode (B, 3, S, S) normalised images (S = ``image_size``)."""
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (self.image_size,) * 2:
            raise ValueError(
                f"expected images of shape (B, 3, {self.image_size}, {self.image_size}), got {tuple(images.shape)}"
            )
        out = self.image_encoder(images)
        fpn = out["backbone_fpn"]  # finest first: strides 4, 8, 16
        high_res = (self.sam_mask_decoder.conv_s0(fpn[0]), self.sam_mask_decoder.conv_s1(fpn[1]))
        vision = out["vision_features"]
        return ImageEmbeddings(
            image_embed=vision + self.no_mem_embed.view(1, -1, 1, 1),
            high_res_feats=high_res,
            vision_features=vision,
            vision_pos_enc=out["vision_pos_enc"][-1],
        )

    def decode_masks(
        self,
        image_embed: torch.Tensor,
        points: Points | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        high_res_feats: Sequence[torch.Tensor] = (),
    ) -> MaskLogits:
        """Masks for B prompt sets (see :class:`~segmenter.modeling.interface.SegmentationModel`).

        Boxes (B, 4) enter as their two corners labelled 2 / 3, ahead of the points.
        """
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)  # (B, 2, 2)
            corner_labels = torch.tensor([BOX_LABELS], dtype=torch.int32, device=boxes.device).expand(len(corners), -1)
            if points is None:
                points = (corners, corner_labels)
            else:
                labels = torch.cat([corner_labels, points[1].to(torch.int32)], dim=1)
                points = (torch.cat([corners, points[0]], dim=1), labels)
        out = self.sam_heads(image_embed, high_res_feats, points, mask_input, multimask_output)
        return MaskLogits(out.low_res, out.iou)

    def sam_heads(
        self,
        image_embed: torch.Tensor,
        high_res_feats: Sequence[torch.Tensor],
        points: Points | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> DecoderOutput:
        """Prompt encoder + mask decoder, with every output of the decoder.

        Args:
            image_embed: (1, C, h, w) shared by all B prompt sets, or (B, C, h, w).
            high_res_feats: (1 or B, C/8, 4h, 4w), (1 or B, C/4, 2h, 2w) from :meth:`encode_images`.
            points: coords (B, N, 2) in model-input pixels and labels (B, N) (0/1 points,
                2/3 box corners, -1 padding).
            mask_input: (B, 1, 4h, 4w) low-res mask logits.
        """
        if len(high_res_feats) != 2:
            raise ValueError("SAM 2 decodes with the two high_res_feats of encode_images(...)")
        sparse, dense = self.sam_prompt_encoder(points=points, boxes=None, masks=mask_input)
        repeat_image = image_embed.shape[0] == 1 and sparse.shape[0] > 1  # one image, many prompt sets
        return DecoderOutput(
            *self.sam_mask_decoder(
                image_embeddings=image_embed,
                image_pe=self.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
                repeat_image=repeat_image,
                high_res_features=list(high_res_feats),
            )
        )
