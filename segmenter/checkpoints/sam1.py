"""SAM 1 checkpoints: Meta's ``sam_vit_*.pth`` (a bare state dict) and transformers' ``SamModel`` layout.

:func:`sam1_layout` recognises both; :func:`sam1_to_official` renames transformers' keys to the
official ``segment_anything`` ones; :func:`infer_sam1_config_name` picks ViT-B/L/H from the shapes;
:func:`fit_to_image_size` adapts the two size-dependent tensors (absolute position grid, global
blocks' relative-position tables) when a model is built at another ``image_size`` than the
checkpoint's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from segmenter.config import SAM1Config, list_model_configs, load_model_config
from segmenter.modeling.sam1.image_encoder import resize_abs_pos, resize_rel_pos

__all__ = ["sam1_layout", "sam1_to_official", "infer_sam1_config_name", "saved_image_size", "fit_to_image_size"]

# keys only a ViT encoder has (SAM 2's Hiera lives under image_encoder.trunk / vision_encoder.backbone)
_OFFICIAL_VIT = ("image_encoder.blocks.", "image_encoder.patch_embed.")
_HF_VIT = ("vision_encoder.layers.", "vision_encoder.patch_embed.")
# constants of the reference model that some exports carry; the model recomputes them
_CONSTANTS = ("pixel_mean", "pixel_std")

_WB = r"(weight|bias)"
_LAYER = r"vision_encoder\.layers\.(\d+)"
_MD_ATTN = (
    r"(layers\.\d+\.(?:self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
    r"|final_attn_token_to_image)"
)
# transformers name (full match) -> official name
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r)
    for p, r in [
        (r"vision_encoder\.pos_embed", r"image_encoder.pos_embed"),
        (rf"vision_encoder\.patch_embed\.projection\.{_WB}", r"image_encoder.patch_embed.proj.\1"),
        (rf"{_LAYER}\.layer_norm([12])\.{_WB}", r"image_encoder.blocks.\1.norm\2.\3"),
        (rf"{_LAYER}\.attn\.(qkv|proj)\.{_WB}", r"image_encoder.blocks.\1.attn.\2.\3"),
        (rf"{_LAYER}\.attn\.(rel_pos_h|rel_pos_w)", r"image_encoder.blocks.\1.attn.\2"),
        (rf"{_LAYER}\.mlp\.(lin1|lin2)\.{_WB}", r"image_encoder.blocks.\1.mlp.\2.\3"),
        (r"vision_encoder\.neck\.conv1\.weight", r"image_encoder.neck.0.weight"),
        (rf"vision_encoder\.neck\.layer_norm1\.{_WB}", r"image_encoder.neck.1.\1"),
        (r"vision_encoder\.neck\.conv2\.weight", r"image_encoder.neck.2.weight"),
        (rf"vision_encoder\.neck\.layer_norm2\.{_WB}", r"image_encoder.neck.3.\1"),
        # prompt encoder (mask_downscaling: conv, norm, act, conv, norm, act, conv)
        (
            r"(?:shared_image_embedding|prompt_encoder\.shared_embedding)\.positional_embedding",
            r"prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        ),
        (r"prompt_encoder\.point_embed\.(\d+)\.weight", r"prompt_encoder.point_embeddings.\1.weight"),
        (r"prompt_encoder\.(no_mask_embed|not_a_point_embed)\.weight", r"prompt_encoder.\1.weight"),
        (rf"prompt_encoder\.mask_embed\.conv1\.{_WB}", r"prompt_encoder.mask_downscaling.0.\1"),
        (rf"prompt_encoder\.mask_embed\.layer_norm1\.{_WB}", r"prompt_encoder.mask_downscaling.1.\1"),
        (rf"prompt_encoder\.mask_embed\.conv2\.{_WB}", r"prompt_encoder.mask_downscaling.3.\1"),
        (rf"prompt_encoder\.mask_embed\.layer_norm2\.{_WB}", r"prompt_encoder.mask_downscaling.4.\1"),
        (rf"prompt_encoder\.mask_embed\.conv3\.{_WB}", r"prompt_encoder.mask_downscaling.6.\1"),
        # mask decoder (output_upscaling: conv-transpose, norm, act, conv-transpose, act)
        (r"mask_decoder\.(iou_token|mask_tokens)\.weight", r"mask_decoder.\1.weight"),
        (
            rf"mask_decoder\.transformer\.{_MD_ATTN}\.([qkv]_proj|out_proj)\.{_WB}",
            r"mask_decoder.transformer.\1.\2.\3",
        ),
        (
            rf"mask_decoder\.transformer\.layers\.(\d+)\.layer_norm([1-4])\.{_WB}",
            r"mask_decoder.transformer.layers.\1.norm\2.\3",
        ),
        (
            rf"mask_decoder\.transformer\.layers\.(\d+)\.mlp\.(lin1|lin2)\.{_WB}",
            r"mask_decoder.transformer.layers.\1.mlp.\2.\3",
        ),
        (
            rf"mask_decoder\.transformer\.layer_norm_final_attn\.{_WB}",
            r"mask_decoder.transformer.norm_final_attn.\1",
        ),
        (rf"mask_decoder\.upscale_conv1\.{_WB}", r"mask_decoder.output_upscaling.0.\1"),
        (rf"mask_decoder\.upscale_layer_norm\.{_WB}", r"mask_decoder.output_upscaling.1.\1"),
        (rf"mask_decoder\.upscale_conv2\.{_WB}", r"mask_decoder.output_upscaling.3.\1"),
    ]
]
# MLPs: transformers' proj_in / layers.i / proj_out are the official layers.0 / layers.{i+1} / layers.{n-1}
_MLP = re.compile(
    r"(?P<head>mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))"
    r"\.(?P<part>proj_in|proj_out|layers\.(?P<hidden>\d+))\.(?P<leaf>weight|bias)"
)


def sam1_layout(sd: Mapping[str, object]) -> str | None:
    """``"official"`` (segment_anything keys), ``"transformers"`` (``SamModel``) or None (not SAM 1)."""
    official = any(k.startswith(_OFFICIAL_VIT) or k == "image_encoder.pos_embed" for k in sd)
    transformers = any(k.startswith(_HF_VIT) or k == "vision_encoder.pos_embed" for k in sd)
    if official and transformers:
        raise ValueError("the state dict mixes segment_anything's key names and transformers' SamModel names")
    return "official" if official else "transformers" if transformers else None


def sam1_to_official(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A SAM 1 state dict in either layout under the official ``segment_anything`` key names."""
    layout = sam1_layout(sd)
    if layout is None:
        raise ValueError("not a SAM 1 state dict (no ViT image-encoder keys)")
    if layout == "official":
        return {k: v for k, v in sd.items() if k not in _CONSTANTS}
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    mlp_parts: dict[str, list[tuple[str, str, torch.Tensor]]] = {}
    for name, value in sd.items():
        if name in _CONSTANTS:
            continue
        official = next((p.sub(r, name) for p, r in _RULES if p.fullmatch(name)), None)
        if official is not None:
            if official in out and not torch.equal(out[official], value):
                raise ValueError(f"{name} disagrees with another copy of {official}; cannot convert")
            out[official] = value
            continue
        m = _MLP.fullmatch(name)
        if m is None:
            unknown.append(name)
            continue
        mlp_parts.setdefault(m["head"], []).append((m["part"], m["leaf"], value))
    if unknown:
        shown = ", ".join(unknown[:10]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 10 else "")
        raise ValueError(f"transformers SamModel checkpoint has keys with no official SAM 1 counterpart: {shown}")
    for head, parts in mlp_parts.items():
        hidden = sum(1 for part, leaf, _ in parts if part.startswith("layers.") and leaf == "weight")
        for part, leaf, value in parts:
            index = 0 if part == "proj_in" else hidden + 1 if part == "proj_out" else int(part.split(".")[1]) + 1
            out[f"{head}.layers.{index}.{leaf}"] = value
    return out


def infer_sam1_config_name(sd: Mapping[str, torch.Tensor]) -> str:
    """``sam_vit_b`` / ``sam_vit_l`` / ``sam_vit_h`` from the encoder width, depth and head width."""
    sd = sam1_to_official(sd)
    patch = sd.get("image_encoder.patch_embed.proj.weight")
    rel = sd.get("image_encoder.blocks.0.attn.rel_pos_h")
    if patch is None or rel is None:
        raise ValueError("cannot infer the SAM 1 config: no patch embedding / relative-position table")
    depth = len({int(m[1]) for k in sd if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
    found = (int(patch.shape[0]), depth, int(patch.shape[0]) // int(rel.shape[1]))
    for name in list_model_configs():
        cfg = load_model_config(name)
        if isinstance(cfg, SAM1Config) and (cfg.vit.embed_dim, cfg.vit.depth, cfg.vit.num_heads) == found:
            return name
    raise ValueError(
        f"no known SAM 1 config matches this state dict (embed dim {found[0]}, {found[1]} blocks, "
        f"{found[2]} heads); known configs: {', '.join(list_model_configs())}"
    )


def saved_image_size(sd: Mapping[str, torch.Tensor], patch_size: int) -> int | None:
    """The input size an official SAM 1 state dict was saved for: its (1, g, g, C) position grid
    times the patch size (None without a grid)."""
    pos = sd.get("image_encoder.pos_embed")
    if pos is None or pos.ndim != 4:
        return None
    return int(pos.shape[1]) * patch_size


def fit_to_image_size(
    sd: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]
) -> dict[str, torch.Tensor]:
    """Resize the position grid (bicubic) and relative-position tables (linear, as ``get_rel_pos``)
    of a checkpoint saved at another input size to the ``expected`` shapes; other tensors untouched."""
    out = dict(sd)
    for key, value in sd.items():
        want = expected.get(key)
        if want is None or tuple(value.shape) == tuple(want):
            continue
        square_grid = value.ndim == 4 and value.shape[-1] == want[-1] and want[1] == want[2]
        if key == "image_encoder.pos_embed" and square_grid:
            out[key] = resize_abs_pos(value, want[1])
        elif re.fullmatch(r"image_encoder\.blocks\.\d+\.attn\.rel_pos_[hw]", key) and value.shape[1:] == want[1:]:
            out[key] = resize_rel_pos(value, want[0]).contiguous()
    return out
