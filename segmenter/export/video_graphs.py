"""SAM 2's video tracking step as three exportable modules: only tensor math, no bookkeeping.

What a tracking step computes, split at the points where the Python side decides something
(which frames and pointers an object reads, which candidate mask it keeps):

* :class:`MemoryAttentionGraph`: the frame's features + each object's memory (F spatial memories
  with their temporal slots, P object pointers with their frame offsets) -> memory-conditioned
  features. The position encodings (the frame's sine grid, the memory grid + ``maskmem_tpos_enc``
  per slot, the pointers' sine encoding of ``offset / t_diff_max`` and its projection) are
  computed inside from the slot and offset inputs, so the runtime only passes integers.
* :class:`VideoHeadsGraph`: prompt encoder + mask decoder on per-object features (memory-conditioned
  or the no-memory embedding), with the object-score gating of ``_forward_sam_heads``: absent
  objects get ``NO_OBJ_SCORE`` logits and the learned no-object pointer. Outputs every candidate
  (multimask and single-mask) with its projected object pointer; the runtime picks one.
* :class:`MemoryEncoderGraph`: low-res mask logits -> upsampled, sigmoid (or binarised) and
  scaled mask -> memory features, with the no-object spatial embedding for absent objects.

Reference arithmetic: :class:`segmenter.video.tracking.Tracker` (``condition``, ``heads``,
``encode_memory``). The bfloat16 rounding of stored memories stays in the runtime (numpy), where
it is exact round-to-nearest-even.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segmenter.modeling.mask_decoder import stability_scores
from segmenter.modeling.position_encoding import sine_1d
from segmenter.modeling.rope import AxialRoPE
from segmenter.modeling.sam2 import SAM2Model
from segmenter.video.tracking import NO_OBJ_SCORE

__all__ = ["MemoryAttentionGraph", "MemoryEncoderGraph", "RealRoPE", "VideoHeadsGraph"]


class RealRoPE(nn.Module):
    """Axial RoPE for one (H, W) grid in real arithmetic (ONNX has no complex numbers).

    Keys of r memory frames are always unflattened to (r, L) so that no Python branch depends
    on the number of frames (a dynamic dimension of the graph).
    """

    def __init__(self, rope: AxialRoPE, feat_size: tuple[int, int]) -> None:
        super().__init__()
        table = rope.table(feat_size[0], feat_size[1], torch.device("cpu"))  # (L, D/2, 2)
        self.register_buffer("cos", table[..., 0].clone(), persistent=False)
        self.register_buffer("sin", table[..., 1].clone(), persistent=False)

    def forward(self, x: torch.Tensor, feat_size: tuple[int, int] | None = None) -> torch.Tensor:
        length = self.cos.shape[0]
        pairs = x.float().unflatten(-1, (-1, 2)).unflatten(-3, (-1, length))  # (..., r, L, D/2, 2)
        x0, x1 = pairs.unbind(-1)
        out = torch.stack([x0 * self.cos - x1 * self.sin, x0 * self.sin + x1 * self.cos], dim=-1)
        return out.flatten(-2).flatten(-3, -2).to(x.dtype)  # (..., r * L, D)


class MemoryAttentionGraph(nn.Module):
    """(1, C, h, w) frame features + B objects' memories -> (B, C, h, w) conditioned features."""

    def __init__(self, model: SAM2Model, vision_pos: torch.Tensor) -> None:
        super().__init__()
        cfg = model.config.memory
        self.attn = model.memory_attention
        e = model.config.embed_size
        rope = RealRoPE(self.attn.layers[0].self_attn.rope, (e, e))
        for layer in self.attn.layers:
            layer.self_attn.rope = rope
            layer.cross_attn_image.rope = rope
        self.feat_size = (e, e)
        self.hidden_dim = model.config.decoder.transformer_dim
        self.mem_dim = cfg.mem_dim
        self.add_tpos = cfg.add_tpos_enc_to_obj_ptrs
        self.proj_tpos = cfg.proj_tpos_enc_in_obj_ptrs
        self.ptr_tpos_proj = model.obj_ptr_tpos_proj if self.proj_tpos else None
        # the frame's sine position encoding, sequence-first, the same for every frame
        self.register_buffer("curr_pos", vision_pos.flatten(2).permute(2, 0, 1).clone(), persistent=False)  # (HW, 1, C)
        grid = model.memory_encoder.position_encoding.grid(e, e, torch.device("cpu"))  # (D, h, w)
        mem_pos = grid.flatten(1).T  # (HW, D)
        tpos = model.maskmem_tpos_enc.detach()[:, 0]  # (T, 1, D)
        self.register_buffer("mem_pos_table", (mem_pos[None] + tpos).clone(), persistent=False)  # (T, HW, D)

    def forward(
        self,
        vision_features: torch.Tensor,  # (1, C, h, w) the frame's features (no memory embedding)
        memory: torch.Tensor,  # (B, F, HW, D) each object's F spatial memories (bfloat16 values)
        memory_slots: torch.Tensor,  # (B, F) int64 index into maskmem_tpos_enc per memory
        obj_ptrs: torch.Tensor,  # (B, P, C) object pointers
        ptr_offsets: torch.Tensor,  # (B, P) float32 temporal offset of each pointer's frame
        ptr_tpos_max: torch.Tensor,  # (1,) float32 t_diff_max the offsets are normalised by
    ) -> torch.Tensor:  # (B, C, h, w)
        b, f, hw, d = memory.shape
        p = obj_ptrs.shape[1]
        curr = vision_features.flatten(2).permute(2, 0, 1)  # (HW, 1, C)
        mem = memory.permute(1, 2, 0, 3).reshape(f * hw, b, d)  # (F*HW, B, D), frames in order
        mem_pos = self.mem_pos_table[memory_slots].permute(1, 2, 0, 3).reshape(f * hw, b, d)
        if self.add_tpos:
            dim = self.hidden_dim if self.proj_tpos else self.mem_dim
            pe = sine_1d(ptr_offsets / ptr_tpos_max, dim=dim)  # (B, P, dim)
            ptr_pos = self.ptr_tpos_proj(pe) if self.proj_tpos else pe  # (B, P, D)
        else:
            ptr_pos = obj_ptrs.new_zeros(b, p, self.mem_dim)
        ptrs = obj_ptrs.transpose(0, 1)  # (P, B, C)
        ptr_pos = ptr_pos.transpose(0, 1)  # (P, B, D)
        if self.mem_dim < self.hidden_dim:  # each pointer -> C / D tokens
            split = self.hidden_dim // self.mem_dim
            ptrs = ptrs.reshape(p, b, split, self.mem_dim).transpose(1, 2).reshape(p * split, b, self.mem_dim)
            ptr_pos = ptr_pos.repeat_interleave(split, dim=0)
        tokens = torch.cat([mem, ptrs])  # (F*HW + P*s, B, D)
        pos = torch.cat([mem_pos, ptr_pos])
        fused = self.attn(curr, self.curr_pos, tokens, pos, ptrs.shape[0], feat_size=self.feat_size, blocked=False)
        return fused.permute(1, 2, 0).reshape(b, -1, *self.feat_size)  # (HW, B, C) -> (B, C, h, w)


