"""SAM 2 mask decoder: two-way transformer over prompt tokens and the image embedding.

State-dict keys match the official ``sam_mask_decoder.*`` entries. Every released SAM 2 / 2.1
config uses high-res features, a sigmoid IoU head and an MLP object-score head, so those
are always on here.
"""

from __future__ import annotations

import torch
from torch import nn

from segmenter.config import MaskDecoderConfig
from segmenter.modeling.common import MLP, LayerNorm2d
from segmenter.modeling.transformer import ImageSide, TwoWayTransformer

__all__ = ["MaskDecoder", "stability_scores"]


CPU_CHUNK_BYTES = 8 << 20  # image-side tensors of one decoding chunk on the CPU


def stability_scores(mask_logits: torch.Tensor, delta: float) -> torch.Tensor:
    """IoU of the masks thresholded at +delta and -delta: (..., H, W) -> (...)."""
    flat = mask_logits.flatten(-2)
    inter = (flat > delta).sum(-1).float()
    union = (flat > -delta).sum(-1).float()
    return torch.where(union > 0, inter / union, 1.0)


class MaskDecoder(nn.Module):
    """Predicts mask logits, IoU scores, the object-pointer token(s) and an object-presence logit."""

    def __init__(self, cfg: MaskDecoderConfig, use_multimask_token_for_obj_ptr: bool = True) -> None:
        super().__init__()
        dim = cfg.transformer_dim
        self.transformer_dim = dim
        self.transformer = TwoWayTransformer(
            depth=cfg.transformer_depth,
            embedding_dim=dim,
            num_heads=cfg.transformer_num_heads,
            mlp_dim=cfg.transformer_mlp_dim,
            attention_downsample_rate=cfg.attention_downsample_rate,
        )
        self.num_multimask_outputs = cfg.num_multimask_outputs
        self.num_mask_tokens = cfg.num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.obj_score_token = nn.Embedding(1, dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        # indices: 0 dc1, 1 ln1, 2 act1, 3 dc2, 4 act2 (used one by one with high-res features)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        # applied by the model to the stride-4 / stride-8 FPN levels, not in forward
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)

        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            dim, cfg.iou_head_hidden_dim, self.num_mask_tokens, cfg.iou_head_depth, sigmoid_output=True
        )
        self.pred_obj_score_head = MLP(dim, dim, 1, 3)

        self.dynamic_multimask_via_stability = cfg.dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = cfg.dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = cfg.dynamic_multimask_stability_thresh
        # CPU inference decodes many prompts in chunks whose image-side tensors stay this small
        # (cache- and allocator-friendly; 0 disables). Results are the same to the bit.
        self.chunk_bytes = CPU_CHUNK_BYTES

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode B prompt sets.

        Args:
            image_embeddings: (1, C, h, w) with ``repeat_image`` (all prompt sets on one image)
                or (B, C, h, w) without (one embedding per prompt set).
            image_pe: (1, C, h, w) from ``PromptEncoder.get_dense_pe()``.
            sparse_prompt_embeddings: (B, N, C); dense_prompt_embeddings: (1 or B, C, h, w).
            high_res_features: [(B_img, C/8, 4h, 4w), (B_img, C/4, 2h, 2w)] after conv_s0 / conv_s1.

        Returns:
            masks (B, M, 4h, 4w) logits, iou_pred (B, M), sam_tokens_out (B, M', C),
            object_score_logits (B, 1); M = 3 with ``multimask_output`` else 1.
        """
        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            repeat_image,
            high_res_features,
        )
        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, :1], iou_pred[:, :1]

        # the object pointer uses the single-mask token unless multimask tokens are asked for
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]  # (B, 3, C)
        else:
            sam_tokens_out = mask_tokens_out[:, :1]  # (B, 1, C)
        return masks, iou_pred, sam_tokens_out, object_score_logits

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None = None,
        image_side: ImageSide | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All mask tokens -> (masks (B, 4, 4h, 4w), iou (B, 4), mask tokens (B, 4, C), object logit (B, 1)).

        ``image_side``: the transformer's :meth:`~TwoWayTransformer.image_side` of ``image_embeddings
        + dense_prompt_embeddings`` (batch 1), computed before for this image; skips that work."""
        b = sparse_prompt_embeddings.shape[0]
        b_img = image_embeddings.shape[0]
        if (repeat_image and b_img != 1) or (not repeat_image and b_img != b):
            raise ValueError(
                f"image batch {b_img} does not fit {b} prompt sets (repeat_image={repeat_image}): "
                "expected 1 with repeat_image, else one embedding per prompt set"
            )
        if image_pe.shape[0] != 1:
            raise ValueError(f"image_pe must have batch size 1, got {tuple(image_pe.shape)}")

        output_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([output_tokens[None].expand(b, -1, -1), sparse_prompt_embeddings], dim=1)  # (B, 6+N, C)

        # broadcasting replaces the reference's repeat_interleave of the image (materialised one
        # chunk at a time below) and of its PE
        src = image_embeddings + dense_prompt_embeddings  # (B, C, h, w)
        if src.shape[0] != b:
            src = src.expand(b, -1, -1, -1)
        h, w = src.shape[-2:]

        chunks = self._prompt_chunks(b, tokens.shape[1], src)
        hs_parts, key_parts = [], []
        for part in chunks:  # image-side work one chunk of prompts at a time
            # contiguous, as the reference's repeated image: its image tokens are then transposed
            # views, for which F.linear runs matmul and adds the bias after it; on contiguous
            # tokens it folds the bias into the GEMM, which rounds differently on some CPUs
            # (AMD EPYC, MKL)
            src_i = src[part].contiguous() if repeat_image else src[part]  # (b_i, C, h, w)
            side = None if image_side is None else ImageSide(*(t.expand(src_i.shape[0], -1, -1) for t in image_side))
            hs_i, keys_i = self.transformer(src_i, image_pe, tokens[part], side)
            hs_parts.append(hs_i)  # (b_i, 6+N, C)
            key_parts.append(keys_i)  # (b_i, hw, C)
        hs = torch.cat(hs_parts) if len(hs_parts) > 1 else hs_parts[0]
        obj_token_out = hs[:, 0]
        iou_token_out = hs[:, 1]
        mask_tokens_out = hs[:, 2 : 2 + self.num_mask_tokens]  # (B, 4, C)

        # token heads on the whole batch (their tiny GEMMs round differently with fewer rows)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # (B, 4, C/8)
        masks = [
            self._upscale_and_project(keys_i, hyper_in[part], h, w, high_res_features, part)
            for part, keys_i in zip(chunks, key_parts)
        ]
        masks = torch.cat(masks) if len(masks) > 1 else masks[0]  # (B, 4, 4h, 4w)

        iou_pred = self.iou_prediction_head(iou_token_out)
        object_score_logits = self.pred_obj_score_head(obj_token_out)
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def _prompt_chunks(self, batch: int, num_tokens: int, src: torch.Tensor) -> list[slice]:
        """Prompts decoded together: all of them, except on the CPU with large image-side tensors."""
        if src.device.type != "cpu" or not self.chunk_bytes or torch.is_grad_enabled():
            return [slice(0, batch)]
        per_prompt = src[0].numel() * src.element_size()  # (C, h, w) image tokens of one prompt
        # every chunk keeps >= 16 token rows: GEMMs with fewer rows may round differently
        smallest = -(-16 // num_tokens)
        size = max(self.chunk_bytes // per_prompt, smallest)
        starts = list(range(0, batch, size))
        if len(starts) > 1 and batch - starts[-1] < smallest:  # fold a short tail into its neighbour
            starts.pop()
        return [slice(a, b) for a, b in zip(starts, [*starts[1:], batch])]

    def _upscale_and_project(
        self,
        keys: torch.Tensor,  # (b, hw, C) image tokens after the transformer
        hyper_in: torch.Tensor,  # (b, 4, C/8)
        h: int,
        w: int,
        high_res_features: list[torch.Tensor] | None,
        part: slice,  # these prompts' rows of batched high-res features
    ) -> torch.Tensor:  # (b, 4, 4h, 4w) mask logits
        b = keys.shape[0]
        # a (B, C, h, w) view of the tokens, strides as in the reference (conv kernels pick
        # their memory format from them, which changes the rounding of the mask logits)
        src = keys.transpose(1, 2).view(b, -1, h, w)
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        if high_res_features is None:
            upscaled = act2(dc2(act1(ln1(dc1(src)))))
        else:
            feat_s0, feat_s1 = (f if f.shape[0] == 1 else f[part] for f in high_res_features)
            upscaled = act1(ln1(dc1(src) + feat_s1))
            upscaled = act2(dc2(upscaled) + feat_s0)  # (b, C/8, 4h, 4w)
        return (hyper_in @ upscaled.flatten(2)).unflatten(-1, upscaled.shape[-2:])

    def _dynamic_multimask_via_stability(
        self, all_masks: torch.Tensor, all_iou: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-mask output, replaced by the best-IoU multimask output where mask 0 is unstable."""
        batch = torch.arange(all_iou.shape[0], device=all_iou.device)
        best = all_iou[:, 1:].argmax(dim=-1) + 1  # (B,)
        best_masks = all_masks[batch, best][:, None]  # (B, 1, H, W)
        best_iou = all_iou[batch, best][:, None]  # (B, 1)

        single_masks, single_iou = all_masks[:, :1], all_iou[:, :1]
        score = stability_scores(single_masks, self.dynamic_multimask_stability_delta)  # (B, 1)
        stable = score >= self.dynamic_multimask_stability_thresh
        masks = torch.where(stable[..., None, None], single_masks, best_masks)
        iou = torch.where(stable, single_iou, best_iou)
        return masks, iou
