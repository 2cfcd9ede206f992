"""SAM prompt encoder: points / boxes -> sparse tokens, mask prompt -> dense map.

State-dict keys match the official ``sam_prompt_encoder.*`` entries.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from segmenter.config import SAM2Config
from segmenter.modeling.common import LayerNorm2d

__all__ = ["PositionEmbeddingRandom", "PromptEncoder"]

NUM_POINT_LABELS = 4  # 0 negative, 1 positive, 2 box top-left, 3 box bottom-right
PAD_LABEL = -1


def _autocast_key(device: torch.device) -> torch.dtype | None:
    """The dtype autocast would use on ``device`` right now (None when it is off)."""
    try:
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
    except RuntimeError:  # device type without autocast support
        pass
    return None


class PositionEmbeddingRandom(nn.Module):
    """Fourier features with a fixed random Gaussian projection (buffer, loaded from checkpoints).

    Coordinates normalised to [0, 1] map to ``[sin(2π(2x-1)G), cos(2π(2x-1)G)]`` with
    ``G`` of shape (2, num_pos_feats), so the encoding has ``2 * num_pos_feats`` channels.
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats))
        # grids keyed on their explicit inputs: size, the matrix's device and dtype, the autocast
        # dtype (it sets the matmul's). The matrix is a fixed buffer, never trained: it changes
        # only when a state dict is loaded, which empties the cache.
        self._grids: dict[tuple, torch.Tensor] = {}

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._grids.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:  # (..., 2) in [0, 1] -> (..., C)
        proj = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        proj = 2 * math.pi * proj
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of pixel centres of an (h, w) grid -> (C, h, w). Cached; treat as read-only.

        After editing ``positional_encoding_gaussian_matrix`` in place (rather than with
        ``load_state_dict``), call :meth:`clear_cache`.
        """
        g = self.positional_encoding_gaussian_matrix
        key = (tuple(size), g.device, g.dtype, _autocast_key(g.device))
        pe = self._grids.get(key)
        if pe is None:
            # a plain tensor whatever the caller's grad mode: usable under inference_mode,
            # no_grad and autograd alike
            with torch.inference_mode(False), torch.no_grad():
                pe = self._grids[key] = self._grid(size)
        return pe

    def _grid(self, size: tuple[int, int]) -> torch.Tensor:  # (C, h, w)
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h  # (h,)
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w  # (w,)
        xy = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1)  # (h, w, 2)
        return self._encode(xy).permute(2, 0, 1)

    def clear_cache(self) -> None:
        """Forget the cached grids (needed only after in-place edits of the matrix)."""
        self._grids.clear()

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Encode pixel coordinates (B, N, 2) as (x, y) in an image of ``image_size`` (h, w) -> (B, N, C)."""
        h, w = image_size
        norm = torch.tensor([w, h], device=coords.device, dtype=coords.dtype)
        return self._encode((coords / norm).to(torch.float32))


class PromptEncoder(nn.Module):
    """Embeds point / box prompts as sparse tokens and a low-res mask prompt as a dense map.

    Args:
        embed_dim: token / feature width (256).
        image_embedding_size: (h, w) of the image embedding grid.
        input_image_size: (H, W) of the encoder input, the frame of the prompt coordinates.
        mask_in_chans: hidden channels of the mask-downscaling convs.
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.mask_input_size = (4 * self.image_embedding_size[0], 4 * self.image_embedding_size[1])

        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(NUM_POINT_LABELS))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        hidden = mask_in_chans // 4
        self.mask_downscaling = nn.Sequential(  # (B, 1, 4h, 4w) -> (B, C, h, w)
            nn.Conv2d(1, hidden, kernel_size=2, stride=2),
            LayerNorm2d(hidden),
            activation(),
            nn.Conv2d(hidden, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    @classmethod
    def from_config(cls, cfg: SAM2Config) -> PromptEncoder:
        side = cfg.embed_size
        return cls(
            embed_dim=cfg.decoder.transformer_dim,
            image_embedding_size=(side, side),
            input_image_size=(cfg.image_size, cfg.image_size),
            mask_in_chans=cfg.decoder.mask_in_chans,
        )

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid -> (1, C, h, w). Cached; treat as read-only."""
        return self.pe_layer(self.image_embedding_size)[None]

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # pixel centres; (B, N, 2)
        if pad:  # one "not a point" token, as SAM does when no box is given
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), PAD_LABEL)], dim=1)
        pe = self.pe_layer.forward_with_coords(points, self.input_image_size)  # (B, N, C)

        table = torch.cat([e.weight for e in self.point_embeddings])  # (4, C)
        idx = labels.long().clamp(0, NUM_POINT_LABELS - 1)
        known = (labels == idx)[..., None]  # exact labels 0..3 get their embedding added
        pe = torch.where(known, pe + table[idx], pe)
        return torch.where((labels == PAD_LABEL)[..., None], self.not_a_point_embed.weight, pe)

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:  # (B, 4) -> (B, 2, C)
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        pe = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_embed = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])  # (2, C)
        return (pe + corner_embed).to(pe.dtype)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (sparse (B, N', C), dense (B, C, h, w)).

        ``points`` = (coords (B, N, 2) in input-image pixels as (x, y), labels (B, N)); label -1
        marks padding, 0/1 negative/positive clicks, 2/3 box corners. Without ``boxes`` one padding
        point is appended. ``masks`` are (B, 1, 4h, 4w) logits; without them the learned
        ``no_mask_embed`` is broadcast (an expanded view, not a copy).
        """
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1

        parts = []
        if points is not None:
            parts.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            parts.append(self._embed_boxes(boxes))
        weight = self.no_mask_embed.weight
        sparse = torch.cat(parts, dim=1) if parts else weight.new_empty(bs, 0, self.embed_dim)

        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = weight.reshape(1, -1, 1, 1).expand(bs, -1, *self.image_embedding_size)
        return sparse, dense
