"""SAM 2 memory encoder: fuses a frame's mask with its image features into a memory entry.

mask (B, 1, s*h, s*w) --MaskDownSampler--> (B, C, h, w) + pix_feat_proj(image features)
--Fuser (ConvNeXt blocks)--> out_proj --> (B, mem_dim, h, w), plus a sine position encoding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from segmenter.config import MemoryConfig
from segmenter.modeling.blocked_attention import cpu_linear, fast_gemm_enabled
from segmenter.modeling.common import LayerNorm2d
from segmenter.modeling.position_encoding import PositionEmbeddingSine

__all__ = ["MaskDownSampler", "CXBlock", "Fuser", "MemoryEncoder"]


def _num_stages(total_stride: int, stride: int) -> int:
    stages = round(math.log(total_stride) / math.log(stride))
    if stride**stages != total_stride:
        raise ValueError(f"total stride {total_stride} is not a power of the stride {stride}")
    return stages


class MaskDownSampler(nn.Module):
    """Downsample a mask by ``total_stride`` in stages of ``stride``, then project to ``embed_dim``.

    Each stage is Conv(k, stride) -> LayerNorm2d -> GELU and multiplies the channels by
    ``stride**2`` (1 -> 4 -> 16 -> 64 -> 256 for stride 2, total 16); a final 1x1 conv maps to
    ``embed_dim``. Keys: ``encoder.{3*i, 3*i+1}`` per stage, ``encoder.{3*stages}`` last.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        kernel_size: int = 3,
        stride: int = 2,
        padding: int | None = None,
        total_stride: int = 16,
    ) -> None:
        super().__init__()
        if padding is None:  # smallest padding for which each stage divides the size by `stride`
            padding = (kernel_size - stride + 1) // 2
        layers: list[nn.Module] = []
        channels = 1
        for _ in range(_num_stages(total_stride, stride)):
            out_channels = channels * stride**2
            layers += [
                nn.Conv2d(channels, out_channels, kernel_size, stride=stride, padding=padding),
                LayerNorm2d(out_channels),
                nn.GELU(),
            ]
            channels = out_channels
        layers.append(nn.Conv2d(channels, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, C, H/s, W/s)
        return self.encoder(mask)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm2d, MLP (x4, GELU), layer scale, residual."""

    def __init__(self, dim: int = 256, kernel_size: int = 7, layer_scale_init: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        y = rearrange(self.norm(self.dwconv(x)), "b c h w -> b h w c")
        if fast_gemm_enabled(x):  # inference inside fast_cpu_gemm: oneDNN's GEMM
            y = cpu_linear(F.gelu(cpu_linear(y, self.pwconv1.weight, self.pwconv1.bias)), self.pwconv2.weight, self.pwconv2.bias)
            y = self.gamma * y
        else:
            y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + rearrange(y, "b h w c -> b c h w")


class Fuser(nn.Module):
    """A stack of ``CXBlock`` (keys ``layers.{i}``)."""

    def __init__(self, dim: int = 256, num_layers: int = 2, kernel_size: int = 7) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim, kernel_size) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Encode (image features, mask) into memory features (B, out_dim, h, w) and their position."""

    def __init__(
        self,
        in_dim: int = 256,
        out_dim: int = 64,
        fuser_layers: int = 2,
        fuser_kernel_size: int = 7,
        mask_kernel_size: int = 3,
        mask_stride: int = 2,
        total_stride: int = 16,
    ) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(
            in_dim, mask_kernel_size, mask_stride, total_stride=total_stride
        )
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(in_dim, fuser_layers, fuser_kernel_size)
        self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1) if out_dim != in_dim else nn.Identity()
        self.position_encoding = PositionEmbeddingSine(out_dim)

    @classmethod
    def from_config(cls, cfg: MemoryConfig, in_dim: int = 256, total_stride: int = 16) -> MemoryEncoder:
        return cls(
            in_dim=in_dim,
            out_dim=cfg.mem_dim,
            fuser_layers=cfg.fuser_layers,
            fuser_kernel_size=cfg.fuser_kernel_size,
            mask_kernel_size=cfg.mask_downsampler_kernel_size,
            mask_stride=cfg.mask_downsampler_stride,
            total_stride=total_stride,
        )

    def forward(
        self,
        pix_feat: torch.Tensor,  # (B or 1, in_dim, h, w); batch 1 = one frame shared by all masks
        masks: torch.Tensor,  # (B, 1, s*h, s*w) logits, or already scaled if skip_mask_sigmoid
        skip_mask_sigmoid: bool = False,
        chunk: int | None = None,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """{"vision_features": (B, out_dim, h, w), "vision_pos_enc": [(B, out_dim, h, w)]}.

        Masks are encoded ``chunk`` at a time (default: one at a time on the CPU, where large
        batches fall out of the cache and run slower; all at once elsewhere).
        """
        if pix_feat.shape[0] not in (1, masks.shape[0]):
            raise ValueError(f"{pix_feat.shape[0]} feature maps for {masks.shape[0]} masks")
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        chunk = chunk or (1 if masks.device.type == "cpu" else masks.shape[0])
        # projected once when the frame is shared; features may be offloaded to another device
        feats = self.pix_feat_proj(pix_feat.to(masks.device))
        outs = []
        for i in range(0, masks.shape[0], chunk):
            f = feats if feats.shape[0] == 1 else feats[i : i + chunk]
            x = f + self.mask_downsampler(masks[i : i + chunk])  # (b, in_dim, h, w)
            outs.append(self.out_proj(self.fuser(x)))
        x = torch.cat(outs) if len(outs) > 1 else outs[0]
        pos = self.position_encoding(x[:1]).expand(x.shape[0], -1, -1, -1)
        return {"vision_features": x, "vision_pos_enc": [pos]}
