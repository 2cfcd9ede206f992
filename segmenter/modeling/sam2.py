"""The SAM 2 / SAM 2.1 model: image encoder, prompt encoder, mask decoder and memory modules.

Attribute names reproduce Meta's state-dict keys, so official checkpoints load strictly. The
image path lives here; the tracking loop (memory conditioning, memory encoding, object
pointers) builds on the same modules in the video predictor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from segmenter.config import SAM2Config
from segmenter.modeling.common import MLP
from segmenter.modeling.image_encoder import build_image_encoder
from segmenter.modeling.mask_decoder import MaskDecoder
from segmenter.modeling.memory_attention import MemoryAttention
from segmenter.modeling.memory_encoder import MemoryEncoder
from segmenter.modeling.prompt_encoder import PromptEncoder

__all__ = ["SAM2Model", "ImageEmbeddings"]


@dataclass
class ImageEmbeddings:
    """What the image encoder gives the rest of the model for a batch of B images."""

    vision_features: torch.Tensor  # (B, C, h, w) stride-16 features, without the no-memory embedding
    vision_pos_enc: torch.Tensor  # (B, C, h, w) its sine position encoding
    high_res_feats: tuple[torch.Tensor, torch.Tensor]  # (B, C/8, 4h, 4w), (B, C/4, 2h, 2w) projected
    image_embed: torch.Tensor  # (B, C, h, w) vision_features + no_mem_embed (single-image prompting)


class SAM2Model(nn.Module):
    """SAM 2 built from a :class:`SAM2Config`.

    ``with_memory=False`` builds the image-only model (no memory attention / encoder / object
    pointers), e.g. for transformers ``Sam2Model`` checkpoints that do not carry them.
    """

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

    # ------------------------------------------------------------------ image path
    def embed_images(self, images: torch.Tensor) -> ImageEmbeddings:
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
            vision_features=vision,
            vision_pos_enc=out["vision_pos_enc"][-1],
            high_res_feats=high_res,
            image_embed=vision + self.no_mem_embed.view(1, -1, 1, 1),
        )

    def decode_masks(
        self,
        image_embed: torch.Tensor,
        high_res_feats: list[torch.Tensor] | tuple[torch.Tensor, ...],
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        repeat_image: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the prompt encoder and mask decoder.

        Args:
            image_embed: (1, C, h, w) shared by all prompt sets (``repeat_image``) or (B, C, h, w).
            points: coords (B, N, 2) in model-input pixels and labels (B, N) (0/1 points,
                2/3 box corners).
            mask_input: (B, 1, 4h, 4w) low-res mask logits.
        Returns:
            low-res mask logits (B, M, 4h, 4w), IoU predictions (B, M), SAM output tokens
            (B, M', C) and object-score logits (B, 1).
        """
        sparse, dense = self.sam_prompt_encoder(points=points, boxes=None, masks=mask_input)
        return self.sam_mask_decoder(
            image_embeddings=image_embed,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=repeat_image,
            high_res_features=list(high_res_feats),
        )
