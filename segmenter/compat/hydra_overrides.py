"""The part of Meta's Hydra config language that ``segmenter.compat.sam2`` builders understand.

Meta's ``build_sam2*`` compose a Hydra config from ``hydra_overrides_extra`` entries such as
``"++model.image_size=512"``. Here the entries are parsed into :class:`SAM2Settings`, in order,
the last one winning (as in Hydra), starting from the values Meta's YAML files and classes give
when nothing is overridden. An entry we do not implement is a ``ValueError`` that lists the
supported ones: nothing is ignored.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = [
    "SAM2Settings",
    "parse_overrides",
    "postprocessing_overrides",
    "supported_overrides",
]

_DECODER = "model.sam_mask_decoder_extra_args."
_FEAT_SIZES = (
    "model.memory_attention.layer.self_attention.feat_sizes",
    "model.memory_attention.layer.cross_attention.feat_sizes",
)
_ENTRY = re.compile(r"^(?P<prefix>\+\+|\+|~)?(?P<key>[A-Za-z_][\w.]*)(?:=(?P<value>.*))?$")


@dataclass
class SAM2Settings:
    """What the overrides can change. Defaults: Meta's YAML files / classes with no override."""

    image_size: int | None = None  # None: the config's (1024)
    dynamic_multimask_via_stability: bool = False
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    binarize_mask_from_pts_for_mem_enc: bool = False  # memory encoding of prompted frames (video)
    # video predictor only
    fill_hole_area: int = 0
    non_overlap_masks: bool = False
    add_all_frames_to_correct_as_cond: bool = False
    feat_sizes: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    # SAMURAI's keys (its fork's SAM2Base; code defaults, its configs/samurai/*.yaml set samurai_mode
    # true and kf_score_weight 0.25): memory="samurai" in the video predictor
    samurai_mode: bool = False
    stable_frames_threshold: int = 15
    stable_ious_threshold: float = 0.3
    min_obj_score_logits: float = -1.0
    kf_score_weight: float = 0.15
    memory_bank_iou_threshold: float = 0.5
    memory_bank_obj_score_threshold: float = 0.0
    memory_bank_kf_score_threshold: float = 0.0
    samurai_keys: set[str] = dataclasses.field(default_factory=set)  # the SAMURAI keys given

    def check_feat_sizes(self, embed_size: int) -> None:
        """RoPE feature sizes are derived from the image size here; a given value must agree."""
        for key, value in self.feat_sizes.items():
            if value != (embed_size, embed_size):
                raise ValueError(
                    f"hydra override {key}={list(value)} does not match the image size: the memory "
                    f"attention works on the {embed_size}x{embed_size} image embedding "
                    f"(image_size / 16); leave the override out, it is derived from ++model.image_size"
                )


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("expected true or false")


