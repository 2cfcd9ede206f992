"""SAM 2 memory attention: conditions the current frame's features on the memory bank.

Four pre-norm transformer layers, each self-attention (RoPE), cross-attention to the memory
(RoPE on the spatial memory tokens, repeated per memory frame; object-pointer tokens at the end
of the memory are not rotated) and a ReLU MLP. Inputs and output are sequence-first (N, B, C)
like the reference, so that the tracking loop can be compared 1:1; B is the number of objects
processed together in one call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from segmenter.config import MemoryConfig
from segmenter.modeling.blocked_attention import blocked_mlp, cpu_linear, fast_gemm_enabled, folded_memory_attention
from segmenter.modeling.rope import AxialRoPE, grid_from_length

__all__ = ["RoPEAttention", "MemoryAttentionLayer", "MemoryAttention"]


def _blocked_cpu_inference(x: torch.Tensor, dropout: bool) -> bool:
    """Where the blocked kernels run: CPU, no autograd (they work in place), no dropout and no
    autocast (they compute in float32 by design)."""
    return (
        x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not dropout
        and not torch.is_autocast_enabled("cpu")
    )


class RoPEAttention(nn.Module):
    """Multi-head attention with axial RoPE on queries and keys (batch-first tensors).

    Queries are the tokens of one (H, W) grid. Keys are that grid too (self-attention) or, with
    ``rope_k_repeat``, several copies of it (one per memory frame) followed by
    ``num_k_exclude_rope`` tokens that are not rotated (object pointers).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int = 1,
        kv_in_dim: int | None = None,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        dropout: float = 0.0,
        rope: AxialRoPE | None = None,
    ) -> None:
        super().__init__()
        if embedding_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide embedding_dim={embedding_dim}")
        kv_in_dim = embedding_dim if kv_in_dim is None else kv_in_dim
        self.num_heads = num_heads
        self.rope_k_repeat = rope_k_repeat
        self.dropout_p = dropout
        self.q_proj = nn.Linear(embedding_dim, embedding_dim)
        self.k_proj = nn.Linear(kv_in_dim, embedding_dim)
        self.v_proj = nn.Linear(kv_in_dim, embedding_dim)
        self.out_proj = nn.Linear(embedding_dim, embedding_dim)
        # no parameters: may be shared between layers so that tables are built once per shape
        self.rope = rope if rope is not None else AxialRoPE(embedding_dim // num_heads, rope_theta)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, h, N, C/h)
        return rearrange(x, "b n (h d) -> b h n d", h=self.num_heads)

    def forward(
        self,
        q: torch.Tensor,  # (B or 1, Nq, C), Nq = H * W
        k: torch.Tensor,  # (B, Nk, Ckv)
        v: torch.Tensor,  # (B, Nk, Ckv)
        num_k_exclude_rope: int = 0,
        feat_size: tuple[int, int] | None = None,  # (H, W); default: square grid of Nq tokens
        blocked: bool = False,
    ) -> torch.Tensor:  # (B, Nq, C)
        """Attention output. ``blocked`` uses the cache-blocked CPU kernel where it applies
        (inference on the CPU, keys/values narrower than a head): same result to fp32 rounding."""
        num_q, num_k_rope = q.shape[-2], k.shape[-2] - num_k_exclude_rope
        if num_k_rope < 0:
            raise ValueError(f"num_k_exclude_rope={num_k_exclude_rope} exceeds {k.shape[-2]} keys")
        if num_k_rope != num_q and not self.rope_k_repeat:
            raise ValueError(f"{num_k_rope} rotated keys for {num_q} queries need rope_k_repeat=True")
        grid = feat_size if feat_size is not None else grid_from_length(num_q)
        if grid[0] * grid[1] != num_q:
            raise ValueError(f"{num_q} query tokens do not match the {grid} grid")
        if blocked and self._can_fold(q, k):
            return self._forward_folded(q, k, v, num_k_rope, grid)

        dtype = q.dtype  # memories may arrive in another dtype (e.g. bf16 with an fp32 model)
        q = self.rope(self._split_heads(self.q_proj(q)), grid)
        k = self._split_heads(self.k_proj(k.to(dtype)))
        v = self._split_heads(self.v_proj(v.to(dtype)))
        if num_k_exclude_rope == 0:
            k = self.rope(k, grid)
        elif num_k_rope > 0:  # pointer tokens at the end keep their values
            k[..., :num_k_rope, :] = self.rope(k[..., :num_k_rope, :], grid)
        if q.shape[0] != k.shape[0]:  # queries shared by all objects
            q = q.expand(k.shape[0], -1, -1, -1)

        dropout_p = self.dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, h, Nq, C/h)
        return self.out_proj(rearrange(out, "b h n d -> b n (h d)"))

    def self_attention_cpu(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:  # (B, N, C)
        """Self-attention of ``x`` (B, N, C) for CPU inference (see :func:`blocked_attention.cpu_linear`):
        the q/k/v projections as one product, then SDPA; equal to ``forward(x, x, x)`` to fp32 rounding."""
        weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        bias = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        q, k, v = (self._split_heads(t) for t in cpu_linear(x, weight, bias).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(self.rope(q, grid), self.rope(k, grid), v)  # (B, h, N, C/h)
        return cpu_linear(rearrange(out, "b h n d -> b n (h d)"), self.out_proj.weight, self.out_proj.bias)

    def _can_fold(self, q: torch.Tensor, k: torch.Tensor) -> bool:
        head_dim = self.q_proj.out_features // self.num_heads
        return (
            _blocked_cpu_inference(q, self.training and self.dropout_p > 0)
            and k.shape[-2] > 0
            and k.shape[-1] < head_dim  # the value fold only pays when values are narrower
            and (self.rope_k_repeat or k.shape[-2] == q.shape[-2])
        )

    def _forward_folded(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_rope: int, grid: tuple[int, int]
    ) -> torch.Tensor:  # (B, Nq, C)
        q = self.rope(self._split_heads(cpu_linear(q, self.q_proj.weight, self.q_proj.bias)), grid)  # (Bq, h, Nq, d)
        table = self.rope.table(grid[0], grid[1], q.device)
        weighted = folded_memory_attention(
            q, k, v, self.k_proj.weight, self.k_proj.bias, table, num_k_rope
        )  # (B, h, Nq, Ckv)
        # out_proj(v_proj(x)) for each head's weighted raw values, as one (C, h*Ckv) matrix
        w_v = self.v_proj.weight.unflatten(0, (self.num_heads, -1))  # (h, d, Ckv)
        w_o = self.out_proj.weight.unflatten(1, (self.num_heads, -1))  # (C, h, d)
        weight = torch.einsum("chd,hdk->chk", w_o, w_v).flatten(1)
        bias = self.out_proj.bias + self.out_proj.weight @ self.v_proj.bias
        return cpu_linear(rearrange(weighted, "b h n k -> b n (h k)"), weight, bias)


class MemoryAttentionLayer(nn.Module):
    """Pre-norm layer: RoPE self-attention, RoPE cross-attention to memory, ReLU MLP.

    No position encoding on the queries; the memory position encoding is added to the keys by
    the caller (``memory_k = memory + memory_pos``). A batch-1 ``x`` with a batch-B memory runs
    the self-attention once and broadcasts its result to the B objects.
    """

    def __init__(
        self,
        d_model: int = 256,
        kv_dim: int = 64,
        dim_feedforward: int = 2048,
        num_heads: int = 1,
        dropout: float = 0.1,
        rope: AxialRoPE | None = None,
    ) -> None:
        super().__init__()
        rope = rope if rope is not None else AxialRoPE(d_model // num_heads)
        self.self_attn = RoPEAttention(d_model, num_heads, dropout=dropout, rope=rope)
        self.cross_attn_image = RoPEAttention(
            d_model, num_heads, kv_in_dim=kv_dim, rope_k_repeat=True, dropout=dropout, rope=rope
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout_p = dropout

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.dropout_p, self.training) if self.dropout_p > 0 else x

    def forward(
        self,
        x: torch.Tensor,  # (B or 1, HW, C)
        memory_k: torch.Tensor,  # (B, M, Ckv) memory + its position encoding
        memory_v: torch.Tensor,  # (B, M, Ckv)
        num_k_exclude_rope: int = 0,
        feat_size: tuple[int, int] | None = None,
        blocked: bool = False,
    ) -> torch.Tensor:  # (B, HW, C)
        fast = blocked and _blocked_cpu_inference(x, self.training and self.dropout_p > 0)
        h = self.norm1(x)
        if fast and fast_gemm_enabled(x):
            grid = feat_size if feat_size is not None else grid_from_length(x.shape[1])
            x = x + self.self_attn.self_attention_cpu(h, grid)
        else:
            x = x + self._drop(self.self_attn(h, h, h, feat_size=feat_size))
        # a frame shared by all objects fans out in the cross-attention (queries computed once)
        h = self.norm2(x)
        x = x + self._drop(self.cross_attn_image(h, memory_k, memory_v, num_k_exclude_rope, feat_size, blocked))
        h = self.norm3(x)
        if fast:
            return x + blocked_mlp(h, self.linear1, self.linear2)
        return x + self._drop(self.linear2(self._drop(F.relu(self.linear1(h)))))


class MemoryAttention(nn.Module):
    """Stack of ``MemoryAttentionLayer`` + final LayerNorm (keys ``layers.{i}``, ``norm``).

    All layers share one RoPE table cache, so the tables are computed once per grid shape.
    ``blocked`` (default on) runs inference on the CPU with the cache-blocked kernels of
    ``segmenter.modeling.blocked_attention`` (~1.4x faster, equal to fp32 rounding); set it to
    False (or pass ``blocked=False`` to a call) for the reference's exact order of operations
    (bit-identical results).
    """

    def __init__(
        self,
        d_model: int = 256,
        kv_dim: int = 64,
        num_layers: int = 4,
        dim_feedforward: int = 2048,
        num_heads: int = 1,
        rope_theta: float = 10000.0,
        dropout: float = 0.1,
        pos_enc_at_input: bool = True,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.pos_enc_at_input = pos_enc_at_input
        rope = AxialRoPE(d_model // num_heads, rope_theta)
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(d_model, kv_dim, dim_feedforward, num_heads, dropout, rope)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.blocked = True

    @classmethod
    def from_config(cls, cfg: MemoryConfig, d_model: int = 256) -> MemoryAttention:
        return cls(
            d_model=d_model,
            kv_dim=cfg.mem_dim,
            num_layers=cfg.num_layers,
            dim_feedforward=cfg.dim_feedforward,
            rope_theta=cfg.rope_theta,
        )

    def forward(
        self,
        curr: torch.Tensor,  # (HW, B or 1, C) current frame features
        curr_pos: torch.Tensor | None,  # (HW, B or 1, C)
        memory: torch.Tensor,  # (M, B, Ckv): frames * HW spatial tokens, then pointer tokens
        memory_pos: torch.Tensor | None,  # (M, B, Ckv)
        num_obj_ptr_tokens: int = 0,
        *,
        feat_size: tuple[int, int] | None = None,  # (H, W); default: square grid of HW tokens
        blocked: bool | None = None,  # None: self.blocked
    ) -> torch.Tensor:  # (HW, B, C)
        """Memory-conditioned features. A batch-1 ``curr`` is shared by all B objects."""
        blocked = self.blocked if blocked is None else blocked
        batch = memory.shape[1]
        if curr.shape[1] not in (1, batch):
            raise ValueError(f"curr has batch {curr.shape[1]}, memory has batch {batch}")
        x = curr
        if self.pos_enc_at_input and curr_pos is not None:
            x = x + 0.1 * curr_pos
        # batch-first and contiguous once, not again in every layer's projections
        x = x.transpose(0, 1).contiguous()  # (B, HW, C)
        memory_v = memory.transpose(0, 1).to(x.dtype).contiguous()
        memory_k = memory_v  # (B, M, Ckv)
        if memory_pos is not None:
            memory_k = memory_v + memory_pos.transpose(0, 1).to(x.dtype)
        for layer in self.layers:
            x = layer(x, memory_k, memory_v, num_obj_ptr_tokens, feat_size, blocked)
        if x.shape[0] != batch:  # no layers
            x = x.expand(batch, -1, -1)
        return self.norm(x).transpose(0, 1)
