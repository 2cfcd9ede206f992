"""One SAM 2 tracking step on one frame for a batch of objects (reference: ``SAM2Base.track_step``).

The frame's features are computed once and shared by every object. Objects are conditioned on
their own memories; objects whose memory has the same token layout (number of memory frames and
of object pointers) go through memory attention as one batch, and then all objects go through
the mask decoder and the memory encoder together. The arithmetic of each object is the
reference's, so a batch gives the same numbers as one object at a time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from segmenter.modeling.blocked_attention import fast_cpu_gemm
from segmenter.modeling.position_encoding import sine_1d
from segmenter.modeling.sam2 import SAM2Model
from segmenter.video.memory_bank import MemorySelection
from segmenter.video.policies.step import PolicyStep

__all__ = ["NO_OBJ_SCORE", "FrameFeatures", "HeadOutput", "Tracker", "use_multimask"]

NO_OBJ_SCORE = -1024.0  # low-res logits of objects predicted absent
MASK_OUT_SCALE, MASK_OUT_BIAS = 20.0, -10.0  # a mask prompt used as output: 1 -> +10, 0 -> -10
MULTIMASK_MAX_POINTS = 1  # released configs: several candidate masks for 0 or 1 point (a box counts 2)


def use_multimask(num_points: int) -> bool:
    """The reference's ``_use_multimask`` with the flags every released config sets."""
    return 0 <= num_points <= MULTIMASK_MAX_POINTS


@dataclass
class FrameFeatures:
    """Image-encoder output of one frame, shared by all objects."""

    frame_idx: int
    vision: torch.Tensor  # (1, C, h, w) stride-16 features
    pos: torch.Tensor  # (1, C, h, w) their position encoding
    high_res: tuple[torch.Tensor, torch.Tensor]  # (1, C/8, 4h, 4w), (1, C/4, 2h, 2w)
    no_mem: torch.Tensor  # (1, C, h, w) vision + no_mem_embed (frames without memory)

    @property
    def size(self) -> tuple[int, int]:
        return self.vision.shape[-2], self.vision.shape[-1]


@dataclass
class HeadOutput:
    """SAM-head outputs for B objects."""

    low_res: torch.Tensor  # (B, 1, 4h, 4w) float32 logits of the chosen mask
    high_res: torch.Tensor  # (B, 1, S, S)
    obj_ptr: torch.Tensor  # (B, C)
    object_score_logits: torch.Tensor  # (B, 1)


