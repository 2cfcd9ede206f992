"""Drop-in for Meta's ``sam2`` package: change the import lines, keep the code.

::

    # from sam2.build_sam import build_sam2, build_sam2_video_predictor
    # from sam2.sam2_image_predictor import SAM2ImagePredictor
    # from sam2.sam2_video_predictor import SAM2VideoPredictor
    # from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from segmenter.compat.sam2 import (
        SAM2AutomaticMaskGenerator, SAM2ImagePredictor, SAM2VideoPredictor, build_sam2, build_sam2_video_predictor,
    )

The builders take Meta's config names (``"configs/sam2.1/sam2.1_hiera_l.yaml"``,
``"configs/sam2/sam2_hiera_t.yaml"``, the legacy ``"sam2_hiera_l.yaml"``; sizes ``t``, ``s``,
``b+``, ``l``; our names such as ``"sam2.1_hiera_large"`` work too), Meta's ``.pt`` files (and
every other format :func:`segmenter.build_sam` reads), the ``hydra_overrides_extra`` entries
listed by :func:`~segmenter.compat.hydra_overrides.supported_overrides` (anything else is a
``ValueError``) and ``apply_postprocessing``, whose entries are appended after the user's as in
Meta's builders (so they win: to change ``fill_hole_area``, set ``predictor.fill_hole_area``
after building, as with Meta's). ``device`` defaults to ``"cuda"`` as there; without CUDA that
is an error that says so, never a silent switch to the CPU.

Differences that remain: models are our :class:`~segmenter.SAM2Model` and predictors our
classes (``SAM2VideoPredictor`` wraps the model instead of being it; its state is a
:class:`~segmenter.video.state.VideoState`, not a dict); ``vos_optimized=True`` runs uncompiled
(with a warning); ``max_hole_area`` / ``max_sprinkle_area`` work on every device (Meta's need a
CUDA extension and are skipped without it).

SAMURAI (github.com/yangchris11/samurai) users keep their config names and keys too:
``build_sam2_video_predictor("configs/samurai/sam2.1_hiera_b+.yaml", ckpt)`` or
``hydra_overrides_extra=["++model.samurai_mode=true", "++model.kf_score_weight=0.25", ...]``
(``stable_frames_threshold``, ``stable_ious_threshold``, ``min_obj_score_logits``,
``memory_bank_{iou,obj_score,kf_score}_threshold``) give a predictor with ``memory="samurai"``
and those values, per object and for any number of objects (SAMURAI's own code is single-object).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import warnings
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from gsam_runtime.device import resolve_device
from segmenter.amg.generator import AutomaticMaskGenerator
from segmenter.build import build_model, read_checkpoint
from segmenter.checkpoints.read import config_name_for_hub_id, resolve_checkpoint
from segmenter.compat.hydra_overrides import SAM2Settings, parse_overrides, postprocessing_overrides
from segmenter.config import SAM2Config, list_model_configs, load_model_config
from segmenter.image.predictor import ImagePredictor
from segmenter.modeling.sam2 import SAM2Model
from segmenter.postprocess import fill_holes, small_components
from segmenter.video.tracking import Tracker
from segmenter.video.policies import FifoPolicy, MemoryPolicy, SamuraiConfig, SamuraiPolicy
from segmenter.video.predictor import VideoPredictor

__all__ = [
    "HF_MODEL_ID_TO_FILENAMES",
    "SAM2AutomaticMaskGenerator",
    "SAM2ImagePredictor",
    "SAM2VideoPredictor",
    "build_sam2",
    "build_sam2_hf",
    "build_sam2_video_predictor",
    "build_sam2_video_predictor_hf",
    "config_name",
]

# Meta's hub ids -> (their config name, their checkpoint file)
_SIZES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}  # Meta's short size names -> ours
HF_MODEL_ID_TO_FILENAMES: dict[str, tuple[str, str]] = {
    f"facebook/{v}-hiera-{ours.replace('_', '-')}": (f"configs/{v}/{v}_hiera_{short}.yaml", f"{v}_hiera_{ours}.pt")
    for v in ("sam2", "sam2.1")
    for short, ours in _SIZES.items()
}
_CONFIG = re.compile(r"^(?P<version>sam2|sam2\.1)_hiera_(?P<size>t|s|b\+|l|tiny|small|base_plus|large)$")
DEFAULT_DEVICE = "cuda"  # Meta's builders' default
_BUILD_KWARGS = ("device", "mode", "hydra_overrides_extra", "apply_postprocessing")


def config_name(config_file: str | Path) -> str:
    """Our config name for one of Meta's (``"configs/sam2.1/sam2.1_hiera_l.yaml"`` -> ``"sam2.1_hiera_large"``)."""
    stem = PurePosixPath(str(config_file).strip().replace("\\", "/")).name
    for suffix in (".yaml", ".yml"):
        stem = stem.removesuffix(suffix)
    m = _CONFIG.match(stem)
    if m is None:
        ours = [n for n in list_model_configs() if n.startswith("sam2")]
        raise ValueError(
            f"unknown SAM 2 config {str(config_file)!r}: use Meta's names "
            "(configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml, configs/sam2/sam2_hiera_{t,s,b+,l}.yaml, "
            f"sam2_hiera_{{t,s,b+,l}}.yaml) or ours ({', '.join(ours)})"
        )
    return f"{m['version']}_hiera_{_SIZES.get(m['size'], m['size'])}"