def _int(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected an integer >= {minimum}")
        return value

    return parse


def _float(value: Any) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def _feat_size(value: Any) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError("expected [height, width], two positive integers")
    return (value[0], value[1])


# key -> (SAM2Settings field, value parser, only for the video builder)
_KEYS: dict[str, tuple[str, Callable[[Any], Any], bool]] = {
    "model.image_size": ("image_size", _int(32), False),
    _DECODER + "dynamic_multimask_via_stability": ("dynamic_multimask_via_stability", _bool, False),
    _DECODER + "dynamic_multimask_stability_delta": ("dynamic_multimask_stability_delta", _float, False),
    _DECODER + "dynamic_multimask_stability_thresh": ("dynamic_multimask_stability_thresh", _float, False),
    "model.binarize_mask_from_pts_for_mem_enc": ("binarize_mask_from_pts_for_mem_enc", _bool, False),
    "model.fill_hole_area": ("fill_hole_area", _int(0), True),
    "model.non_overlap_masks": ("non_overlap_masks", _bool, True),
    "model.add_all_frames_to_correct_as_cond": ("add_all_frames_to_correct_as_cond", _bool, True),
    "model.samurai_mode": ("samurai_mode", _bool, True),
    "model.stable_frames_threshold": ("stable_frames_threshold", _int(1), True),
    "model.stable_ious_threshold": ("stable_ious_threshold", _float, True),
    "model.min_obj_score_logits": ("min_obj_score_logits", _float, True),
    "model.kf_score_weight": ("kf_score_weight", _float, True),
    "model.memory_bank_iou_threshold": ("memory_bank_iou_threshold", _float, True),
    "model.memory_bank_obj_score_threshold": ("memory_bank_obj_score_threshold", _float, True),
    "model.memory_bank_kf_score_threshold": ("memory_bank_kf_score_threshold", _float, True),
}
SAMURAI_KEYS = frozenset(k.removeprefix("model.") for k in list(_KEYS)[-8:])
# keys accepted only with the one value that is implemented: key -> (value, why, only for video)
_FIXED: dict[str, tuple[Any, str, bool]] = {
    "model.compile_image_encoder": (False, "torch.compile of the image encoder is not implemented", False),
    "model.clear_non_cond_mem_around_input": (
        False,
        "clearing memories around inputs is not implemented (it crashes in Meta's predictor too, their issue #571)",
        True,
    ),
}


def supported_overrides(video: bool) -> list[str]:
    """The override keys a builder accepts (each as ``++key=...``, ``+key=...`` or ``key=...``)."""
    keys = [k for k, (_, _, v) in _KEYS.items() if video or not v]
    keys += [f"{k} (={str(val).lower()} only)" for k, (val, _, v) in _FIXED.items() if video or not v]
    keys += [f"{k} (=[image_size/16,image_size/16] only)" for k in _FEAT_SIZES]
    return keys


def postprocessing_overrides(video: bool) -> list[str]:
    """The entries Meta's builders append with ``apply_postprocessing=True`` (after the user's)."""
    entries = [
        _DECODER + "dynamic_multimask_via_stability=true",
        _DECODER + "dynamic_multimask_stability_delta=0.05",
        _DECODER + "dynamic_multimask_stability_thresh=0.98",
    ]
    if video:
        entries += ["model.binarize_mask_from_pts_for_mem_enc=true", "model.fill_hole_area=8"]
    return ["++" + e for e in entries]


def _unsupported(entry: str, video: bool, why: str) -> ValueError:
    builder = "build_sam2_video_predictor" if video else "build_sam2"
    listing = "\n  ".join(supported_overrides(video))
    return ValueError(
        f"hydra override {entry!r} is not supported by {builder} here: {why}. Supported keys:\n  {listing}"
    )


def _value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def parse_overrides(entries: Sequence[str], video: bool, samurai: bool = False) -> SAM2Settings:
    """Apply ``entries`` in order to the defaults; raises ``ValueError`` for anything unsupported.

    ``samurai``: start from SAMURAI's ``configs/samurai/*.yaml`` (``samurai_mode`` true,
    ``kf_score_weight`` 0.25).
    """
    if isinstance(entries, str) or not isinstance(entries, Sequence):
        raise ValueError(f"hydra_overrides_extra must be a list of strings, got {type(entries).__name__}")
    settings = SAM2Settings()
    if samurai:
        settings.samurai_mode, settings.kf_score_weight = True, 0.25
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"hydra_overrides_extra entries must be strings, got {entry!r}")
        m = _ENTRY.match(entry.strip())
        if m is not None and m["prefix"] == "~":
            raise _unsupported(entry, video, "deleting config keys is not supported")
        if m is None or m["value"] is None:
            raise _unsupported(entry, video, "expected 'key=value' (optionally prefixed with + or ++)")
        key, value = m["key"], _value(m["value"])
        if key in _FEAT_SIZES:
            settings.feat_sizes[key] = _parse(entry, _feat_size, value, video)
        elif key in _FIXED:
            allowed, why, video_only = _FIXED[key]
            if video_only and not video:
                raise _unsupported(entry, video, "this key exists for the video predictor only")
            if value is not allowed:
                raise _unsupported(entry, video, why)
        elif key in _KEYS:
            field, parse, video_only = _KEYS[key]
            if video_only and not video:
                raise _unsupported(entry, video, "this key exists for the video predictor only")
            setattr(settings, field, _parse(entry, parse, value, video))
            if key.removeprefix("model.") in SAMURAI_KEYS:
                settings.samurai_keys.add(key.removeprefix("model."))
        else:
            raise _unsupported(entry, video, "unknown key")
    return settings


def _parse(entry: str, parse: Callable[[Any], Any], value: Any, video: bool) -> Any:
    try:
        return parse(value)
    except ValueError as e:
        raise _unsupported(entry, video, f"bad value: {e}") from None
