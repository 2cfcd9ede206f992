"""Reading SAM 2 / SAM 2.1 checkpoints in every published format, as Meta's official state dict.

Formats: Meta's ``.pt`` (``{"model": state_dict}`` or a bare state dict; only ever unpickled with
``weights_only=True``), ``.safetensors`` in Meta's or transformers' key layout, and a directory
written by transformers' ``Sam2Model`` / ``Sam2VideoModel.save_pretrained`` (single or sharded
``model.safetensors``). Hugging Face Hub ids are resolved to a cached file or folder first.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from segmenter.config import SAM2Config, list_model_configs, load_model_config
from segmenter.checkpoints.hf_keymap import detect_layout, hf_to_official
from segmenter.checkpoints.hub import (
    HF_INDEX,
    HF_WEIGHTS,
    TORCH_SUFFIXES,
    CheckpointNotCachedError,
    config_name_for_hub_id,
    resolve_checkpoint,
)
from segmenter.checkpoints.sam1 import infer_sam1_config_name, sam1_layout, sam1_to_official

__all__ = [
    "read_state_dict",
    "hf_to_official",
    "infer_config_name",
    "infer_config_name_from_hf_config",
    "check_state_dict",
    "is_image_only",
    "is_image_key",
    "resolve_checkpoint",
    "config_name_for_hub_id",
    "CheckpointNotCachedError",
]

_SHOWN = 10  # how many names an error message lists per category


# ----------------------------------------------------------------------------- reading files


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file or transformers folder, under Meta's official key names."""
    path = Path(path).expanduser()
    if path.is_dir():
        raw = _read_directory(path)
    elif path.is_file():
        raw = _read_file(path)
    else:
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        if sam1_layout(raw) is not None:  # SAM 1 (segment_anything .pth or transformers SamModel)
            return sam1_to_official(raw)
        layout = detect_layout(raw)
        return raw if layout == "official" else hf_to_official(raw)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        return _read_safetensors(path)
    if path.suffix in TORCH_SUFFIXES or head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return _read_torch(path)
    raise ValueError(f"{path}: unknown checkpoint format (expected a .pt/.pth torch file or .safetensors)")