def _settings(overrides: Any, apply_postprocessing: bool, video: bool, samurai: bool = False) -> SAM2Settings:
    if isinstance(overrides, str) or not isinstance(overrides, (list, tuple)):
        raise ValueError(f"hydra_overrides_extra must be a list of strings, got {type(overrides).__name__}")
    entries = list(overrides) + (postprocessing_overrides(video) if apply_postprocessing else [])
    return parse_overrides(entries, video=video, samurai=samurai)


def _memory_policy(settings: SAM2Settings) -> MemoryPolicy:
    """SAMURAI's keys -> ``memory="samurai"`` with them (SAM 2's policy without ``samurai_mode``)."""
    if not settings.samurai_mode:
        if settings.samurai_keys:
            raise ValueError(
                f"SAMURAI's keys {sorted(settings.samurai_keys)} take effect with ++model.samurai_mode=true "
                "(or a configs/samurai/*.yaml config name)"
            )
        return FifoPolicy()
    s = settings
    return SamuraiPolicy(SamuraiConfig(
        iou_threshold=s.memory_bank_iou_threshold, obj_score_threshold=s.memory_bank_obj_score_threshold,
        kf_score_threshold=s.memory_bank_kf_score_threshold, stable_frames_threshold=s.stable_frames_threshold,
        stable_ious_threshold=s.stable_ious_threshold, min_obj_score_logits=s.min_obj_score_logits,
        kf_score_weight=s.kf_score_weight,
    ))  # fmt: skip


def _model_config(name: str, settings: SAM2Settings) -> SAM2Config:
    cfg = load_model_config(name, image_size=settings.image_size)
    if not isinstance(cfg, SAM2Config):
        raise ValueError(f"{name!r} is not a SAM 2 config")
    settings.check_feat_sizes(cfg.embed_size)
    decoder = dataclasses.replace(
        cfg.decoder,
        dynamic_multimask_via_stability=settings.dynamic_multimask_via_stability,
        dynamic_multimask_stability_delta=settings.dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh=settings.dynamic_multimask_stability_thresh,
    )
    return dataclasses.replace(cfg, decoder=decoder)


