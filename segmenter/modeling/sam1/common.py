"""The two-layer MLP of SAM 1's ViT blocks and two-way transformer (state-dict keys ``lin1``/``lin2``)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLPBlock"]


class MLPBlock(nn.Module):
    """``lin2(act(lin1(x)))``; SAM 2's :class:`~segmenter.modeling.common.MLP` calls them ``layers.{0,1}``."""

    def __init__(self, embedding_dim: int, mlp_dim: int, activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))