class Tracker:
    """The per-frame operations of SAM 2 video tracking, batched over objects.

    ``exact=False``: on the CPU, the image encoder, memory attention and memory encoder run their
    products through oneDNN (:func:`~segmenter.modeling.blocked_attention.fast_cpu_gemm`), and memory
    attention through its cache-blocked kernels: equal to Meta's to float32 rounding. ``exact=True``
    keeps PyTorch's GEMMs in the reference's order of operations: one object's outputs equal Meta's
    bit for bit."""

    def __init__(self, model: SAM2Model, exact: bool = False) -> None:
        if not getattr(model, "with_memory", False):
            raise ValueError("video tracking needs a SAM 2 model with its memory modules (memory attention/encoder)")
        self.model = model
        self.exact = exact
        self.mem_cfg = model.config.memory
        self.hidden_dim = model.config.decoder.transformer_dim
        self.mem_dim = self.mem_cfg.mem_dim
        self.num_maskmem = self.mem_cfg.num_maskmem
        # maskmem position encoding (+ each temporal encoding), the same for every frame and object
        self._mem_pos: dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ frame features
    def encode_frame(self, frame_idx: int, image: torch.Tensor) -> FrameFeatures:
        """(1, 3, S, S) normalised image -> features shared by every object on this frame."""
        with fast_cpu_gemm(not self.exact):
            emb = self.model.encode_images(image)
        return FrameFeatures(frame_idx, emb.vision_features, emb.vision_pos_enc, emb.high_res_feats, emb.image_embed)

    # ------------------------------------------------------------------ SAM heads
    def heads(
        self,
        pix_feat: torch.Tensor,  # (B, C, h, w)
        feats: FrameFeatures,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,  # (B, N, 2) model-input px, (B, N)
        mask_inputs: torch.Tensor | None = None,  # (B, 1, H', W') logits or mask
        multimask: bool = False,
        policy: PolicyStep | None = None,
    ) -> HeadOutput:
        """Prompt encoder + mask decoder with object-score gating (``_forward_sam_heads``).

        ``policy`` (memory policies other than SAM 2's) sets the presence threshold and picks
        among the candidate masks; ``None`` is SAM 2's code path.
        """
        model = self.model
        b = pix_feat.shape[0]
        if points is None:  # a single padding point
            points = (
                torch.zeros(b, 1, 2, device=pix_feat.device),
                -torch.ones(b, 1, dtype=torch.int32, device=pix_feat.device),
            )
        if mask_inputs is not None:
            size = model.sam_prompt_encoder.mask_input_size
            if tuple(mask_inputs.shape[-2:]) != tuple(size):
                mask_inputs = F.interpolate(mask_inputs.float(), size, mode="bilinear", align_corners=False, antialias=True)
        low, ious, tokens, score = model.sam_heads(pix_feat, feats.high_res, points, mask_inputs, multimask)
        is_obj = score > 0 if policy is None else score > policy.threshold(score)  # (B, 1)
        low = torch.where(is_obj[:, None, None], low, NO_OBJ_SCORE).float()  # (B, M, 4h, 4w)
        # upsample every candidate, then pick: interpolating M channels rounds differently from one
        high = F.interpolate(low, (model.image_size,) * 2, mode="bilinear", align_corners=False)
        token = tokens[:, 0]
        if multimask:
            rows = torch.arange(b, device=low.device)
            best = ious.argmax(dim=-1) if policy is None else policy.choose(low, high, ious, score)
            low, high = low[rows, best].unsqueeze(1), high[rows, best].unsqueeze(1)
            if tokens.shape[1] > 1:
                token = tokens[rows, best]
        obj_ptr = self._gate_pointer(model.obj_ptr_proj(token), is_obj.float())
        return HeadOutput(low, high, obj_ptr, score)

    def _gate_pointer(self, obj_ptr: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        # absent objects get the learned no-object pointer (hard choice)
        obj_ptr = present * obj_ptr
        return obj_ptr + (1 - present) * self.model.no_obj_ptr

    def mask_as_output(self, feats: FrameFeatures, masks: torch.Tensor, policy: PolicyStep | None = None) -> HeadOutput:
        """A mask prompt (B, 1, S, S) of 0/1 taken as the prediction (``_use_mask_as_output``)."""
        masks = masks.float()
        high = masks * MASK_OUT_SCALE + MASK_OUT_BIAS
        low = F.interpolate(
            high, (high.shape[-2] // 4, high.shape[-1] // 4), mode="bilinear", align_corners=False, antialias=True
        )
        # the pointer comes from the SAM heads prompted with the downsampled mask, no memory
        vision = feats.vision.expand(masks.shape[0], -1, -1, -1)
        ptr = self.heads(vision, feats, mask_inputs=self.model.mask_downsample(masks), policy=policy).obj_ptr
        present = (masks.flatten(1) > 0).any(dim=1, keepdim=True).float()  # (B, 1)
        score = MASK_OUT_SCALE * present + MASK_OUT_BIAS
        return HeadOutput(low, high, self._gate_pointer(ptr, present), score)

    # ------------------------------------------------------------------ memory
    def _memory_pos(self, size: tuple[int, int], device: torch.device) -> torch.Tensor:
        """(num_maskmem, HW, mem_dim): spatial + temporal encoding for each temporal slot."""
        pos = self._mem_pos.get(("pos", device))
        if pos is None:  # normally kept from the first memory encoding, as the reference does
            grid = self.model.memory_encoder.position_encoding.grid(*size, device)  # (D, h, w)
            pos = self._mem_pos[("pos", device)] = rearrange(grid, "d h w -> (h w) 1 d")
        key = ("tpos", device)
        table = self._mem_pos.get(key)
        if table is None:
            tpos = self.model.maskmem_tpos_enc  # (num_maskmem, 1, 1, mem_dim)
            table = torch.stack([pos + tpos[i].to(device) for i in range(self.num_maskmem)])  # (T, HW, 1, D)
            table = table.squeeze(2)
            self._mem_pos[key] = table
        return table

    def _pointer_pos(self, offsets: list[tuple[int, ...]], num_frames: int | None, device: torch.device) -> torch.Tensor:
        """Temporal offsets of each object's P pointers -> (P, B, mem_dim) encodings.

        Computed once per distinct offset list (usually one for all objects), each as a
        (P, C) batch like the reference, so that the projection rounds identically.
        """
        cfg = self.mem_cfg
        num_ptr, batch = len(offsets[0]), len(offsets)
        if not cfg.add_tpos_enc_to_obj_ptrs:
            return torch.zeros(num_ptr, batch, self.mem_dim, device=device)
        cap = cfg.max_obj_ptrs_in_encoder if num_frames is None else min(num_frames, cfg.max_obj_ptrs_in_encoder)
        t_diff_max = cap - 1
        dim = self.hidden_dim if cfg.proj_tpos_enc_in_obj_ptrs else self.mem_dim
        encoded: dict[tuple[int, ...], torch.Tensor] = {}
        for key in dict.fromkeys(offsets):
            pe = sine_1d(torch.tensor(key, device=device) / t_diff_max, dim=dim)  # (P, dim)
            encoded[key] = self.model.obj_ptr_tpos_proj(pe) if cfg.proj_tpos_enc_in_obj_ptrs else pe
        if len(encoded) == 1:
            return encoded[offsets[0]].unsqueeze(1).expand(-1, batch, -1)
        return torch.stack([encoded[key] for key in offsets], dim=1)

    def _group_memory(
        self, selections: list[MemorySelection], size: tuple[int, int], device: torch.device, num_frames: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Memory tokens (M, B, D), their encodings and the number of pointer tokens for one group."""
        num_mem, num_ptr = selections[0].layout
        tokens, pos = [], []
        if num_mem:
            frames = [
                torch.stack([sel.memories[f][1].maskmem.to(device, non_blocking=True) for sel in selections], dim=1)
                for f in range(num_mem)
            ]  # each (HW, B, D) bfloat16
            tokens.append(torch.cat(frames).float())
            slots = torch.tensor([[sel.memories[f][0] for sel in selections] for f in range(num_mem)], device=device)
            table = self._memory_pos(size, device)  # (T, HW, D)
            pos.append(rearrange(table[slots], "f b n d -> (f n) b d"))
        n_ptr_tokens = 0
        if num_ptr:
            ptrs = torch.stack(
                [torch.cat([sel.pointers[p][1] for sel in selections]) for p in range(num_ptr)]
            )  # (P, B, C)
            offsets = [tuple(off for off, _ in sel.pointers) for sel in selections]
            ptr_pos = self._pointer_pos(offsets, num_frames, device)  # (P, B, D)
            if self.mem_dim < self.hidden_dim:  # each pointer -> C / D tokens
                split = self.hidden_dim // self.mem_dim
                ptrs = rearrange(ptrs, "p b (s d) -> (p s) b d", s=split)
                ptr_pos = ptr_pos.repeat_interleave(split, dim=0)
            tokens.append(ptrs.float())
            pos.append(ptr_pos.float())
            n_ptr_tokens = ptrs.shape[0]
        return torch.cat(tokens), torch.cat(pos), n_ptr_tokens

    def condition(
        self, feats: FrameFeatures, selections: list[MemorySelection], num_frames: int | None
    ) -> torch.Tensor:
        """Memory-conditioned features (B, C, h, w), one memory-attention call per memory layout."""
        h, w = feats.size
        device = feats.vision.device
        curr = rearrange(feats.vision, "1 c h w -> (h w) 1 c")
        curr_pos = rearrange(feats.pos, "1 c h w -> (h w) 1 c")
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, sel in enumerate(selections):
            groups[sel.layout].append(i)
        out: list[torch.Tensor | None] = [None] * len(selections)
        for idx in groups.values():
            memory, memory_pos, n_ptr = self._group_memory([selections[i] for i in idx], (h, w), device, num_frames)
            with fast_cpu_gemm(not self.exact):
                fused = self.model.memory_attention(
                    curr, curr_pos, memory, memory_pos, n_ptr, feat_size=(h, w), blocked=False if self.exact else None
                )
            fused = fused.permute(1, 2, 0).view(len(idx), -1, h, w)  # (HW, B, C) -> (B, C, h, w)
            for j, i in enumerate(idx):
                out[i] = fused[j : j + 1]
        if len(groups) == 1:
            return fused
        return torch.cat(out)

    def encode_memory(
        self,
        feats: FrameFeatures,
        high_res_masks: torch.Tensor,  # (B, 1, S, S) logits
        object_score_logits: torch.Tensor,  # (B, 1)
        binarize: bool,
    ) -> torch.Tensor:
        """Memory features (B, HW, mem_dim) in bfloat16, as the reference stores them."""
        cfg = self.mem_cfg
        mask = (high_res_masks > 0).float() if binarize else torch.sigmoid(high_res_masks)
        if cfg.sigmoid_scale_for_mem_enc != 1.0:
            mask = mask * cfg.sigmoid_scale_for_mem_enc
        if cfg.sigmoid_bias_for_mem_enc != 0.0:
            mask = mask + cfg.sigmoid_bias_for_mem_enc
        # the reference hands the encoder NCHW-contiguous features; a channels-last input would
        # make the convolutions round differently
        with fast_cpu_gemm(not self.exact):
            out = self.model.memory_encoder(feats.vision.contiguous(), mask, skip_mask_sigmoid=True)
        maskmem = out["vision_features"]  # (B, D, h, w)
        if cfg.no_obj_embed_spatial:
            absent = 1 - (object_score_logits > 0).float()
            maskmem = maskmem + absent[..., None, None] * self.model.no_obj_embed_spatial[..., None, None].expand(
                *maskmem.shape
            )
        key = ("pos", maskmem.device)
        if key not in self._mem_pos:
            self._mem_pos[key] = rearrange(out["vision_pos_enc"][0][:1], "1 d h w -> (h w) 1 d").clone()
        return rearrange(maskmem.to(torch.bfloat16), "b d h w -> b (h w) d").contiguous()

    # ------------------------------------------------------------------ one tracking step
    def track(
        self,
        feats: FrameFeatures,
        selections: list[MemorySelection],
        num_frames: int | None,
        policy: PolicyStep | None = None,
    ) -> tuple[HeadOutput, torch.Tensor]:
        """Track B objects on a frame from their memories: head outputs and new memories."""
        pix_feat = self.condition(feats, selections, num_frames)
        out = self.heads(pix_feat, feats, multimask=use_multimask(0), policy=policy)
        maskmem = self.encode_memory(feats, out.high_res, out.object_score_logits, binarize=False)
        return out, maskmem
