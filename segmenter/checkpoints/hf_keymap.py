"""State-dict key map from transformers' ``Sam2Model`` / ``Sam2VideoModel`` to Meta's official names.

transformers renames almost every module of SAM 2 (``vision_encoder.backbone`` for
``image_encoder.trunk``, ``o_proj`` for ``out_proj``, ``proj_in``/``layers.i``/``proj_out`` for an
MLP's ``layers.0..n-1``, ...), merges the four point embeddings into one ``(4, C)`` table and keeps
two copies of the random-Fourier positional matrix. :func:`hf_to_official` undoes all of it.

Every transformers key is matched by exactly one rule below or listed as a duplicate / derived
buffer; anything else is an error, so a future rename cannot be silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

__all__ = ["hf_to_official", "detect_layout", "is_hf_layout", "is_official_layout"]

_OFFICIAL_ROOTS = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.")
_HF_ROOTS = ("vision_encoder.", "prompt_encoder.", "mask_decoder.", "shared_image_embedding.")

# Placeholder for the last layer of an MLP; its index depends on how many hidden layers it has.
_LAST = "__last__"

# transformers name (full match) -> official name; the first matching rule wins.
_WB = r"(weight|bias)"
_MD_ATTN = (
    r"(layers\.\d+\.(?:self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
    r"|final_attn_token_to_image)"
)
_MA_LAYER = r"memory_attention\.layers\.(\d+)"
_FUSER = r"memory_encoder\.memory_fuser\.layers\.(\d+)"
_RULES: list[tuple[str, str]] = [
    # -- parameters of SAM2Base itself
    (r"no_memory_embedding", r"no_mem_embed"),
    (r"no_memory_positional_encoding", r"no_mem_pos_enc"),
    (r"memory_temporal_positional_encoding", r"maskmem_tpos_enc"),
    (r"no_object_pointer", r"no_obj_ptr"),
    (r"occlusion_spatial_embedding_parameter", r"no_obj_embed_spatial"),
    (
        r"shared_image_embedding\.positional_embedding",
        r"sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    ),
    (rf"mask_downsample\.{_WB}", r"mask_downsample.\1"),
    (rf"temporal_positional_encoding_projection_layer\.{_WB}", r"obj_ptr_tpos_proj.\1"),
    # -- Hiera trunk
    (r"vision_encoder\.backbone\.(pos_embed|pos_embed_window)", r"image_encoder.trunk.\1"),
    (
        rf"vision_encoder\.backbone\.patch_embed\.projection\.{_WB}",
        r"image_encoder.trunk.patch_embed.proj.\1",
    ),
    (
        rf"vision_encoder\.backbone\.blocks\.(\d+)\.layer_norm([12])\.{_WB}",
        r"image_encoder.trunk.blocks.\1.norm\2.\3",
    ),
    (
        rf"vision_encoder\.backbone\.blocks\.(\d+)\.(attn\.qkv|attn\.proj|proj)\.{_WB}",
        r"image_encoder.trunk.blocks.\1.\2.\3",
    ),
    # -- FPN neck
    (rf"vision_encoder\.neck\.convs\.(\d+)\.{_WB}", r"image_encoder.neck.convs.\1.conv.\2"),
    # -- prompt encoder (mask_downscaling is a Sequential: conv, norm, act, conv, norm, act, conv)
    (rf"prompt_encoder\.mask_embed\.conv1\.{_WB}", r"sam_prompt_encoder.mask_downscaling.0.\1"),
    (rf"prompt_encoder\.mask_embed\.layer_norm1\.{_WB}", r"sam_prompt_encoder.mask_downscaling.1.\1"),
    (rf"prompt_encoder\.mask_embed\.conv2\.{_WB}", r"sam_prompt_encoder.mask_downscaling.3.\1"),
    (rf"prompt_encoder\.mask_embed\.layer_norm2\.{_WB}", r"sam_prompt_encoder.mask_downscaling.4.\1"),
    (rf"prompt_encoder\.mask_embed\.conv3\.{_WB}", r"sam_prompt_encoder.mask_downscaling.6.\1"),
    (r"prompt_encoder\.(no_mask_embed|not_a_point_embed)\.weight", r"sam_prompt_encoder.\1.weight"),
    # -- mask decoder (output_upscaling: conv-transpose, norm, act, conv-transpose, act)
    (r"mask_decoder\.(iou_token|mask_tokens|obj_score_token)\.weight", r"sam_mask_decoder.\1.weight"),
    (rf"mask_decoder\.(conv_s0|conv_s1)\.{_WB}", r"sam_mask_decoder.\1.\2"),
    (rf"mask_decoder\.upscale_conv1\.{_WB}", r"sam_mask_decoder.output_upscaling.0.\1"),
    (rf"mask_decoder\.upscale_layer_norm\.{_WB}", r"sam_mask_decoder.output_upscaling.1.\1"),
    (rf"mask_decoder\.upscale_conv2\.{_WB}", r"sam_mask_decoder.output_upscaling.3.\1"),
    (
        rf"mask_decoder\.transformer\.{_MD_ATTN}\.([qkv])_proj\.{_WB}",
        r"sam_mask_decoder.transformer.\1.\2_proj.\3",
    ),
    (
        rf"mask_decoder\.transformer\.{_MD_ATTN}\.o_proj\.{_WB}",
        r"sam_mask_decoder.transformer.\1.out_proj.\2",
    ),
    (
        rf"mask_decoder\.transformer\.layers\.(\d+)\.layer_norm([1-4])\.{_WB}",
        r"sam_mask_decoder.transformer.layers.\1.norm\2.\3",
    ),
    (
        rf"mask_decoder\.transformer\.layer_norm_final_attn\.{_WB}",
        r"sam_mask_decoder.transformer.norm_final_attn.\1",
    ),
    # -- memory attention
    (
        rf"{_MA_LAYER}\.(self_attn|cross_attn_image)\.([qkv])_proj\.{_WB}",
        r"memory_attention.layers.\1.\2.\3_proj.\4",
    ),
    (
        rf"{_MA_LAYER}\.(self_attn|cross_attn_image)\.o_proj\.{_WB}",
        r"memory_attention.layers.\1.\2.out_proj.\3",
    ),
    (rf"{_MA_LAYER}\.(linear[12])\.{_WB}", r"memory_attention.layers.\1.\2.\3"),
    (rf"{_MA_LAYER}\.layer_norm([123])\.{_WB}", r"memory_attention.layers.\1.norm\2.\3"),
    (rf"memory_attention\.layer_norm\.{_WB}", r"memory_attention.norm.\1"),
    # -- memory encoder (its mask_downsampler is handled by _DOWNSAMPLER below)
    (rf"memory_encoder\.feature_projection\.{_WB}", r"memory_encoder.pix_feat_proj.\1"),
    (rf"memory_encoder\.projection\.{_WB}", r"memory_encoder.out_proj.\1"),
    (rf"{_FUSER}\.scale", r"memory_encoder.fuser.layers.\1.gamma"),
    (rf"{_FUSER}\.depthwise_conv\.{_WB}", r"memory_encoder.fuser.layers.\1.dwconv.\2"),
    (rf"{_FUSER}\.layer_norm\.{_WB}", r"memory_encoder.fuser.layers.\1.norm.\2"),
    (rf"{_FUSER}\.pointwise_conv([12])\.{_WB}", r"memory_encoder.fuser.layers.\1.pwconv\2.\3"),
]

# MLPs: transformers' ``proj_in`` / ``layers.i`` / ``proj_out`` are the official ``layers.0`` /
# ``layers.{i+1}`` / ``layers.{n-1}``. (transformers prefix, official prefix)
_MLPS: list[tuple[str, str]] = [
    (r"vision_encoder\.backbone\.blocks\.(\d+)\.mlp", r"image_encoder.trunk.blocks.\1.mlp"),
    (r"mask_decoder\.transformer\.layers\.(\d+)\.mlp", r"sam_mask_decoder.transformer.layers.\1.mlp"),
    (r"mask_decoder\.output_hypernetworks_mlps\.(\d+)", r"sam_mask_decoder.output_hypernetworks_mlps.\1"),
    (r"mask_decoder\.(iou_prediction_head|pred_obj_score_head)", r"sam_mask_decoder.\1"),
    (r"object_pointer_proj", r"obj_ptr_proj"),
]

# The prompt encoder's copy of the Fourier matrix duplicates ``shared_image_embedding``.
_DUPLICATE_PE = "prompt_encoder.shared_embedding.positional_embedding"
_IMAGE_PE = "shared_image_embedding.positional_embedding"
_POINT_EMBED = "prompt_encoder.point_embed.weight"
# Buffers computed from the config (never trained); transformers does not save them, but tolerate them.
_DERIVED = re.compile(r"memory_attention\.(position_ids|rotary_emb\..*)")

_COMPILED_RULES = [(re.compile(p), r) for p, r in _RULES]
_MLP_PART = r"\.(?P<part>proj_in|proj_out|layers\.(?P<hidden>\d+))\.(?P<leaf>weight|bias)"
_COMPILED_MLPS = [(re.compile(p + _MLP_PART), r) for p, r in _MLPS]
_DOWNSAMPLER = re.compile(
    r"memory_encoder\.mask_downsampler\."
    r"(?:layers\.(?P<layer>\d+)\.(?P<kind>conv|layer_norm)|final_conv)\.(?P<leaf>weight|bias)"
)
_DOWNSAMPLER_HEAD = "memory_encoder.mask_downsampler.encoder"


def is_official_layout(sd: Mapping[str, object]) -> bool:
    return any(k.startswith(_OFFICIAL_ROOTS) for k in sd)


def is_hf_layout(sd: Mapping[str, object]) -> bool:
    return any(k.startswith(_HF_ROOTS) for k in sd)


def detect_layout(sd: Mapping[str, object]) -> str:
    """``"official"`` (Meta's names) or ``"transformers"``; ValueError when neither or both."""
    official, hf = is_official_layout(sd), is_hf_layout(sd)
    if official and hf:
        raise ValueError("the state dict mixes Meta's key names and transformers' key names")
    if official:
        return "official"
    if hf:
        return "transformers"
    sample = ", ".join(sorted(sd)[:5]) or "<no keys>"
    raise ValueError(
        f"the state dict is not a SAM 2 checkpoint (no image encoder / decoder keys; keys: {sample})"
    )


def _rename(name: str) -> str | None:
    """Official name of one transformers key; the last layer of a stack gets the ``__last__`` index."""
    for pattern, repl in _COMPILED_RULES:
        if pattern.fullmatch(name):
            return pattern.sub(repl, name)
    for pattern, repl in _COMPILED_MLPS:
        m = pattern.fullmatch(name)
        if m:
            part, hidden = m["part"], m["hidden"]
            index = "0" if part == "proj_in" else _LAST if part == "proj_out" else str(int(hidden) + 1)
            return f"{m.expand(repl)}.layers.{index}.{m['leaf']}"
    m = _DOWNSAMPLER.fullmatch(name)
    if m:
        if m["layer"] is None:
            return f"{_DOWNSAMPLER_HEAD}.{_LAST}.{m['leaf']}"
        # each down-sampling step is (conv, LayerNorm2d, GELU) in the official Sequential
        index = 3 * int(m["layer"]) + (0 if m["kind"] == "conv" else 1)
        return f"{_DOWNSAMPLER_HEAD}.{index}.{m['leaf']}"
    return None


def _resolve_last(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Give every MLP's output layer and the down-sampler's final conv their official index."""
    marker = f".{_LAST}."
    highest: dict[str, int] = {}  # stack prefix ("....layers" / "....encoder") -> highest index seen
    for key in out:
        if marker in key:
            continue
        m = re.fullmatch(r"(.*\.(?:layers|encoder))\.(\d+)\.(?:weight|bias)", key)
        if m:
            highest[m[1]] = max(highest.get(m[1], -1), int(m[2]))
    resolved: dict[str, torch.Tensor] = {}
    for key, value in out.items():
        if marker in key:
            head, leaf = key.split(marker)
            top = highest.get(head, -1)
            # MLP: right after the last hidden layer; down-sampler: after the last (conv, norm, act)
            index = top + 2 if head == _DOWNSAMPLER_HEAD else top + 1
            key = f"{head}.{index}.{leaf}"
        resolved[key] = value
    return resolved


def hf_to_official(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers ``Sam2Model`` / ``Sam2VideoModel`` state dict to Meta's key names.

    Raises ValueError for keys that have no official counterpart (listing them), and when the two
    copies of the positional matrix disagree (the official model has only one).
    """
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for name, value in sd.items():
        if name in (_DUPLICATE_PE, _POINT_EMBED) or _DERIVED.fullmatch(name):
            continue
        official = _rename(name)
        if official is None:
            unknown.append(name)
        else:
            out[official] = value
    if unknown:
        shown = ", ".join(unknown[:10]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 10 else "")
        raise ValueError(f"transformers checkpoint has keys with no official SAM 2 counterpart: {shown}")

    if _POINT_EMBED in sd:
        table = sd[_POINT_EMBED]  # (4, C): negative, positive, box corner 1, box corner 2
        for i in range(table.shape[0]):
            out[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = table[i : i + 1].clone()

    pe_key = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
    if _DUPLICATE_PE in sd:
        duplicate = sd[_DUPLICATE_PE]
        if pe_key not in out:
            out[pe_key] = duplicate
        elif out[pe_key].shape != duplicate.shape or not torch.equal(out[pe_key], duplicate):
            raise ValueError(
                f"{_IMAGE_PE} and {_DUPLICATE_PE} differ; the official model has a single "
                "positional matrix for both, so this checkpoint cannot be converted"
            )
    return _resolve_last(out)
