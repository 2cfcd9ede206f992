"""Helpers for parity tests: build Meta's reference SAM 2 on random weights.

The reference (``sam2==1.1.0``) must be installed (``tests/install_references.sh``); a missing
reference is an import error, never a skip.
"""

from __future__ import annotations

import functools
from functools import partial

import numpy as np
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
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


def cuda_connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sam2/csrc/connected_components.cu, run sequentially: (N, 1, H, W) uint8 -> labels, counts.

    Block-based union-find over 2x2 blocks (all foreground pixels of a block share a label), the
    same neighbour bitmask ``P`` and the same unions with the top-left, top, top-right and left
    blocks; labels are root index + 1 and counts the pixel count of each pixel's label.
    """
    n, _, h, w = mask.shape
    assert h % 2 == 0 and w % 2 == 0  # the kernel's own requirement
    labels_out = np.zeros((n, 1, h, w), np.int32)
    counts_out = np.zeros((n, 1, h, w), np.int32)
    for b in range(n):
        img = mask[b, 0].numpy().astype(bool).ravel()
        label = np.arange(h * w)

        def find(x: int) -> int:
            while label[x] != x:
                x = label[x]
            return x

        def union(a: int, c: int) -> None:
            a, c = find(a), find(c)
            if a < c:
                label[c] = a
            elif c < a:
                label[a] = c

        bit = lambda p, pos: (p >> pos) & 1  # noqa: E731
        for row in range(0, h, 2):
            for col in range(0, w, 2):
                idx = row * w + col
                p = 0
                if img[idx]:
                    p |= 0x777
                if row + 1 < h and img[idx + w]:
                    p |= 0x777 << 4
                if col + 1 < w and img[idx + 1]:
                    p |= 0x777 << 1
                if col == 0:
                    p &= 0xEEEE
                if col + 1 >= w:
                    p &= 0x3333
                elif col + 2 >= w:
                    p &= 0x7777
                if row == 0:
                    p &= 0xFFF0
                if row + 1 >= h:
                    p &= 0xFF
                if p:
                    if bit(p, 0) and img[idx - w - 1]:
                        union(idx, idx - 2 * w - 2)
                    if (bit(p, 1) and img[idx - w]) or (bit(p, 2) and img[idx - w + 1]):
                        union(idx, idx - 2 * w)
                    if bit(p, 3) and img[idx + 2 - w]:
                        union(idx, idx - 2 * w + 2)
                    if (bit(p, 4) and img[idx - 1]) or (bit(p, 8) and img[idx + w - 1]):
                        union(idx, idx - 2)
        lab = np.zeros(h * w, np.int64)
        for row in range(0, h, 2):
            for col in range(0, w, 2):
                idx = row * w + col
                y = find(idx) + 1
                for q in (idx, idx + 1, idx + w, idx + w + 1):
                    lab[q] = y if img[q] else 0
        area = np.bincount(lab, minlength=h * w + 1)
        labels_out[b, 0] = lab.reshape(h, w)
        counts_out[b, 0] = np.where(lab > 0, area[lab], 0).reshape(h, w)
    return torch.from_numpy(labels_out), torch.from_numpy(counts_out)


VIT_B = dict(
    encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12, encoder_global_attn_indexes=(2, 5, 8, 11)
)
PIXEL_MEAN, PIXEL_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def reference_sam1(image_size: int, seed: int = 0, **vit) -> Sam:
    """``segment_anything.build_sam._build_sam``'s network at ``image_size``, weights perturbed."""
    vit = vit or VIT_B
    torch.manual_seed(seed)
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=vit["encoder_depth"],
            embed_dim=vit["encoder_embed_dim"],
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=vit["encoder_num_heads"],
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(vit["encoder_global_attn_indexes"]),
            window_size=14,
            out_chans=256,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256,
            image_embedding_size=(image_size // 16, image_size // 16),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
    )
    randomize_(sam, seed=seed)
    with torch.no_grad():  # constants, not weights (not in checkpoints): keep the official values
        sam.pixel_mean.copy_(torch.tensor(PIXEL_MEAN).view(-1, 1, 1))
        sam.pixel_std.copy_(torch.tensor(PIXEL_STD).view(-1, 1, 1))
    return sam.eval()