def _check_unknown(function: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise TypeError(f"{function}() got unsupported keyword arguments: {', '.join(sorted(kwargs))}")


def _build(
    config_file: str, ckpt_path: str | Path | None, device: str | torch.device, mode: str, settings: SAM2Settings
) -> SAM2Model:
    dev = resolve_device(device)  # a missing CUDA fails here, before any work
    cfg = _model_config(config_name(config_file), settings)
    state = None if ckpt_path is None else read_checkpoint(ckpt_path, cfg)
    model = build_model(cfg, state, dev, source=str(ckpt_path))
    assert isinstance(model, SAM2Model)
    if mode != "eval":  # Meta's builders leave the model in training mode unless mode == "eval"
        model.train()
    return model


def build_sam2(
    config_file: str,
    ckpt_path: str | Path | None = None,
    device: str | torch.device = DEFAULT_DEVICE,
    mode: str = "eval",
    hydra_overrides_extra: list[str] = [],  # noqa: B006 (Meta's signature; never mutated)
    apply_postprocessing: bool = True,
    **kwargs: Any,
) -> SAM2Model:
    """Meta's ``build_sam2``: a SAM 2 model from a config name and an optional checkpoint."""
    _check_unknown("build_sam2", kwargs)
    settings = _settings(hydra_overrides_extra, apply_postprocessing, video=False)
    return _build(config_file, ckpt_path, device, mode, settings)


def build_sam2_video_predictor(
    config_file: str,
    ckpt_path: str | Path | None = None,
    device: str | torch.device = DEFAULT_DEVICE,
    mode: str = "eval",
    hydra_overrides_extra: list[str] = [],  # noqa: B006
    apply_postprocessing: bool = True,
    vos_optimized: bool = False,
    **kwargs: Any,
) -> SAM2VideoPredictor:
    """Meta's ``build_sam2_video_predictor``: a :class:`SAM2VideoPredictor` from a config name."""
    _check_unknown("build_sam2_video_predictor", kwargs)
    if vos_optimized:
        warnings.warn(
            "vos_optimized=True (torch.compile of Meta's VOS predictor) is not implemented here; "
            "the predictor runs uncompiled: same results, without that speed-up",
            UserWarning,
            stacklevel=2,
        )
    samurai = "samurai" in PurePosixPath(str(config_file).replace("\\", "/")).parts[:-1]
    settings = _settings(hydra_overrides_extra, apply_postprocessing, video=True, samurai=samurai)
    memory = _memory_policy(settings)
    model = _build(config_file, ckpt_path, device, mode, settings)
    return SAM2VideoPredictor(
        model,
        fill_hole_area=settings.fill_hole_area,
        non_overlap_masks=settings.non_overlap_masks,
        add_all_frames_to_correct_as_cond=settings.add_all_frames_to_correct_as_cond,
        binarize_mask_from_pts_for_mem_enc=settings.binarize_mask_from_pts_for_mem_enc,
        memory=memory,
    )


def _hf_checkpoint(model_id: str, kwargs: dict[str, Any]) -> tuple[str, Path]:
    resolve_device(kwargs.get("device", DEFAULT_DEVICE))  # before any download
    name = config_name_for_hub_id(model_id)
    if name is None or not name.startswith("sam2"):
        raise ValueError(f"unknown SAM 2 hub id {model_id!r}; known: {', '.join(HF_MODEL_ID_TO_FILENAMES)}")
    return name, resolve_checkpoint(model_id, filename=load_model_config(name).checkpoint_filename)


def build_sam2_hf(model_id: str, **kwargs: Any) -> SAM2Model:
    """Meta's ``build_sam2_hf``: download (or find in the cache) a hub checkpoint and build it."""
    name, path = _hf_checkpoint(model_id, kwargs)
    return build_sam2(name, path, **kwargs)


def build_sam2_video_predictor_hf(model_id: str, **kwargs: Any) -> SAM2VideoPredictor:
    """Meta's ``build_sam2_video_predictor_hf``."""
    name, path = _hf_checkpoint(model_id, kwargs)
    return build_sam2_video_predictor(name, path, **kwargs)


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Meta's ``from_pretrained`` hands its kwargs to the builder and the class: (builder's, class's)."""
    build = {k: v for k, v in kwargs.items() if k in _BUILD_KWARGS}
    return build, {k: v for k, v in kwargs.items() if k not in _BUILD_KWARGS}


class SAM2ImagePredictor(ImagePredictor):
    """Meta's ``SAM2ImagePredictor``: :class:`segmenter.ImagePredictor` with its constructor.

    ``max_hole_area`` / ``max_sprinkle_area`` (pixels of the low-res masks) fill small background
    holes / remove small foreground specks before the masks are resized to the image, on every
    device; the returned low-res logits stay untouched, as in Meta's.
    """

    def __init__(
        self,
        sam_model: SAM2Model,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        autocast: bool | None = None,
    ) -> None:
        if not isinstance(sam_model, SAM2Model):
            raise ValueError("SAM2ImagePredictor needs a SAM 2 model (build_sam2 / build_sam2_hf)")
        if max_hole_area < 0 or max_sprinkle_area < 0:
            raise ValueError("max_hole_area and max_sprinkle_area must be >= 0")
        super().__init__(sam_model, mask_threshold=mask_threshold, autocast=autocast)
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: Any) -> SAM2ImagePredictor:  # type: ignore[override]
        """A hub id (``"facebook/sam2.1-hiera-large"``); builder kwargs (``device=``...) and ours both go here."""
        build, own = _split(kwargs)
        return cls(build_sam2_hf(model_id, **build), **own)

    @torch.inference_mode()
    def upscale_logits(self, low_res: torch.Tensor, img_idx: int = 0) -> torch.Tensor:
        return super().upscale_logits(self._clean(low_res.float()), img_idx)

    def _clean(self, low_res: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) logits
        t = self.mask_threshold
        out = low_res
        if self.max_hole_area > 0:
            out = fill_holes(low_res.flatten(0, 1), self.max_hole_area, threshold=t, fill_value=t + 10.0)
            out = out.reshape(low_res.shape)
        if self.max_sprinkle_area > 0:  # specks of the input masks, as Meta's does
            fg = (low_res > t).flatten(0, 1).cpu().numpy()  # (B * C, h, w)
            specks = torch.from_numpy(small_components(fg, self.max_sprinkle_area)).to(low_res.device)
            out = torch.where(specks.reshape(low_res.shape), t - 10.0, out)
        return out


