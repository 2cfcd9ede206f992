"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

State-dict keys match the official ``sam_mask_decoder.transformer.*`` entries.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from segmenter.modeling.common import MLP, token_linear

__all__ = ["Attention", "TwoWayAttentionBlock", "TwoWayTransformer"]


class ImageSide(NamedTuple):
    """A two-way block's projections of the image tokens that depend on the image alone (B, HW, C_i):
    an interactive decoder computes them once per image instead of once per prompt."""

    t2i_keys: torch.Tensor  # token -> image attention's keys
    t2i_values: torch.Tensor  # and values
    i2t_queries: torch.Tensor  # image -> token attention's queries


class Attention(nn.Module):
    """Multi-head attention whose q/k/v live in ``embedding_dim // downsample_rate`` channels.

    Keys ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``; keys/values may have their own
    input width ``kv_in_dim``.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = embedding_dim if kv_in_dim is None else kv_in_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the internal dim {self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.dropout_p = dropout

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, h*d) -> (B, h, N, d)
        return rearrange(x, "b n (h d) -> b h n d", h=self.num_heads)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, Nq, C), k / v (B, Nk, C_kv) -> (B, Nq, C)."""
        return self.attend(token_linear(self.q_proj, q), token_linear(self.k_proj, k), token_linear(self.v_proj, v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention on projected q (B, Nq, C_i), k / v (B, Nk, C_i) -> (B, Nq, C) (out-projected)."""
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p if self.training else 0.0)
        return token_linear(self.out_proj, rearrange(out, "b h n d -> b n (h d)"))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image attention, token MLP, image->token attention (post-norms).

    The first block of the stack adds no positional encoding in its self-attention and
    replaces (not updates) the tokens with its output.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, num_layers=2, activation=activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def image_side(self, keys: torch.Tensor, key_pe: torch.Tensor) -> ImageSide:
        """The projections of the image tokens that no prompt changes (keys (B, HW, C), key_pe (1 or B, HW, C))."""
        k = keys + key_pe
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        return ImageSide(token_linear(t2i.k_proj, k), token_linear(t2i.v_proj, keys), token_linear(i2t.q_proj, k))

    def forward(
        self,
        queries: torch.Tensor,  # (B, N, C) prompt tokens
        keys: torch.Tensor,  # (B, HW, C) image tokens
        query_pe: torch.Tensor,  # (B, N, C)
        key_pe: torch.Tensor,  # (1 or B, HW, C)
        image_side: ImageSide | None = None,  # :meth:`image_side` of these keys, computed before
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        if image_side is None:
            k = keys + key_pe
            queries = self.norm2(queries + t2i(queries + query_pe, k, keys))
        else:
            queries = self.norm2(queries + t2i.attend(token_linear(t2i.q_proj, queries + query_pe), *image_side[:2]))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        if image_side is None:
            attn = i2t(k, q, queries)
        else:
            attn = i2t.attend(image_side.i2t_queries, token_linear(i2t.k_proj, q), token_linear(i2t.v_proj, queries))
        keys = self.norm4(keys + attn)
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks, then a final token->image attention and LayerNorm."""

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim,
                num_heads,
                mlp_dim,
                activation,
                attention_downsample_rate,
                skip_first_layer_pe=i == 0,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def image_side(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> ImageSide:
        """The first block's prompt-independent projections of (B, C, h, w) image tokens, for :meth:`forward`."""
        keys = rearrange(image_embedding, "b c h w -> b (h w) c")
        return self.layers[0].image_side(keys, rearrange(image_pe, "b c h w -> b (h w) c"))

    def forward(
        self,
        image_embedding: torch.Tensor,  # (B, C, h, w)
        image_pe: torch.Tensor,  # (1 or B, C, h, w), broadcast over the batch
        point_embedding: torch.Tensor,  # (B, N, C)
        image_side: ImageSide | None = None,  # :meth:`image_side` of this image (and PE), reused
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (tokens (B, N, C), image tokens (B, h*w, C))."""
        keys = rearrange(image_embedding, "b c h w -> b (h w) c")
        key_pe = rearrange(image_pe, "b c h w -> b (h w) c")
        queries = point_embedding
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, point_embedding, key_pe, image_side if i == 0 else None)
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys
