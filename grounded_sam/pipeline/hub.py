"""The models a pipeline needs, where they come from, and whether they are here.

A pipeline is a detector (a hub id or a local ``save_pretrained`` folder) and, unless the
detector segments by itself, a segmenter checkpoint (a hub id, a ``.pt`` or a folder).
:func:`models_needed` lists them from the same arguments :class:`~grounded_sam.GroundedSAM`
takes, without importing torch or loading anything; :func:`check_models` then fails fast, before
any model loads, when one of them is neither cached nor downloadable (``HF_HUB_OFFLINE=1``, or
no answer from the hub within a second or two), naming every model, whether it is cached, and
the commands that fetch them (:func:`pipeline_models`: the same check in Python's words, for the
constructor of :class:`~grounded_sam.GroundedSAM`). :func:`download` fetches what a pipeline
needs into the standard Hugging Face cache (``huggingface_hub.snapshot_download``, with progress bars).

Everything here reads the hub's own cache layout through ``huggingface_hub``
(``try_to_load_from_cache``), so "cached" means what the loaders will find offline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from grounded_sam.pipeline.defaults import DEFAULT_DETECTOR, DEFAULT_SEGMENTER
from gsam_runtime.hub import (
    HubModel,
    MissingModelsError,
    hub_endpoint,
    offline_reason,
    require_models,
)
from gsam_runtime.hub import describe_missing as describe_models

__all__ = [
    "loading_error_message",
    "ModelNeed",
    "ModelsUnavailableError",
    "MissingModelsError",
    "pipeline_models",
    "download_command",
    "LICENCES",
    "models_needed",
    "catalogue",
    "is_cached",
    "offline_reason",
    "check_models",
    "download",
    "hub_endpoint",
]

Role = Literal["detector", "segmenter"]

LICENCES: dict[str, str] = {
    "iSEE-Laboratory/llmdet_tiny": "Apache-2.0",
    "google/owlv2-base-patch16-ensemble": "Apache-2.0",
    "google/owlvit-base-patch32": "Apache-2.0",
    "florence-community/Florence-2-base": "MIT",
    "omlab/omdet-turbo-swin-tiny-hf": "Apache-2.0",
    "facebook/sam3": "SAM License (gated: accept it on the hub, then `hf auth login`)",
}
"""Licences of the default detector checkpoints; every ``facebook/sam2*`` / ``facebook/sam-vit-*``
segmenter checkpoint is Apache-2.0 (see :func:`licence`). Also in NOTICE."""

_SKIP_SUFFIXES = (".msgpack", ".h5", ".onnx", ".tflite", ".ot", ".mlmodel", ".md", ".gitattributes")
_SKIP_FOLDERS = ("onnx/", "coreml/", "openvino/", "tf/", "flax/")
_TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def licence(repo_id: str) -> str:
    """The licence of a known checkpoint, else ``"see its model card"``."""
    if repo_id in LICENCES:
        return LICENCES[repo_id]
    if repo_id.startswith(("facebook/sam2", "facebook/sam-vit-")):
        return "Apache-2.0"
    return "see its model card"


class ModelNeed(HubModel):
    """One model a pipeline loads (:class:`gsam_runtime.hub.HubModel`), with its licence."""

    @property
    def licence(self) -> str:
        return "-" if self.local else licence(self.source)


ModelsUnavailableError = MissingModelsError  # the name the CLI used first


# ---------------------------------------------------------------------------- what a pipeline needs
def models_needed(
    detector: Any = DEFAULT_DETECTOR,
    detector_model_id: str | None = None,
    segmenter: Any = None,
    checkpoint: str | Path | None = None,
) -> list[ModelNeed]:
    """The models ``GroundedSAM(detector=..., segmenter=..., detector_model_id=..., checkpoint=...)``
    loads, resolved as the pipeline resolves them (default checkpoints, a local detector folder,
    no segmenter for a detector that returns masks unless one is given). Objects (a detector or
    model already built) need nothing. Raises ``ValueError`` for an unknown name and
    ``FileNotFoundError`` for a local path that does not exist, before anything loads."""
    from detectors import (
        DetectorSpec,
        available_detectors,
        default_model_id,
        detector_for_folder,
        detector_returns_masks,
        returns_masks,
    )

    needs: list[ModelNeed] = []
    masks = isinstance(detector, DetectorSpec) and detector_returns_masks(detector.name) or returns_masks(detector)
    if isinstance(detector, (str, Path)):
        name = str(detector)
        if name not in available_detectors() and (Path(name).exists() or any(c in name for c in "/\\~")):
            detector_model_id = name
            if Path(name).is_dir():  # its family decides whether a segmenter is needed
                name = detector_for_folder(name)
                masks = detector_returns_masks(name)
        else:
            default_model_id(name)  # an unknown name fails here, listing the known ones
            masks = detector_returns_masks(name)
        source = detector_model_id or default_model_id(name)
        if source is not None:
            needs.append(_need("detector", name, str(source)))
    if segmenter is None and masks:
        return needs
    seg = segmenter if segmenter is not None else DEFAULT_SEGMENTER
    if isinstance(seg, (str, Path)):
        needs.append(_segmenter_need(str(seg), checkpoint))
    return needs


def catalogue(role: Role) -> list[tuple[ModelNeed, str]]:
    """Every detector family with its default checkpoint and default box threshold, or every segmenter
    config with its hub checkpoint (threshold ``"-"``), in name order."""
    if role == "detector":
        from detectors import available_detectors, default_model_id, detector_factory

        rows = []
        for name in available_detectors():
            source = default_model_id(name)
            threshold = getattr(detector_factory(name), "default_box_threshold", None)
            if source is not None:
                rows.append((ModelNeed("detector", name, source, False), "-" if threshold is None else f"{threshold:g}"))
        return rows
    from segmenter.config import list_model_configs, load_model_config

    return [(_segmenter_need(name, None), "-") for name in list_model_configs() if load_model_config(name).hf_ids]


def _looks_local(text: str) -> bool:
    from segmenter.checkpoints.hub import looks_like_path

    return looks_like_path(text)


def _need(role: Role, name: str, source: str, checkpoint_file: str | None = None) -> ModelNeed:
    path = Path(source).expanduser()
    if path.exists():
        return ModelNeed(role, name, str(path.resolve()), True)
    if _looks_local(source):
        flag = "--checkpoint / --segmenter" if role == "segmenter" else "--detector"
        raise FileNotFoundError(f"{role} file not found: {source!r} ({flag} takes a hub id or an existing local path)")
    return ModelNeed(role, name, source, False, checkpoint_file)


def _segmenter_need(segmenter: str, checkpoint: str | Path | None) -> ModelNeed:
    from segmenter.checkpoints.hub import config_name_for_hub_id
    from segmenter.config import list_model_configs, load_model_config

    if segmenter in list_model_configs():
        config = load_model_config(segmenter)
        if checkpoint is None:
            if not config.hf_ids:
                raise ValueError(f"config {segmenter!r} names no hub checkpoint; pass checkpoint=<path>")
            checkpoint = config.hf_ids[0]
        return _need("segmenter", segmenter, str(checkpoint), _official_file(segmenter, str(checkpoint)))
    if (Path(segmenter).expanduser() / "manifest.json").is_file():  # a `grounded-sam export` folder
        return _need("segmenter", "exported ONNX", segmenter)
    name = config_name_for_hub_id(segmenter)
    file = _official_file(name, segmenter) if name else None
    return _need("segmenter", name or "(inferred from the checkpoint)", segmenter, file)


def _official_file(config_name: str, repo_id: str) -> str | None:
    from segmenter.checkpoints.hub import official_checkpoint_file

    return official_checkpoint_file(config_name, repo_id)


# ---------------------------------------------------------------------------- cache and connection
def is_cached(need: ModelNeed, cache_dir: str | Path | None = None) -> bool:
    """Whether the loaders will find ``need`` without a connection (:meth:`HubModel.is_cached`)."""
    return need.is_cached(cache_dir)


def _cli_words(needs: Sequence[ModelNeed], cache_dir: str | Path | None) -> dict[str, Any]:
    """The command line's words around the models table (:func:`gsam_runtime.hub.describe_missing`)."""
    return {
        "headline": "the models this command needs are not all on this machine, and ",
        "also": ["(or `grounded-sam download` with the same model options)", *_gated(needs, cache_dir)],
        "local": "Or point at local files: --detector path/to/save_pretrained_folder, "
                 "--checkpoint path/to/sam2.1_hiera_tiny.pt (with --segmenter <config name>).",
    }


