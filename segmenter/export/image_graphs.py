"""The image parts as ``nn.Module`` graphs for :func:`segmenter.export.to_onnx`: the image encoder,
the prompt encoder + mask decoder, and the decoder's per-image cache with the decoder that uses it.
Inputs and outputs are described in :mod:`segmenter.export.onnx`."""

from __future__ import annotations

import torch
from torch import nn

from segmenter.modeling.mask_decoder import stability_scores
from segmenter.modeling.sam2 import SAM2Model
from segmenter.modeling.transformer import ImageSide

__all__ = ["CachedMaskDecoderGraph", "DecoderCacheGraph", "ImageEncoderGraph", "MaskDecoderGraph"]


class ImageEncoderGraph(nn.Module):
    """(B, 3, S, S) normalised images -> image_embed, high_res_feats_0, high_res_feats_1, vision_features."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.model.encode_images(image)
        return feats.image_embed, feats.high_res_feats[0], feats.high_res_feats[1], feats.vision_features


class MaskDecoderGraph(nn.Module):
    """Prompt encoder + mask decoder for P prompt sets against one image's features."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.prompt_encoder = model.sam_prompt_encoder
        self.decoder = model.sam_mask_decoder
        # the prompt encoder's cached grid PE as a buffer (a cached tensor would be a lifted constant)
        self.register_buffer("image_pe", model.sam_prompt_encoder.get_dense_pe().clone(), persistent=False)

    def forward(
        self,
        image_embed: torch.Tensor,  # (1, C, h, w)
        high_res_feats_0: torch.Tensor,  # (1, C/8, 4h, 4w)
        high_res_feats_1: torch.Tensor,  # (1, C/4, 2h, 2w)
        point_coords: torch.Tensor,  # (P, N, 2) model-input pixels
        point_labels: torch.Tensor,  # (P, N) int64
        mask_input: torch.Tensor,  # (P, 1, 4h, 4w)
        has_mask_input: torch.Tensor,  # (1,) 1.0 = use mask_input, 0.0 = ignore it
    ) -> tuple[torch.Tensor, ...]:
        pe = self.prompt_encoder
        sparse, _ = pe(points=(point_coords, point_labels), boxes=None, masks=None)  # (P, N+1, C)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)  # (1, C, 1, 1)
        # exact selection: x * 1 + y * 0 == x for finite values
        dense = pe.mask_downscaling(mask_input) * has_mask_input + no_mask * (1.0 - has_mask_input)  # (P, C, h, w)
        return self._decode(image_embed, high_res_feats_0, high_res_feats_1, sparse, dense)

    def _decode(
        self,
        image_embed: torch.Tensor,  # (1, C, h, w)
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        sparse: torch.Tensor,  # (P, N+1, C)
        dense: torch.Tensor,  # (P or 1, C, h, w)
        image_side: ImageSide | None = None,
    ) -> tuple[torch.Tensor, ...]:
        p = sparse.shape[0]
        masks, iou, _, obj = self.decoder.predict_masks(
            image_embeddings=image_embed.expand(p, -1, -1, -1),
            image_pe=self.image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=False,
            high_res_features=[high_res_feats_0.expand(p, -1, -1, -1), high_res_feats_1.expand(p, -1, -1, -1)],
            image_side=image_side,
        )  # masks (P, 4, 4h, 4w), iou (P, 4), obj (P, 1)
        multi_masks, multi_iou = masks[:, 1:], iou[:, 1:]
        single_masks, single_iou = masks[:, :1], iou[:, :1]
        d = self.decoder
        if d.dynamic_multimask_via_stability:  # as MaskDecoder.forward(multimask_output=False) in eval
            best = multi_iou.argmax(dim=-1, keepdim=True)  # (P, 1)
            best_iou = multi_iou.gather(1, best)  # (P, 1)
            idx = best[..., None, None].expand(-1, -1, *masks.shape[-2:])  # (P, 1, 4h, 4w)
            best_masks = multi_masks.gather(1, idx)
            stable = stability_scores(single_masks, d.dynamic_multimask_stability_delta) >= (
                d.dynamic_multimask_stability_thresh
            )  # (P, 1)
            single_masks = torch.where(stable[..., None, None], single_masks, best_masks)
            single_iou = torch.where(stable, single_iou, best_iou)
        return multi_masks, multi_iou, single_masks, single_iou, obj


class DecoderCacheGraph(nn.Module):
    """(1, C, h, w) image_embed -> the decoder's image-side projections that no point or box changes
    (:class:`~segmenter.modeling.transformer.ImageSide`, each (1, hw, C_i)), once per image."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.transformer = model.sam_mask_decoder.transformer
        self.no_mask = model.sam_prompt_encoder.no_mask_embed
        self.register_buffer("image_pe", model.sam_prompt_encoder.get_dense_pe().clone(), persistent=False)

    def forward(self, image_embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = image_embed + self.no_mask.weight.reshape(1, -1, 1, 1)  # the dense embedding without a mask input
        return tuple(self.transformer.image_side(src, self.image_pe))


class CachedMaskDecoderGraph(MaskDecoderGraph):
    """:class:`MaskDecoderGraph` for points and boxes without a mask input, on the image's
    :class:`DecoderCacheGraph` outputs: the same outputs, a fifth less work per click."""

    def forward(  # type: ignore[override]
        self,
        image_embed: torch.Tensor,  # (1, C, h, w)
        high_res_feats_0: torch.Tensor,  # (1, C/8, 4h, 4w)
        high_res_feats_1: torch.Tensor,  # (1, C/4, 2h, 2w)
        point_coords: torch.Tensor,  # (P, N, 2) model-input pixels
        point_labels: torch.Tensor,  # (P, N) int64
        t2i_keys: torch.Tensor,  # (1, hw, C_i)
        t2i_values: torch.Tensor,  # (1, hw, C_i)
        i2t_queries: torch.Tensor,  # (1, hw, C_i)
    ) -> tuple[torch.Tensor, ...]:
        pe = self.prompt_encoder
        sparse, _ = pe(points=(point_coords, point_labels), boxes=None, masks=None)  # (P, N+1, C)
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)  # (1, C, 1, 1)
        side = ImageSide(t2i_keys, t2i_values, i2t_queries)
        return self._decode(image_embed, high_res_feats_0, high_res_feats_1, sparse, dense, side)


ENCODER_IN = ("image",)
ENCODER_OUT = ("image_embed", "high_res_feats_0", "high_res_feats_1", "vision_features")
DECODER_IN = (
    "image_embed", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels", "mask_input", "has_mask_input"
)
CACHE_OUT = ("t2i_keys", "t2i_values", "i2t_queries")
CACHED_DECODER_IN = (*DECODER_IN[:5], *CACHE_OUT)
DECODER_OUT = ("low_res_masks_multi", "iou_predictions_multi", "low_res_masks_single", "iou_predictions_single",
               "object_score_logits")