def _looks_like_safetensors(head: bytes) -> bool:
    # 8-byte little-endian header length, then the JSON header
    return len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    if not sd:
        raise ValueError(f"{path}: the safetensors file holds no tensors")
    return sd


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines()]
        reason = next((ln for ln in lines if re.search(r"GLOBAL|Unsupported", ln)), "unsupported content")
        if "GLOBAL" in reason or "global" in reason:
            raise ValueError(
                f"{path}: refused to load: the pickle references Python objects other than tensors and "
                f"plain containers, and unpickling them could execute arbitrary code ({reason}). Only "
                "weights-only checkpoints are read; re-save the tensors with torch.save(model.state_dict()) "
                "or as safetensors."
            ) from None
        raise ValueError(
            f"{path}: not a readable torch checkpoint: weights-only unpickling failed ({reason}); the file "
            "is corrupt or uses pickle features that are refused for safety"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable torch checkpoint (corrupt or truncated?): {err}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]  # Meta's release format
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{path}: expected a state dict (or {{'model': state_dict}}), found {type(obj).__name__}"
        )
    bad = [str(k) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise ValueError(f"{path}: entries that are not named tensors: {_listing(bad)}")
    if not obj:
        raise ValueError(f"{path}: the checkpoint holds no tensors")
    return dict(obj)


def _read_directory(path: Path) -> dict[str, torch.Tensor]:
    index = path / HF_INDEX
    if index.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{index}: not a valid safetensors index ({err})") from None
        sd: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            sd.update(_read_safetensors(path / shard))
        missing = sorted(set(weight_map) - set(sd))
        if missing:
            raise ValueError(
                f"{index}: tensors listed in the index are absent from the shards: {_listing(missing)}"
            )
        return sd
    if (path / HF_WEIGHTS).is_file():
        return _read_safetensors(path / HF_WEIGHTS)
    if (path / "pytorch_model.bin").is_file():
        return _read_torch(path / "pytorch_model.bin")
    candidates = sorted(p for p in path.iterdir() if p.suffix in {".pt", ".pth", ".safetensors"})
    if len(candidates) == 1:
        return _read_file(candidates[0])
    found = ", ".join(p.name for p in sorted(path.iterdir())) or "nothing"
    raise ValueError(
        f"{path}: no checkpoint in this folder (expected {HF_WEIGHTS}, {HF_INDEX} or a single .pt); "
        f"found: {found}"
    )


# ----------------------------------------------------------------------------- inspecting state dicts


def is_image_key(name: str) -> bool:
    """Whether an official key belongs to the single-image model (encoder, prompt encoder, decoder)."""
    return (
        name.startswith(("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder."))
        or name == "no_mem_embed"
    )


def is_image_only(sd: Mapping[str, Any]) -> bool:
    """True for checkpoints without the memory modules, e.g. those of transformers' ``Sam2Model``."""
    memory = (
        "memory_attention.",
        "memory_encoder.",
        "maskmem_tpos_enc",
        "memory_temporal_positional_encoding",
    )
    return not any(k.startswith(memory) for k in sd)


def _official(sd: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    return sd if detect_layout(sd) == "official" else hf_to_official(sd)


def infer_config_name(sd: Mapping[str, torch.Tensor]) -> str:
    """The config (``segmenter/configs/<name>.yaml``) whose architecture matches the state dict's shapes.

    Size from the trunk (embed dim, stage layout, background pos-embed grid); SAM 2.1 from its extra
    keys. An image-only checkpoint cannot tell 2.0 from 2.1 (same image model): 2.1 is returned.
    SAM 1 state dicts are matched to ``sam_vit_{b,l,h}``.
    """
    if sam1_layout(sd) is not None:
        return infer_sam1_config_name(sd)
    sd = _official(sd)
    patch = sd.get("image_encoder.trunk.patch_embed.proj.weight")
    pos = sd.get("image_encoder.trunk.pos_embed")
    if patch is None or pos is None:
        raise ValueError(
            "cannot infer the config: the state dict has no Hiera patch embedding / position embedding"
        )
    blocks = {int(m[1]) for k in sd if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
    # a block that changes the width carries a `proj`: it opens a new stage
    starts = sorted(
        int(m[1]) for k in sd if (m := re.fullmatch(r"image_encoder\.trunk\.blocks\.(\d+)\.proj\.weight", k))
    )
    bounds = [0, *starts, len(blocks)]
    stages = tuple(b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    found = (int(patch.shape[0]), stages, tuple(int(s) for s in pos.shape[2:]))
    if is_image_only(sd):
        version = None
    else:
        version = "2.1" if "no_obj_embed_spatial" in sd or "obj_ptr_tpos_proj.weight" in sd else "2.0"
    return _match_config(*found, version=version, what="state dict")


def _match_config(
    embed_dim: int,
    stages: tuple[int, ...],
    bkg: tuple[int, ...],
    *,
    version: str | None,
    what: str,
    extra: dict[str, tuple[int, ...]] | None = None,
) -> str:
    matches = []
    for name in list_model_configs():
        cfg = load_model_config(name)
        if not isinstance(cfg, SAM2Config):
            continue
        h = cfg.hiera
        arch = (h.embed_dim, tuple(h.stages), tuple(h.window_pos_embed_bkg_spatial_size))
        same = arch == (embed_dim, stages, bkg)
        same = same and all(tuple(getattr(h, field)) == value for field, value in (extra or {}).items())
        if same and (version is None or cfg.version == version):
            matches.append((cfg.version, name))
    if not matches:
        raise ValueError(
            f"no known SAM 2 config matches this {what} (embed dim {embed_dim}, blocks per stage "
            f"{list(stages)}, position-embedding grid {list(bkg)}, version {version or 'unknown'}); "
            f"known configs: {', '.join(list_model_configs())}"
        )
    return max(matches)[1]  # with the version unknown, prefer 2.1


def infer_config_name_from_hf_config(config_json: Mapping[str, Any]) -> str:
    """The config name for a transformers ``config.json`` (``sam2`` or ``sam2_video`` model type)."""
    from transformers import CONFIG_MAPPING

    model_type = config_json.get("model_type")
    if model_type not in ("sam2", "sam2_video"):
        raise ValueError(f"config.json describes a {model_type!r} model, expected 'sam2' or 'sam2_video'")
    cfg = CONFIG_MAPPING[model_type].from_dict(dict(config_json))
    bb = cfg.vision_config.backbone_config
    if model_type == "sam2_video":
        flags = {cfg.enable_occlusion_spatial_embedding, cfg.enable_temporal_pos_encoding_for_object_pointers}
        version = "2.1" if flags == {True} else "2.0" if flags == {False} else None
        if version is None:
            raise ValueError("config.json mixes SAM 2.0 and 2.1 switches; no released model matches")
    else:  # the image model has no memory: 2.0 and 2.1 are the same network; trust the hub id if any
        hinted = config_name_for_hub_id(str(config_json.get("_name_or_path", "")))
        version = load_model_config(hinted).version if hinted else None
    extra = {
        "global_att_blocks": tuple(bb.global_attention_blocks),
        "window_spec": tuple(bb.window_size_per_stage),
    }
    return _match_config(
        int(bb.hidden_size),
        tuple(bb.blocks_per_stage),
        tuple(bb.window_positional_embedding_background_size),
        version=version,
        what="config.json",
        extra=extra,
    )


def check_state_dict(
    sd: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], config_name: str
) -> None:
    """Raise ValueError listing missing / unexpected keys and shape mismatches against ``expected``."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [
        f"{k} (checkpoint {tuple(sd[k].shape)}, model {tuple(expected[k])})"
        for k in expected
        if k in sd and tuple(sd[k].shape) != tuple(expected[k])
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [f"the checkpoint does not fit the {config_name} model:"]
    for label, names in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
    ):
        if names:
            lines.append(f"  {len(names)} {label}: {_listing(names)}")
    try:
        guess = infer_config_name(sd)
    except ValueError:
        guess = None
    if guess is not None and guess != config_name and not _same_image_model(sd, guess, config_name):
        lines.append(f"This checkpoint looks like {guess}; pass that config instead.")
    raise ValueError("\n".join(lines))


def _same_image_model(sd: Mapping[str, torch.Tensor], guess: str, config_name: str) -> bool:
    """An image-only checkpoint fits 2.0 and 2.1 alike: don't suggest the other version."""
    try:
        return is_image_only(sd) and load_model_config(guess).hiera == load_model_config(config_name).hiera
    except (ValueError, OSError, AttributeError):  # AttributeError: one of them is a SAM 1 config
        return False


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")
