"""Model configs: dataclasses filled from the YAML files in ``segmenter/configs``.

``family: sam2`` files become :class:`SAM2Config`, ``family: sam1`` files :class:`SAM1Config`.
``family`` is descriptive: code tells the models apart by their interface
(:mod:`segmenter.modeling.interface`), and :mod:`segmenter.build` alone maps configs to models.
Every released SAM 2 / 2.1 config shares the heads, the memory modules and the neck width;
what differs is the Hiera trunk and four SAM 2.1 switches. Sizes that depend on the input
resolution (feature maps, RoPE tables, position-embedding grids) are derived from
``image_size``, never stored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml


CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The model configs shipped with the package, one YAML file per model."""

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "HieraConfig",
    "NeckConfig",
    "MemoryConfig",
    "MaskDecoderConfig",
    "SAM2Config",
    "ViTConfig",
    "SAM1Config",
    "ModelConfig",
    "load_model_config",
    "list_model_configs",
]

# the RGB normalisation of every SAM image encoder (pixels in [0, 1]): (x - mean) / std
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class HieraConfig:
    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (2, 3, 16, 3)
    global_att_blocks: tuple[int, ...] = (12, 16, 20)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    q_pool: int = 3  # number of stage transitions with query pooling
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    mlp_ratio: float = 4.0
    patch_kernel_size: int = 7
    patch_stride: int = 4
    patch_padding: int = 3

    @property
    def channel_list(self) -> list[int]:
        """Output channels per stage, finest first: e.g. [96, 192, 384, 768]."""
        return [int(self.embed_dim * self.dim_mul**i) for i in range(len(self.stages))]


@dataclass(frozen=True)
class NeckConfig:
    d_model: int = 256
    backbone_channel_list: tuple[int, ...] = (768, 384, 192, 96)  # coarsest first
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    fpn_interp_model: str = "nearest"
    scalp: int = 1  # coarsest levels dropped from the encoder output


@dataclass(frozen=True)
class MaskDecoderConfig:
    transformer_dim: int = 256
    transformer_depth: int = 2
    transformer_mlp_dim: int = 2048
    transformer_num_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98


@dataclass(frozen=True)
class MemoryConfig:
    num_maskmem: int = 7  # the current frame + 6 previous
    mem_dim: int = 64
    num_layers: int = 4
    dim_feedforward: int = 2048
    rope_theta: float = 10000.0
    max_obj_ptrs_in_encoder: int = 16
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    fuser_layers: int = 2
    fuser_kernel_size: int = 7
    mask_downsampler_kernel_size: int = 3
    mask_downsampler_stride: int = 2
    # SAM 2.1 switches (all False in SAM 2.0)
    no_obj_embed_spatial: bool = False
    add_tpos_enc_to_obj_ptrs: bool = False
    proj_tpos_enc_in_obj_ptrs: bool = False
    use_signed_tpos_enc_to_obj_ptrs: bool = False


