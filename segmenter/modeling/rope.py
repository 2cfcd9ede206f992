"""Axial 2D rotary position encoding (RoPE) as used by SAM 2's memory attention.

Channel pairs ``(2i, 2i+1)`` of each attention head are rotated by an angle that depends on the
token's grid position: the first quarter of the head dim (``D/4`` pairs) uses the column index x,
the second quarter the row index y, both with frequencies ``theta^(-4i/D)``. Tokens are laid out
row-major (``index = y * W + x``), as produced by ``flatten(2)`` of a (B, C, H, W) map.

Results are bit-identical to the reference's complex implementation. On MPS, which lacks
complex kernels, the same product is computed in real arithmetic (also bit-identical).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["AxialRoPE", "apply_rope", "axial_rope_angles", "grid_from_length"]


def grid_from_length(num_tokens: int) -> tuple[int, int]:
    """(H, W) of a square token grid with ``num_tokens`` cells."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{num_tokens} tokens do not form a square grid; pass feat_size=(H, W)")
    return side, side


def axial_rope_angles(head_dim: int, height: int, width: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation angles (H*W, head_dim // 2) in float32 on the CPU: [x angles | y angles]."""
    if head_dim % 4:
        raise ValueError(f"axial RoPE needs a head dim divisible by 4, got {head_dim}")
    # same float32 arithmetic as the reference so that the tables agree to the last bit
    exponents = torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim
    freqs = 1.0 / (theta**exponents)  # (D/4,)
    t = torch.arange(height * width, dtype=torch.float32)
    t_x = t % width
    t_y = torch.div(t, width, rounding_mode="floor")
    return torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)  # (HW, D/2)


def _complex_supported(device: torch.device) -> bool:
    return device.type != "mps"  # complex kernels are missing or slow there


def apply_rope(x: torch.Tensor, table: torch.Tensor, use_complex: bool | None = None) -> torch.Tensor:
    """Rotate ``x`` (..., N, D) by ``table`` (L, D/2, 2) = (cos, sin) per pair, L dividing N.

    When N = r * L (keys of r memory frames) the table is reused for every frame without being
    materialised r times. The rotation runs in float32, like the reference, and returns
    ``x``'s dtype. A complex product is used where the device supports it (one fused kernel);
    elsewhere the same arithmetic in real numbers (bit-identical results).
    """
    n, length = x.shape[-2], table.shape[0]
    if n % length:
        raise ValueError(f"{n} tokens are not a whole number of {length}-token RoPE grids")
    pairs = x.float().unflatten(-1, (-1, 2))  # (..., N, D/2, 2)
    if n != length:
        pairs = pairs.unflatten(-3, (n // length, length))  # (..., r, L, D/2, 2)
    if use_complex is None:
        use_complex = _complex_supported(x.device)
    if use_complex:
        out = torch.view_as_real(torch.view_as_complex(pairs) * torch.view_as_complex(table))
    else:
        (x0, x1), (cos, sin) = pairs.unbind(-1), table.unbind(-1)
        out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    out = out.flatten(-2)
    if n != length:
        out = out.flatten(-3, -2)
    return out.to(x.dtype)


class AxialRoPE(nn.Module):
    """Cached axial RoPE tables for a head dim; one instance can serve many attention layers.

    Holds no parameters or buffers (nothing in the state dict). Tables are built once per
    (H, W, device) and kept as real (cos, sin) pairs, usable as a complex view where supported.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"axial RoPE needs a head dim divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.theta = theta
        self._cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, theta={self.theta}"

    @torch.no_grad()
    def table(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(H*W, head_dim // 2, 2) float32 on ``device``: (cos, sin) of each pair's angle."""
        key = (height, width, torch.device(device))
        hit = self._cache.get(key)
        if hit is None:
            # Built on the CPU and moved, like the reference, so every device gets the same table.
            # torch.polar (CPU only, never on the device) rounds cos/sin exactly as the reference
            # does; the vectorised torch.cos/sin can differ by one ulp.
            with torch.inference_mode(False):  # a plain tensor, usable in every grad mode
                angles = axial_rope_angles(self.head_dim, height, width, self.theta)  # (HW, D/2)
                hit = torch.view_as_real(torch.polar(torch.ones_like(angles), angles)).to(device)
            self._cache[key] = hit
        return hit

    def forward(self, x: torch.Tensor, feat_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Rotate ``x`` (..., N, D) whose tokens are the (H, W) grid, or r copies of it.

        ``feat_size`` defaults to the square grid of N tokens (N must then be one grid).
        """
        height, width = feat_size if feat_size is not None else grid_from_length(x.shape[-2])
        return apply_rope(x, self.table(height, width, x.device))
