"""Sinusoidal position encodings (2D for feature maps, 1D for temporal offsets)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine", "sine_1d"]


def _frequencies(num_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    # channel j uses frequency temperature^(2*(j//2)/num_feats): pairs share a frequency
    j = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(j, 2, rounding_mode="floor") / num_feats)


class PositionEmbeddingSine(nn.Module):
    """Normalised 2D sine/cosine encoding of a (H, W) grid -> (B, num_pos_feats, H, W).

    Each axis gets ``num_pos_feats // 2`` channels alternating sin (even) and cos (odd);
    the y channels come first. Grids are computed once per (H, W, device) and cached.
    """

    def __init__(
        self,
        num_pos_feats: int,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        if scale is not None and not normalize:
            raise ValueError("scale needs normalize=True")
        self.num_pos_feats = num_pos_feats // 2  # per axis
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def _axis(self, n: int, device: torch.device) -> torch.Tensor:  # (n, F)
        pos = torch.arange(1, n + 1, dtype=torch.float32, device=device)
        if self.normalize:
            pos = pos / (pos[-1:] + 1e-6) * self.scale
        angles = pos[:, None] / _frequencies(self.num_pos_feats, self.temperature, device)
        out = torch.empty_like(angles)
        out[:, 0::2] = angles[:, 0::2].sin()
        out[:, 1::2] = angles[:, 1::2].cos()
        return out

    @torch.no_grad()
    def grid(self, height: int, width: int, device: torch.device) -> torch.Tensor:  # (C, H, W)
        key = (height, width, torch.device(device))
        pe = self._cache.get(key)
        if pe is None:
            with torch.inference_mode(False):  # a plain tensor, usable in every grad mode
                pe_y = self._axis(height, device).T[:, :, None].expand(-1, height, width)  # (F, H, W)
                pe_x = self._axis(width, device).T[:, None, :].expand(-1, height, width)  # (F, H, W)
                pe = torch.cat([pe_y, pe_x], dim=0).contiguous()
            self._cache[key] = pe
        return pe

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, *, H, W) -> (B, C, H, W)
        pe = self.grid(x.shape[-2], x.shape[-1], x.device)
        return pe[None].expand(x.shape[0], -1, -1, -1).to(x.dtype)


def sine_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1D sine encoding: ``positions`` (...) -> (..., dim) laid out as [sin | cos] halves."""
    half = dim // 2
    angles = positions.unsqueeze(-1) / _frequencies(half, temperature, positions.device)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
