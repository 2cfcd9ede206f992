"""Helpers for parity tests: build Meta's reference SAM 2 on random weights.

The reference (``sam2==1.1.0``) must be installed (``tests/install_references.sh``); a missing
reference is an import error, never a skip.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

# our config name -> the reference's hydra config name
REFERENCE_CONFIGS = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_base_plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_large": "configs/sam2/sam2_hiera_l.yaml",
}


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0, scale: float = 0.05) -> nn.Module:
    """Perturb every floating parameter and buffer (zero-initialised ones too), in place.

    Norm weights stay near 1 and layer-scale ``gamma`` gets a visible value, so that no branch
    is numerically silent and every weight influences the outputs.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if not t.is_floating_point():
            continue
        noise = torch.randn(t.shape, generator=gen, dtype=torch.float32).to(t.dtype)
        leaf = name.rsplit(".", 1)[-1]
        is_norm = ("norm" in name or "layer_norm" in name) and leaf == "weight"
        if is_norm:
            t.copy_(1.0 + 0.1 * noise)
        elif leaf == "gamma":
            t.copy_(0.5 + 0.1 * noise)
        else:
            t.add_(scale * noise)
    return module


@functools.lru_cache(maxsize=8)
def reference_sam2(config: str, image_size: int = 1024, seed: int = 0) -> nn.Module:
    """The official ``SAM2Base`` with randomised weights (as ``build_sam2`` with postprocessing)."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    overrides = [] if image_size == 1024 else [f"++model.image_size={image_size}"]
    model = build_sam2(REFERENCE_CONFIGS[config], None, device="cpu", hydra_overrides_extra=overrides)
    randomize_(model, seed=seed)
    return model.eval()