def _gated(needs: Sequence[ModelNeed], cache_dir: str | Path | None = None) -> list[str]:
    """A line for each missing model whose licence must be accepted on the hub before it downloads."""
    return [f"({n.source}: {n.licence})" for n in needs if "gated" in n.licence and not n.is_cached(cache_dir)]


def check_models(needs: Sequence[ModelNeed], cache_dir: str | Path | None = None, *, go_offline: bool = False) -> None:
    """For the command line: raise :class:`MissingModelsError` when a needed model is not cached and
    cannot be downloaded from here; the message lists every model, whether it is cached, and what to do.

    ``go_offline``: when every hub model is cached and the hub does not answer, switch this
    process to offline mode (``HF_HUB_OFFLINE``), so that the loaders read the cache at once
    instead of retrying the connection (call it before transformers is imported).
    """
    if not go_offline and all(n.is_cached(cache_dir) for n in needs):
        return
    if require_models(needs, cache_dir, **_cli_words(needs, cache_dir)):
        from huggingface_hub import constants

        os.environ["HF_HUB_OFFLINE"] = "1"
        constants.HF_HUB_OFFLINE = True


def describe_missing(needs: Sequence[ModelNeed], why: str, cache_dir: str | Path | None = None) -> str:
    """The command line's message for ``needs`` when some are missing and ``why`` they cannot be fetched."""
    return describe_models(needs, why, cache_dir, **_cli_words(needs, cache_dir))


def pipeline_models(
    caller: str,
    detector: Any,
    detector_model_id: str | None,
    segmenter: Any,
    checkpoint: str | Path | None,
) -> bool:
    """For ``GroundedSAM(...)`` (named ``caller`` in the message): raise :class:`MissingModelsError`,
    naming every model, when one is neither cached nor downloadable; returns whether to load them in
    :func:`gsam_runtime.hub.offline_mode` (all cached, the hub out of reach). Arguments it cannot
    resolve (an unknown name, a missing path) are left to the loaders, which say what is wrong."""
    try:
        needs = models_needed(detector, detector_model_id, segmenter, checkpoint)
    except (ValueError, FileNotFoundError, OSError):
        return False
    also = [] if all(n.is_cached() for n in needs) else [f"(or: {c})" for c in download_command(needs)] + _gated(needs)
    return require_models(
        needs, headline=f"{caller} needs models that are not all on this machine, and ", also=also,
        local=f"Or load local files: {caller}(..., detector='path/to/save_pretrained_folder'"
              + (", checkpoint='path/to/sam2.1_hiera_tiny.pt')." if any(n.role == "segmenter" for n in needs) else ")."))


def download_command(needs: Sequence[ModelNeed]) -> list[str]:
    """``["grounded-sam download [--preset NAME]"]`` when a bundled preset needs exactly the hub models of
    ``needs``, else ``[]`` (the ``hf download`` commands of the models then say it)."""
    from grounded_sam.pipeline.configs import list_pipeline_configs
    from grounded_sam.pipeline.presets import load_preset

    wanted = {n.source for n in needs if not n.local}
    for preset in list_pipeline_configs():
        kw = load_preset(preset)
        try:
            theirs = models_needed(kw.get("detector", DEFAULT_DETECTOR), kw.get("detector_model_id"),
                                   kw.get("segmenter"), kw.get("checkpoint"))
        except (ValueError, FileNotFoundError):
            continue
        if {n.source for n in theirs if not n.local} == wanted:
            return ["grounded-sam download" + ("" if preset == "default" else f" --preset {preset}")]
    return []


# ---------------------------------------------------------------------------- download
def download(needs: Sequence[ModelNeed], cache_dir: str | Path | None = None, progress: bool = True) -> dict[str, Path]:
    """Fetch every hub model in ``needs`` into the Hugging Face cache: ``{hub id: snapshot folder}``.

    A segmenter repo gives only the checkpoint the loader reads (Meta's ``.pt`` when the repo has
    it, else transformers' safetensors + ``config.json``); a detector repo gives its PyTorch files
    (weights, config, processor and tokenizer files; no TF / Flax / ONNX copies, no ``.bin`` where
    safetensors exist). Local paths are checked, not copied.
    """
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    out: dict[str, Path] = {}
    api = HfApi()
    (enable_progress_bars if progress else disable_progress_bars)()
    for need in needs:
        if need.local:
            if not Path(need.source).exists():
                raise FileNotFoundError(f"{need.role} file not found: {need.source}")
            continue
        files = [s.rfilename for s in (api.model_info(need.source, files_metadata=False).siblings or [])]
        wanted = _files_to_fetch(need, files)
        if not wanted:
            raise FileNotFoundError(f"{need.source} holds no checkpoint this {need.role} can read (files: {files})")
        out[need.source] = Path(snapshot_download(need.source, allow_patterns=wanted, cache_dir=cache_dir))
    return out


def _files_to_fetch(need: ModelNeed, files: Sequence[str]) -> list[str]:
    if need.role == "segmenter":
        if need.checkpoint_file and need.checkpoint_file in files:
            return [need.checkpoint_file]
        if "model.safetensors" in files:
            return ["model.safetensors", "config.json"]
        if "model.safetensors.index.json" in files:
            return [f for f in files if f.endswith(".safetensors") or f in ("model.safetensors.index.json", "config.json")]
        torch_files = [f for f in files if f.endswith((".pt", ".pth"))]
        return torch_files[:1] if len(torch_files) == 1 else []
    keep = [f for f in files if not f.endswith(_SKIP_SUFFIXES) and not f.startswith(_SKIP_FOLDERS)]
    if any(f.endswith(".safetensors") for f in keep):
        keep = [f for f in keep if not f.endswith(_TORCH_SUFFIXES)]
    return keep


def loading_error_message(e: Exception) -> str:
    """What the CLI (and the app, in its page) says when the models fail to load: for weights that
    are not cached and cannot be downloaded, where to get them."""
    if isinstance(e, MissingModelsError):  # its message names every model and the commands
        return f"error: {e}"
    text = str(e)
    offline = any(s in type(e).__name__ + text for s in ("NotCached", "LocalEntryNotFound", "offline", "OfflineMode", "couldn't connect", "Connection"))
    if offline:
        return (
            f"error: model weights could not be loaded: {text}\n"
            "The weights are not in the local Hugging Face cache and cannot be downloaded from here. "
            "Download them on a connected machine (`grounded-sam download` with the same model options), or pass "
            "local files: --checkpoint path/to/sam2.1_hiera_tiny.pt and --detector path/to/save_pretrained_folder."
        )
    return f"error: {type(e).__name__}: {text}"
