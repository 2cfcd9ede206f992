"""Hiera trunk of the SAM 2 image encoder (hierarchical ViT with windowed attention).

Tokens stay channels-last, (B, H, W, C), through the whole trunk. Parameter names reproduce
the official ``image_encoder.trunk.*`` keys, so Meta's checkpoints load with strict loading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from segmenter.config import HieraConfig
from segmenter.modeling.blocked_attention import linear
from segmenter.modeling.common import MLP

__all__ = ["Hiera", "HieraBlock", "MultiScaleAttention", "BlockSpec", "block_specs"]

# CPU inference: attention and MLP run over token chunks of about _CPU_CHUNK intermediate
# values (qkv / hidden activations), which stay in cache instead of fresh multi-MB buffers per
# op; chunks keep at least _CPU_MIN_ROWS tokens so the GEMMs stay efficient.
_CPU_CHUNK = 1 << 20
_CPU_MIN_ROWS = 2048
# BLAS libraries switch to other kernels (other rounding) for GEMMs with very few rows.
_MIN_GEMM_ROWS = 16


@dataclass(frozen=True)
class BlockSpec:
    """Static layout of one Hiera block."""

    dim: int
    dim_out: int
    num_heads: int
    window_size: int  # 0 = global attention
    q_stride: tuple[int, int] | None  # max-pool stride of the queries (stage transitions)


def block_specs(cfg: HieraConfig) -> list[BlockSpec]:
    """Per-block dims, heads, windows and q-pooling as the official Hiera builds them.

    The first block of a stage doubles dim/heads and pools its queries, but still attends in
    the previous stage's window size (the window "lags by a block").
    """
    if len(cfg.stages) != len(cfg.window_spec):
        raise ValueError("stages and window_spec must have the same length")
    stage_ends = [sum(cfg.stages[: i + 1]) - 1 for i in range(len(cfg.stages))]
    if not 0 <= cfg.q_pool < len(cfg.stages):
        raise ValueError(f"q_pool must be in [0, {len(cfg.stages) - 1}], got {cfg.q_pool}")
    q_pool_blocks = {end + 1 for end in stage_ends[: cfg.q_pool]}
    specs: list[BlockSpec] = []
    dim, heads, stage = cfg.embed_dim, cfg.num_heads, 0
    for i in range(sum(cfg.stages)):
        window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
        dim_out = dim
        if i - 1 in stage_ends:
            dim_out, heads, stage = int(dim * cfg.dim_mul), int(heads * cfg.head_mul), stage + 1
        q_stride = tuple(cfg.q_stride) if i in q_pool_blocks else None
        specs.append(BlockSpec(dim, dim_out, heads, window, q_stride))
        dim = dim_out
    return specs


def _max_pool(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Non-overlapping max-pool of a channels-last map (B, H, W, C) -> (B, H//sh, W//sw, C).

    Same values as ``nn.MaxPool2d(stride, stride)`` (floor mode); an elementwise max of strided
    views needs no layout change, which makes it much cheaper on channels-last tokens.
    """
    sh, sw = stride
    h, w = x.shape[1] // sh * sh, x.shape[2] // sw * sw
    out = x[:, 0:h:sh, 0:w:sw]
    for i in range(sh):
        for j in range(sw):
            if i or j:
                out = torch.maximum(out, x[:, i:h:sh, j:w:sw])
    return out


def window_partition(
    x: torch.Tensor, window: int, pad_value: torch.Tensor | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B*nh*nw, window, window, C), padding H and W up to the window.

    Padded tokens are zeros, or ``pad_value`` (C,) when given.
    """
    b, h, w, c = x.shape
    pad_h, pad_w = -h % window, -w % window
    if (pad_h or pad_w) and pad_value is None:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    elif pad_h or pad_w:
        padded = x.new_empty((b, h + pad_h, w + pad_w, c))
        padded[:, :h, :w] = x
        padded[:, h:] = pad_value
        padded[:, :h, w:] = pad_value
        x = padded
    nh, nw = x.shape[1] // window, x.shape[2] // window
    windows = rearrange(x, "b (nh h) (nw w) c -> (b nh nw) h w c", nh=nh, nw=nw)
    return windows, (nh, nw)


def window_unpartition(windows: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B*nh*nw, h, w, C) -> (B, nh*h, nw*w, C); the caller crops any padding."""
    nh, nw = grid
    return rearrange(windows, "(b nh nw) h w c -> b (nh h) (nw w) c", nh=nh, nw=nw)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention over (B, h, w, C) tokens, optionally max-pooling the queries."""

    def __init__(
        self, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        if dim_out % num_heads:
            raise ValueError(f"dim_out {dim_out} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, h, w, C) -> (B, h', w', C_out)
        return linear(self.proj, self.attend(linear(self.qkv, x)))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Attention without the projections: (B, h, w, 3*C_out) -> (B, h', w', C_out)."""
        h, w = qkv.shape[1:3]
        c = qkv.shape[-1] // 3
        q, k, v = rearrange(qkv, "b h w (t n d) -> t b n (h w) d", t=3, n=self.num_heads)
        if self.q_stride is not None:
            q = _max_pool(qkv[..., :c], self.q_stride)  # (B, h', w', C_out)
            h, w = q.shape[1:3]
            q = rearrange(q, "b h w (n d) -> b n (h w) d", n=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, n, h'*w', d)
        return rearrange(out, "b n (h w) d -> b h w (n d)", h=h, w=w)


