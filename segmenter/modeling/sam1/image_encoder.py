"""SAM 1's image encoder: a plain ViT with windowed and global attention and decomposed relative positions.

A 16x16 patch embedding plus a learned absolute position grid, ``depth`` pre-norm blocks (most
attend inside 14x14 windows, the ``global_attn_indexes`` ones over the whole grid), each adding
relative-position terms for the height and the width axis to its attention logits, then a conv
neck down to 256 channels. State-dict keys match the official ``image_encoder.*`` entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from segmenter.config import ViTConfig
from segmenter.modeling.common import LayerNorm2d
from segmenter.modeling.sam1.common import MLPBlock

__all__ = [
    "ImageEncoderViT",
    "resize_rel_pos",
    "resize_abs_pos",
    "rel_pos_lookup",
    "window_partition",
    "window_unpartition",
]

NORM_EPS = 1e-6


def resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """Linear interpolation of a (L, d) relative-position table to (length, d), as the reference does."""
    if rel_pos.shape[0] == length:
        return rel_pos
    table = rel_pos.float().reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1)  # (1, d, L)
    table = F.interpolate(table, size=length, mode="linear")
    return table.reshape(-1, length).permute(1, 0).to(rel_pos.dtype)


def resize_abs_pos(pos_embed: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize of a (1, g, g, C) position grid to (1, size, size, C) (ViTDet's convention)."""
    if pos_embed.shape[1:3] == (size, size):
        return pos_embed
    grid = pos_embed.permute(0, 3, 1, 2)  # (1, C, g, g)
    grid = F.interpolate(grid.float(), size=(size, size), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).to(pos_embed.dtype)


def rel_pos_lookup(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """(L, d) table -> (size, size, d): the embedding of the offset q - k along one axis."""
    table = resize_rel_pos(rel_pos, 2 * size - 1)
    pos = torch.arange(size, device=rel_pos.device)
    return table[pos[:, None] - pos[None, :] + (size - 1)]


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * windows, window, window, C), zero-padding H and W up to multiples of ``window``."""
    _, h, w, _ = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    windows = rearrange(x, "b (nh s) (nw t) c -> (b nh nw) s t c", s=window, t=window)
    return windows, (h + pad_h, w + pad_w)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`, dropping the padding -> (B, H, W, C)."""
    hp, wp = padded_hw
    x = rearrange(windows, "(b nh nw) s t c -> b (nh s) (nw t) c", nh=hp // window, nw=wp // window)
    h, w = hw
    return x[:, :h, :w].contiguous() if (hp, wp) != (h, w) else x


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, H, W) -> (B, H/p, W/p, C)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Attention(nn.Module):
    """Multi-head self-attention over an (h, w) grid with decomposed relative positions.

    ``rel_pos_h`` / ``rel_pos_w`` hold one embedding per offset (2 * size - 1 rows); the logit
    of query (i, j) and key (k, l) gets ``q · Rh[i - k] + q · Rw[j - l]`` (unscaled q).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, input_size: tuple[int, int]) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the embedding dim {dim}")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def _rel_pos_bias(self, q: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """q (B, n, h*w, d) -> additive logits (B, n, h*w, h*w)."""
        rq = rearrange(q, "b n (h w) d -> b n h w d", h=h, w=w)
        rel_h = torch.einsum("bnhwd,hkd->bnhwk", rq, rel_pos_lookup(self.rel_pos_h, h))  # (B, n, h, w, h)
        rel_w = torch.einsum("bnhwd,wkd->bnhwk", rq, rel_pos_lookup(self.rel_pos_w, w))  # (B, n, h, w, w)
        bias = rel_h[..., :, None] + rel_w[..., None, :]  # (B, n, h, w, h, w)
        return bias.flatten(-2).flatten(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, h, w, C)
        _, h, w, _ = x.shape
        qkv = rearrange(self.qkv(x), "b h w (three n d) -> three b n (h w) d", three=3, n=self.num_heads)
        q, k, v = qkv.unbind(0)  # (B, n, h*w, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self._rel_pos_bias(q, h, w).to(q.dtype))
        return self.proj(rearrange(out, "b n (h w) d -> b h w (n d)", h=h, w=w))


class Block(nn.Module):
    """Pre-norm transformer block; attends inside ``window_size`` windows, or globally when it is 0."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        window_size: int,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        y = self.norm1(x)
        if self.window_size > 0:
            hw = (y.shape[1], y.shape[2])
            y, padded_hw = window_partition(y, self.window_size)
            y = window_unpartition(self.attn(y), self.window_size, padded_hw, hw)
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """(B, 3, S, S) normalised, padded images -> (B, out_chans, S/16, S/16) embeddings."""

    def __init__(self, cfg: ViTConfig, img_size: int, in_chans: int = 3) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg.patch_size, in_chans, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                cfg.embed_dim,
                cfg.num_heads,
                cfg.mlp_ratio,
                cfg.qkv_bias,
                window_size=0 if i in cfg.global_attn_indexes else cfg.window_size,
                input_size=(grid, grid),
            )
            for i in range(cfg.depth)
        )
        out = cfg.out_chans
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.embed_dim, out, kernel_size=1, bias=False),
            LayerNorm2d(out),
            nn.Conv2d(out, out, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed  # (B, g, g, C)
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