@dataclass(frozen=True)
class SAM2Config:
    name: str
    version: str  # "2.0" | "2.1"
    hiera: HieraConfig
    neck: NeckConfig = field(default_factory=NeckConfig)
    decoder: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    image_size: int = 1024
    backbone_stride: int = 16
    hf_ids: tuple[str, ...] = ()
    checkpoint_filename: str | None = None
    family: str = "sam2"

    @property
    def embed_size(self) -> int:
        """Side of the image embedding grid, e.g. 64 for a 1024 input."""
        return self.image_size // self.backbone_stride

    @property
    def high_res_sizes(self) -> list[int]:
        """Sides of the stride-4 and stride-8 feature maps fed to the mask decoder."""
        return [self.image_size // 4, self.image_size // 8]

    def with_image_size(self, image_size: int | None) -> SAM2Config:
        if image_size is None or image_size == self.image_size:
            return self
        check_image_size(image_size)
        return dataclasses.replace(self, image_size=int(image_size))


def check_image_size(image_size: int) -> None:
    # the mask decoder upsamples the stride-16 embedding by 4 and adds the stride-4 features,
    # and Hiera pools by 2 three times after a stride-4 patch embed: 32 must divide the size.
    if not isinstance(image_size, int) or image_size <= 0 or image_size % 32:
        raise ValueError(f"image_size must be a positive multiple of 32, got {image_size!r}")


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _build(cls: type, data: dict[str, Any] | None, where: str) -> Any:
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    return cls(**_tuples(data))


def config_from_dict(name: str, data: dict[str, Any]) -> SAM2Config:
    data = dict(data)
    family = data.get("family", "sam2")
    if family != "sam2":
        raise ValueError(f"config {name!r} is a {family!r} model, not SAM 2")
    sub = {
        "hiera": _build(HieraConfig, data.pop("hiera", None), f"{name}.hiera"),
        "neck": _build(NeckConfig, data.pop("neck", None), f"{name}.neck"),
        "decoder": _build(MaskDecoderConfig, data.pop("decoder", None), f"{name}.decoder"),
        "memory": _build(MemoryConfig, data.pop("memory", None), f"{name}.memory"),
    }
    cfg = _build(SAM2Config, {"name": name, **data, **sub}, name)
    check_image_size(cfg.image_size)
    return cfg


@dataclass(frozen=True)
class ViTConfig:
    """SAM 1's ViT image encoder (ViTDet style: windowed blocks, a few global ones, relative positions)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    patch_size: int = 16
    mlp_ratio: float = 4.0
    out_chans: int = 256
    qkv_bias: bool = True


@dataclass(frozen=True)
class SAM1Config:
    """SAM 1 (ViT-B/L/H). The heads reuse :class:`MaskDecoderConfig` (SAM 1 has no dynamic multimask).

    Sizes that depend on ``image_size`` (position-embedding grid, global blocks' relative-position
    tables) are derived, as the reference's ``ImageEncoderViT(img_size=...)`` does.
    """

    name: str
    vit: ViTConfig
    decoder: MaskDecoderConfig = field(
        default_factory=lambda: MaskDecoderConfig(dynamic_multimask_via_stability=False)
    )
    image_size: int = 1024
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # 0..255 RGB
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    hf_ids: tuple[str, ...] = ()
    checkpoint_filename: str | None = None
    version: str = "1.0"
    family: str = "sam1"

    @property
    def embed_size(self) -> int:
        """Side of the image embedding grid, e.g. 64 for a 1024 input."""
        return self.image_size // self.vit.patch_size

    def with_image_size(self, image_size: int | None) -> SAM1Config:
        if image_size is None or image_size == self.image_size:
            return self
        check_sam1_image_size(image_size, self.vit.patch_size)
        return dataclasses.replace(self, image_size=int(image_size))


def check_sam1_image_size(image_size: int, patch_size: int = 16) -> None:
    if not isinstance(image_size, int) or image_size <= 0 or image_size % patch_size:
        raise ValueError(f"image_size must be a positive multiple of {patch_size} for SAM 1, got {image_size!r}")


def sam1_config_from_dict(name: str, data: dict[str, Any]) -> SAM1Config:
    data = dict(data)
    if data.get("family") != "sam1":
        raise ValueError(f"config {name!r} is a {data.get('family')!r} model, not SAM 1")
    dec = {"dynamic_multimask_via_stability": False, **(data.pop("decoder", None) or {})}
    sub = {
        "vit": _build(ViTConfig, data.pop("vit", None), f"{name}.vit"),
        "decoder": _build(MaskDecoderConfig, dec, f"{name}.decoder"),
    }
    cfg = _build(SAM1Config, {"name": name, **data, **sub}, name)
    check_sam1_image_size(cfg.image_size, cfg.vit.patch_size)
    return cfg


ModelConfig = Union[SAM2Config, SAM1Config]


def load_model_config(name_or_path: str | Path, image_size: int | None = None) -> ModelConfig:
    """A config by name (``"sam2.1_hiera_tiny"``, ``"sam_vit_b"``) or YAML path, optionally at another
    ``image_size``."""
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} and p.is_file():
        path, name = p, p.stem
    else:
        path, name = model_config_path(str(name_or_path)), str(name_or_path)
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if isinstance(data, dict) and data.get("family") == "sam1":
        return sam1_config_from_dict(name, data).with_image_size(image_size)
    return config_from_dict(name, data).with_image_size(image_size)


def list_model_configs() -> list[str]:
    """Names of the shipped model configs, e.g. ``["sam2.1_hiera_base_plus", ...]``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def model_config_path(name: str) -> Path:
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown model config {name!r}; available: {', '.join(list_model_configs())}")
    return path
