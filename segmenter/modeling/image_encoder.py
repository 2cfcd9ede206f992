"""SAM 2 image encoder: Hiera trunk + FPN neck (official keys ``image_encoder.{trunk,neck}.*``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segmenter.config import NeckConfig, SAM2Config
from segmenter.modeling.hiera import Hiera
from segmenter.modeling.position_encoding import PositionEmbeddingSine

__all__ = ["FpnNeck", "ImageEncoder", "build_image_encoder"]


class _Lateral(nn.Module):
    """1x1 lateral projection of one backbone level (key ``conv``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H, W)
        return self.conv(x)


class FpnNeck(nn.Module):
    """FPN without output convs: 1x1 laterals, top-down fusion on selected levels, sine pos-enc.

    ``convs.0`` takes the coarsest map. ``forward`` takes and returns levels finest first.
    """

    def __init__(self, cfg: NeckConfig) -> None:
        super().__init__()
        self.backbone_channel_list = list(cfg.backbone_channel_list)
        self.d_model = cfg.d_model
        self.convs = nn.ModuleList(_Lateral(c, cfg.d_model) for c in cfg.backbone_channel_list)
        self.fpn_top_down_levels = set(cfg.fpn_top_down_levels)
        self.fpn_interp_model = cfg.fpn_interp_model
        self.position_encoding = PositionEmbeddingSine(cfg.d_model)

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:  # x2, in float32 like the reference
        mode = self.fpn_interp_model
        align = None if mode == "nearest" else False
        return F.interpolate(x.float(), scale_factor=2.0, mode=mode, align_corners=align)

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n = len(self.convs)
        if len(xs) != n:
            raise ValueError(f"expected {n} backbone levels, got {len(xs)}")
        out: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
        pos: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
        prev = None
        for i in reversed(range(n)):  # coarsest to finest
            feat = self.convs[n - 1 - i](xs[i])  # (B, d_model, H_i, W_i)
            if prev is not None and i in self.fpn_top_down_levels:
                feat = feat + self._upsample(prev)
            out[i] = prev = feat
            pos[i] = self.position_encoding(feat)  # (B, d_model, H_i, W_i), feat.dtype
        return out, pos


class ImageEncoder(nn.Module):
    """Trunk + neck; ``scalp`` drops that many of the coarsest levels from the outputs."""

    def __init__(self, trunk: Hiera, neck: FpnNeck, scalp: int = 0) -> None:
        super().__init__()
        if list(trunk.channel_list) != list(neck.backbone_channel_list):
            raise ValueError(
                f"trunk channels {trunk.channel_list} != neck channels {neck.backbone_channel_list}"
            )
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """(B, 3, H, W) normalised image -> vision_features (B, 256, H/16, W/16), the FPN
        levels ``backbone_fpn`` finest first (strides 4, 8, 16) and their ``vision_pos_enc``."""
        features, pos = self.neck(self.trunk(x))
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        return {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features}


def build_image_encoder(cfg: SAM2Config) -> ImageEncoder:
    return ImageEncoder(Hiera(cfg.hiera), FpnNeck(cfg.neck), scalp=cfg.neck.scalp)
