"""SAM 1's mask decoder: the two-way transformer with an IoU token and four mask tokens.

Unlike SAM 2's decoder there is no object-score token, no high-resolution skip features and
the IoU head has no sigmoid. The transformer is our :class:`TwoWayTransformer` with SAM 1's
``lin1``/``lin2`` MLP blocks, so the state-dict keys match the official ``mask_decoder.*``.
"""

from __future__ import annotations

import torch
from torch import nn

from segmenter.config import MaskDecoderConfig
from segmenter.modeling.common import MLP, LayerNorm2d
from segmenter.modeling.sam1.common import MLPBlock
from segmenter.modeling.transformer import TwoWayTransformer

__all__ = ["SAM1MaskDecoder", "build_sam1_transformer"]


def build_sam1_transformer(cfg: MaskDecoderConfig) -> TwoWayTransformer:
    """Our two-way transformer with each block's MLP named as in SAM 1 (``mlp.lin1``/``mlp.lin2``)."""
    transformer = TwoWayTransformer(
        depth=cfg.transformer_depth,
        embedding_dim=cfg.transformer_dim,
        num_heads=cfg.transformer_num_heads,
        mlp_dim=cfg.transformer_mlp_dim,
        attention_downsample_rate=cfg.attention_downsample_rate,
    )
    for layer in transformer.layers:  # same arithmetic (Linear, ReLU, Linear), other key names
        layer.mlp = MLPBlock(cfg.transformer_dim, cfg.transformer_mlp_dim, nn.ReLU)
    return transformer


class SAM1MaskDecoder(nn.Module):
    """Predicts low-res mask logits and IoU estimates for B prompt sets on one image embedding."""

    def __init__(self, cfg: MaskDecoderConfig) -> None:
        super().__init__()
        dim = cfg.transformer_dim
        self.transformer_dim = dim
        self.transformer = build_sam1_transformer(cfg)
        self.num_multimask_outputs = cfg.num_multimask_outputs
        self.num_mask_tokens = cfg.num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(  # (B, C, h, w) -> (B, C/8, 4h, 4w)
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, cfg.iou_head_hidden_dim, self.num_mask_tokens, cfg.iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B prompt sets.

        Args:
            image_embeddings: (1, C, h, w), shared by every prompt set (or (B, C, h, w)).
            image_pe: (1, C, h, w) from ``PromptEncoder.get_dense_pe()``.
            sparse_prompt_embeddings: (B, N, C); dense_prompt_embeddings: (1 or B, C, h, w).
        Returns:
            masks (B, M, 4h, 4w) logits and iou_pred (B, M); M = 3 with ``multimask_output`` else 1.
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou_pred[:, keep]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens -> (masks (B, 4, 4h, 4w), iou (B, 4))."""
        b = max(sparse_prompt_embeddings.shape[0], dense_prompt_embeddings.shape[0])
        if image_embeddings.shape[0] not in (1, b) or image_pe.shape[0] != 1:
            raise ValueError(
                f"image embedding batch {image_embeddings.shape[0]} / PE batch {image_pe.shape[0]} "
                f"do not fit {b} prompt sets (expected 1 or {b}, and 1)"
            )
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight])  # (5, C)
        sparse = sparse_prompt_embeddings.expand(b, -1, -1)
        tokens = torch.cat([output_tokens[None].expand(b, -1, -1), sparse], dim=1)  # (B, 5+N, C)

        # broadcasting replaces the reference's repeat_interleave of the embedding and its PE
        src = (image_embeddings + dense_prompt_embeddings).expand(b, -1, -1, -1)  # (B, C, h, w)
        h, w = src.shape[-2:]
        hs, keys = self.transformer(src, image_pe, tokens)  # (B, 5+N, C), (B, hw, C)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]  # (B, 4, C)

        # a (B, C, h, w) view with the reference's strides (the conv picks its memory format from them)
        upscaled = self.output_upscaling(keys.transpose(1, 2).view(b, -1, h, w))  # (B, C/8, 4h, 4w)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # (B, 4, C/8)
        masks = (hyper_in @ upscaled.flatten(2)).unflatten(-1, upscaled.shape[-2:])  # (B, 4, 4h, 4w)
        return masks, self.iou_prediction_head(iou_token_out)