def _map_chunks(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n_chunks: int
) -> torch.Tensor:
    """``fn`` applied to ``n_chunks`` near-equal slices of ``x``'s first dim, results stacked.

    Inference-only helper: the slices' intermediates stay in cache instead of allocating one
    huge buffer per op. Every slice keeps enough rows for the row-wise ops to give bit-identical
    results to the unchunked call.
    """
    n = x.shape[0]
    step = -(-n // max(1, n_chunks))
    first = fn(x[:step])
    if step >= n:
        return first
    out = first.new_empty((n, *first.shape[1:]))
    out[:step] = first
    for s in range(step, n, step):
        out[s : s + step] = fn(x[s : s + step])
    return out


def _num_chunks(rows: int, width: int) -> int:
    return max(1, min(-(-rows * width // _CPU_CHUNK), rows // _CPU_MIN_ROWS))


def _fast_path(x: torch.Tensor) -> bool:
    """Chunking and in-place residuals: CPU inference only (GPUs want few, large kernels)."""
    return x.device.type == "cpu" and not torch.is_grad_enabled()


class HieraBlock(nn.Module):
    """Pre-norm transformer block: (windowed) attention with optional q-pooling, then MLP."""

    def __init__(self, spec: BlockSpec, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window_size = spec.window_size
        self.q_stride = spec.q_stride
        self.norm1 = nn.LayerNorm(spec.dim, eps=1e-6)
        self.attn = MultiScaleAttention(spec.dim, spec.dim_out, spec.num_heads, spec.q_stride)
        self.norm2 = nn.LayerNorm(spec.dim_out, eps=1e-6)
        hidden = int(spec.dim_out * mlp_ratio)
        self.mlp = MLP(spec.dim_out, hidden, spec.dim_out, num_layers=2, activation=nn.GELU)
        # projects the (normed) input to the new width on the residual path
        self.proj = nn.Linear(spec.dim, spec.dim_out) if spec.dim != spec.dim_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H', W', C_out)
        shortcut = x
        x = self.norm1(x)
        if self.proj is not None:
            shortcut = linear(self.proj, x)  # the residual path is widened from the normed input
        if self.q_stride is not None:
            shortcut = _max_pool(shortcut, self.q_stride)
        x = self._attention(x, shortcut.shape[1:3])
        if not _fast_path(x):
            x = shortcut + x
            return x + self.mlp(self.norm2(x))
        # x is a fresh buffer of ours: add in place unless dtype promotion (autocast) forbids it
        x = x.add_(shortcut) if x.dtype == torch.result_type(x, shortcut) else shortcut + x
        return self._chunked_mlp(x)

    def _attention(self, x: torch.Tensor, out_hw: torch.Size) -> torch.Tensor:
        if self.window_size == 0:
            return self.attn(x)
        h, w = out_hw
        if self._qkv_before_partition(x, out_hw):
            # Padded windows. A zero-padded token's qkv is just the bias and its output gets
            # cropped, so both projections run on the real tokens only (same values, less work).
            qkv = linear(self.attn.qkv, x)  # (B, H, W, 3*C_out)
            windows, grid = window_partition(qkv, self.window_size, self.attn.qkv.bias)
            y = window_unpartition(self._per_window(self.attn.attend, windows), grid)
            # contiguous: a strided crop would send the Linear down another GEMM path
            return linear(self.attn.proj, y[:, :h, :w].contiguous())
        windows, grid = window_partition(x, self.window_size)  # (B*nW, w, w, C)
        y = window_unpartition(self._per_window(self.attn, windows), grid)  # q-pool shrinks
        return y if y.shape[1:3] == out_hw else y[:, :h, :w]

    def _qkv_before_partition(self, x: torch.Tensor, out_hw: torch.Size) -> bool:
        """Whether to skip the padded tokens' projections, with results identical to the
        official order (partition, then project), where the GEMMs see the same row kernels."""
        b, height, width, _ = x.shape
        ws = self.window_size
        if not (height % ws or width % ws) or b * out_hw.numel() < _MIN_GEMM_ROWS:
            return False
        # With a single row of windows (and batch 1) the official partition is a strided view,
        # not a copy, and a Linear on it takes another GEMM path: keep its order of ops there.
        return b * -(-height // ws) > 1 or width <= ws

    def _per_window(
        self, fn: Callable[[torch.Tensor], torch.Tensor], windows: torch.Tensor
    ) -> torch.Tensor:
        if not _fast_path(windows):
            return fn(windows)
        n_chunks = _num_chunks(windows.shape[:3].numel(), self.attn.qkv.out_features)
        return _map_chunks(fn, windows, n_chunks)

    def _chunked_mlp(self, x: torch.Tensor) -> torch.Tensor:  # x + mlp(norm2(x)) in token chunks
        fc1, fc2 = self.mlp.layers

        def residual_mlp(t: torch.Tensor) -> torch.Tensor:
            return t + linear(fc2, self.mlp.act(linear(fc1, self.norm2(t))))

        flat = x.reshape(-1, x.shape[-1])
        out = _map_chunks(residual_mlp, flat, _num_chunks(flat.shape[0], fc1.out_features))
        return out.view(x.shape)


class PatchEmbed(nn.Module):
    """Strided conv stem: (B, 3, H, W) -> (B, H/4, W/4, C) channels-last."""

    def __init__(self, embed_dim: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Hiera(nn.Module):
    """Hiera trunk: ``forward(x (B, 3, H, W))`` -> 4 maps (B, C_i, H/s, W/s), s = 4, 8, 16, 32."""

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        self.cfg = cfg
        specs = block_specs(cfg)
        self.patch_embed = PatchEmbed(
            cfg.embed_dim, cfg.patch_kernel_size, cfg.patch_stride, cfg.patch_padding
        )
        # windowed position embedding: a background grid interpolated to the token grid,
        # plus a window-sized embedding tiled over it (first-stage window)
        bkg_h, bkg_w = cfg.window_pos_embed_bkg_spatial_size
        win = cfg.window_spec[0]
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, bkg_h, bkg_w))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, cfg.embed_dim, win, win))
        self.blocks = nn.ModuleList(HieraBlock(s, cfg.mlp_ratio) for s in specs)
        self.stage_ends = [sum(cfg.stages[: i + 1]) - 1 for i in range(len(cfg.stages))]
        self.channel_list = [specs[i].dim_out for i in reversed(self.stage_ends)]  # coarsest first
        # Memory format of each stage output as the official trunk leaves it: the conv stem's
        # channels-first layout survives until the first width-changing block, channels-last
        # after. Matching it makes the neck's convs pick the same kernels (bit-identical outputs).
        widened = [any(s.dim != s.dim_out for s in specs[: end + 1]) for end in self.stage_ends]
        self._channels_first_out = [not w for w in widened]
        # CPU only: (h, w, device, dtype) -> (the parameter values it was computed from, embedding)
        self._pe_cache: dict[tuple, tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]] = {}

    def _compute_pos_embed(self, h: int, w: int) -> torch.Tensor:  # (1, h, w, C)
        pe = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win_h, win_w = self.pos_embed_window.shape[-2:]
        tiled = self.pos_embed_window.tile(1, 1, -(-h // win_h), -(-w // win_w))[..., :h, :w]
        return (pe + tiled).permute(0, 2, 3, 1).contiguous()

    def pos_embed_for(self, h: int, w: int) -> torch.Tensor:
        """Windowed position embedding for an (h, w) token grid, (1, h, w, C); treat as read-only.

        On the CPU, where it costs about 2% of an image encoding, it is cached per (h, w, device,
        dtype) and reused while the two parameters hold the values it was computed from (a
        comparison of a few thousand numbers: loads, in-place edits and optimiser steps are all
        seen). On accelerators it is recomputed (microseconds; a comparison would synchronise the
        device). With autograd recording it is always recomputed.
        """
        params = (self.pos_embed, self.pos_embed_window)
        if params[0].device.type != "cpu" or (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
            return self._compute_pos_embed(h, w)
        key = (h, w, params[0].device, params[0].dtype)
        hit = self._pe_cache.get(key)
        if hit is not None and all(torch.equal(p, seen) for p, seen in zip(params, hit[0])):
            return hit[1]
        with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable in every grad mode
            seen = (params[0].detach().clone(), params[1].detach().clone())
            pe = self._compute_pos_embed(h, w)
        self._pe_cache[key] = (seen, pe)
        return pe

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)  # (B, H/4, W/4, C)
        x = x + self.pos_embed_for(x.shape[1], x.shape[2])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                feats = x.permute(0, 3, 1, 2)  # (B, C_i, H_i, W_i)
                if self._channels_first_out[len(outputs)]:
                    feats = feats.contiguous()
                outputs.append(feats)
        return outputs