class VideoHeadsGraph(nn.Module):
    """Prompt encoder + mask decoder on B objects' own features, gated by object presence."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.prompt_encoder = model.sam_prompt_encoder
        self.decoder = model.sam_mask_decoder
        self.obj_ptr_proj = model.obj_ptr_proj
        self.register_buffer("no_obj_ptr", model.no_obj_ptr.detach().clone(), persistent=False)  # (1, C)
        self.register_buffer("image_pe", model.sam_prompt_encoder.get_dense_pe().clone(), persistent=False)

    def forward(
        self,
        pix_feat: torch.Tensor,  # (B, C, h, w) conditioned features or the no-memory embedding
        high_res_feats_0: torch.Tensor,  # (1, C/8, 4h, 4w)
        high_res_feats_1: torch.Tensor,  # (1, C/4, 2h, 2w)
        point_coords: torch.Tensor,  # (B, N, 2) model-input pixels
        point_labels: torch.Tensor,  # (B, N) int64 (-1: padding)
        mask_input: torch.Tensor,  # (B, 1, 4h, 4w) previous logits
        has_mask_input: torch.Tensor,  # (1,) 1.0 = use mask_input
        present_threshold: torch.Tensor,  # (B, 1) object present when its score is above it
    ) -> tuple[torch.Tensor, ...]:
        pe = self.prompt_encoder
        b = pix_feat.shape[0]
        sparse, _ = pe(points=(point_coords, point_labels), boxes=None, masks=None)  # (B, N+1, C)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = pe.mask_downscaling(mask_input) * has_mask_input + no_mask * (1.0 - has_mask_input)
        masks, iou, tokens, score = self.decoder.predict_masks(
            image_embeddings=pix_feat,
            image_pe=self.image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=False,
            high_res_features=[high_res_feats_0.expand(b, -1, -1, -1), high_res_feats_1.expand(b, -1, -1, -1)],
        )  # masks (B, 4, 4h, 4w), iou (B, 4), tokens (B, 4, C), score (B, 1)
        multi_masks, multi_iou = masks[:, 1:], iou[:, 1:]
        single_masks, single_iou = masks[:, :1], iou[:, :1]
        d = self.decoder
        if d.dynamic_multimask_via_stability:  # MaskDecoder.forward(multimask_output=False) in eval
            best = multi_iou.argmax(dim=-1, keepdim=True)  # (B, 1)
            idx = best[..., None, None].expand(-1, -1, *masks.shape[-2:])
            stable = stability_scores(single_masks, d.dynamic_multimask_stability_delta) >= (
                d.dynamic_multimask_stability_thresh
            )  # (B, 1)
            single_masks = torch.where(stable[..., None, None], single_masks, multi_masks.gather(1, idx))
            single_iou = torch.where(stable, single_iou, multi_iou.gather(1, best))
        is_obj = score > present_threshold  # (B, 1)
        present = is_obj.float()[..., None]  # (B, 1, 1)
        ptrs = self.obj_ptr_proj(tokens)  # (B, 4, C)
        ptrs = present * ptrs + (1 - present) * self.no_obj_ptr  # absent: the no-object pointer
        gate = is_obj[..., None, None]  # (B, 1, 1, 1)
        multi_masks = torch.where(gate, multi_masks, NO_OBJ_SCORE)
        single_masks = torch.where(gate, single_masks, NO_OBJ_SCORE)
        # multimask outputs point from their own tokens; the single mask from token 0
        return multi_masks, multi_iou, ptrs[:, 1:], single_masks, single_iou, ptrs[:, 0], score


class MemoryEncoderGraph(nn.Module):
    """(1, C, h, w) frame features + B objects' low-res logits -> (B, HW, D) memory features."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        cfg = model.config.memory
        self.encoder = model.memory_encoder
        self.image_size = model.image_size
        self.scale = cfg.sigmoid_scale_for_mem_enc
        self.bias = cfg.sigmoid_bias_for_mem_enc
        self.no_obj_embed = cfg.no_obj_embed_spatial
        if self.no_obj_embed:
            self.register_buffer("no_obj_embed_spatial", model.no_obj_embed_spatial.detach().clone(), persistent=False)

    def forward(
        self,
        vision_features: torch.Tensor,  # (1, C, h, w)
        mask_logits: torch.Tensor,  # (B, 1, 4h, 4w) low-res logits of the kept mask
        object_score_logits: torch.Tensor,  # (B, 1)
        binarize: torch.Tensor,  # (1,) 1.0: mask = logits > 0 (prompted frames), 0.0: sigmoid
    ) -> torch.Tensor:  # (B, HW, D)
        high = F.interpolate(mask_logits, (self.image_size,) * 2, mode="bilinear", align_corners=False)
        mask = torch.where(binarize > 0.5, (high > 0).float(), torch.sigmoid(high))  # (B, 1, S, S)
        if self.scale != 1.0:
            mask = mask * self.scale
        if self.bias != 0.0:
            mask = mask + self.bias
        enc = self.encoder
        x = enc.pix_feat_proj(vision_features) + enc.mask_downsampler(mask)  # (B, C, h, w)
        maskmem = enc.out_proj(enc.fuser(x))  # (B, D, h, w)
        if self.no_obj_embed:
            absent = 1 - (object_score_logits > 0).float()  # (B, 1)
            maskmem = maskmem + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None].expand(
                *maskmem.shape
            )
        return maskmem.flatten(2).transpose(1, 2)  # (B, HW, D)