class _SoftMemoryTracker(Tracker):
    """Memories of prompted frames from sigmoid masks (``binarize_mask_from_pts_for_mem_enc=False``)."""

    def encode_memory(self, *args: Any, binarize: bool, **kwargs: Any) -> torch.Tensor:
        return super().encode_memory(*args, binarize=False, **kwargs)


def _meta_verb(name: str) -> Callable[..., Any]:
    """``VideoPredictor.<name>`` with its session argument named ``inference_state``, as Meta's."""
    base = getattr(VideoPredictor, name)

    def verb(self: VideoPredictor, inference_state: Any, *args: Any, **kwargs: Any) -> Any:
        return base(self, inference_state, *args, **kwargs)

    sig = inspect.signature(base)
    params = list(sig.parameters.values())
    params[1] = params[1].replace(name="inference_state")
    verb.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    verb.__name__, verb.__qualname__, verb.__doc__ = name, f"SAM2VideoPredictor.{name}", base.__doc__
    return verb


class SAM2VideoPredictor(VideoPredictor):
    """Meta's ``SAM2VideoPredictor`` verbs on :class:`segmenter.VideoPredictor`.

    Build it with :func:`build_sam2_video_predictor` / :meth:`from_pretrained` (the constructor's
    defaults are that builder's with ``apply_postprocessing=True``). The session argument of every
    verb is named ``inference_state``, as in Meta's. ``init_state`` keeps every frame's outputs by
    default (``keep_outputs=True``), as Meta's does, so any correction gives Meta's numbers; pass
    ``keep_outputs=False`` for bounded memory. ``exact=True`` (the default here, unlike
    :class:`segmenter.VideoPredictor`) keeps the reference's GEMMs on the CPU: Meta's numbers bit
    for bit.
    """

    def __init__(
        self,
        model: SAM2Model,
        fill_hole_area: int = 8,
        non_overlap_masks: bool = False,
        add_all_frames_to_correct_as_cond: bool = False,
        binarize_mask_from_pts_for_mem_enc: bool = True,
        autocast: bool | None = None,
        memory: str | MemoryPolicy = "fifo",
        exact: bool = True,
    ) -> None:
        super().__init__(model, fill_hole_area, non_overlap_masks, add_all_frames_to_correct_as_cond, autocast, memory, exact)
        self.binarize_mask_from_pts_for_mem_enc = bool(binarize_mask_from_pts_for_mem_enc)
        if not self.binarize_mask_from_pts_for_mem_enc:
            self.tracker = _SoftMemoryTracker(self.model, exact=exact)

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: Any) -> SAM2VideoPredictor:  # type: ignore[override]
        """A hub id; kwargs go to :func:`build_sam2_video_predictor` (``device=``, ``hydra_overrides_extra=``...)."""
        return build_sam2_video_predictor_hf(model_id, **kwargs)

    add_new_points_or_box = _meta_verb("add_new_points_or_box")
    add_new_points = _meta_verb("add_new_points")
    add_new_mask = _meta_verb("add_new_mask")
    propagate_in_video_preflight = _meta_verb("propagate_in_video_preflight")
    propagate_in_video = _meta_verb("propagate_in_video")
    clear_all_prompts_in_frame = _meta_verb("clear_all_prompts_in_frame")
    remove_object = _meta_verb("remove_object")
    reset_state = _meta_verb("reset_state")

    def init_state(  # type: ignore[override]
        self,
        video_path: Any,
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        async_loading_frames: bool = False,
        keep_outputs: bool = True,
    ) -> Any:
        """Open a video (a folder of frames, a video file, a list or iterator of RGB frames)."""
        return super().init_state(
            video_path, offload_video_to_cpu, offload_state_to_cpu, async_loading_frames, keep_outputs
        )


class SAM2AutomaticMaskGenerator(AutomaticMaskGenerator):
    """Meta's ``SAM2AutomaticMaskGenerator`` (same arguments and records)."""

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: Any) -> SAM2AutomaticMaskGenerator:  # type: ignore[override]
        """A hub id; builder kwargs (``device=``...) go to :func:`build_sam2_hf`, the rest to the generator."""
        build, own = _split(kwargs)
        return cls(build_sam2_hf(model_id, **build), **own)

