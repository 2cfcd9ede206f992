"""The models a pipeline needs, where they come from, and whether they are here.

A pipeline is a detector (a hub id or a local ``save_pretrained`` folder) and, unless the
detector segments by itself, a segmenter checkpoint (a hub id, a ``.pt`` or a folder).
:func:`models_needed` lists them from the same arguments :class:`~grounded_sam.GroundedSAM`
takes, without importing torch or loading anything; :func:`check_models` then fails fast, before
any model loads, when one of them is neither cached nor downloadable (``HF_HUB_OFFLINE=1``, or
no answer from the hub within a second or two), naming every model, whether it is cached, and
the commands that fetch them. :func:`download` fetches what a pipeline needs into the standard
Hugging Face cache (``huggingface_hub.snapshot_download``, with progress bars).

Everything here reads the hub's own cache layout through ``huggingface_hub``
(``try_to_load_from_cache``), so "cached" means what the loaders will find offline.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from grounded_sam.pipeline.defaults import DEFAULT_DETECTOR, DEFAULT_SEGMENTER

__all__ = [
    "loading_error_message",
    "ModelNeed",
    "ModelsUnavailableError",
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

_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
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


@dataclass(frozen=True)
class ModelNeed:
    """One model a pipeline loads: a hub repo (``local=False``) or a local file / folder."""

    role: Role
    name: str  # detector family or segmenter config name
    source: str  # hub id, or a local path
    local: bool
    checkpoint_file: str | None = None  # the one file a segmenter repo is read from (Meta's .pt), if known

    @property
    def licence(self) -> str:
        return "-" if self.local else licence(self.source)

    def fetch_command(self) -> str:
        """The shell command that puts this model into the Hugging Face cache on a connected machine."""
        if self.local:
            return f"(local {self.role}: {self.source})"
        return f"hf download {self.source}" + (f" {self.checkpoint_file}" if self.checkpoint_file else "")


class ModelsUnavailableError(RuntimeError):
    """Some model a pipeline needs is neither on this machine nor downloadable from here."""


def hub_endpoint() -> str:
    """The hub the downloads go to (``HF_ENDPOINT``, else https://huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


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
    from detectors import available_detectors, default_model_id, detector_for_folder, detector_returns_masks

    needs: list[ModelNeed] = []
    masks = False
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
    name = config_name_for_hub_id(segmenter)
    file = _official_file(name, segmenter) if name else None
    return _need("segmenter", name or "(inferred from the checkpoint)", segmenter, file)


def _official_file(config_name: str, repo_id: str) -> str | None:
    """Meta's checkpoint file when ``repo_id`` is Meta's own repo for the config (its first hub id)."""
    from segmenter.config import load_model_config

    config = load_model_config(config_name)
    return config.checkpoint_filename if config.hf_ids and config.hf_ids[0].lower() == repo_id.lower() else None


# ---------------------------------------------------------------------------- cache and connection
def is_cached(need: ModelNeed, cache_dir: str | Path | None = None) -> bool:
    """Whether the loaders will find ``need`` without a connection: a local path that exists, or a
    hub repo whose weights (and, for transformers models, ``config.json``) are in the cache."""
    if need.local:
        return Path(need.source).exists()
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(need.source, filename, cache_dir=cache_dir), str)

    if need.checkpoint_file and cached(need.checkpoint_file):
        return True
    return cached("config.json") and any(cached(f) for f in _WEIGHTS)


def offline_reason(timeout: float = 2.0) -> str | None:
    """Why downloads cannot happen from here (``None``: they can): ``HF_HUB_OFFLINE`` set, or no
    answer from the hub endpoint within ``timeout`` seconds (one HEAD request, proxies honoured)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    if env or constants.HF_HUB_OFFLINE:
        return "downloads are disabled (HF_HUB_OFFLINE=1)"
    endpoint = hub_endpoint()
    answer: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
            answer.append(True)
        except urllib.error.HTTPError:  # the server answered (even 4xx/5xx): it is reachable
            answer.append(True)
        except (OSError, ValueError):
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # a slow DNS lookup cannot hold us longer
    thread.start()
    thread.join(timeout + 0.5)
    return None if answer and answer[0] else f"there is no connection to the hub ({endpoint})"


def check_models(needs: Sequence[ModelNeed], cache_dir: str | Path | None = None, *, go_offline: bool = False) -> None:
    """Raise :class:`ModelsUnavailableError` when a needed model is not cached and cannot be
    downloaded from here; the message lists every model, whether it is cached, and what to do.

    ``go_offline``: when every hub model is cached and the hub does not answer, switch this
    process to offline mode (``HF_HUB_OFFLINE``), so that the loaders read the cache at once
    instead of retrying the connection (call it before transformers is imported).
    """
    missing = [n for n in needs if not is_cached(n, cache_dir)]
    if not missing and not (go_offline and any(not n.local for n in needs)):
        return
    why = offline_reason()
    if why is None:
        return
    if missing:
        raise ModelsUnavailableError(describe_missing(needs, why, cache_dir))
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


def describe_missing(needs: Sequence[ModelNeed], why: str, cache_dir: str | Path | None = None) -> str:
    from huggingface_hub import constants

    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    lines = [f"the models this command needs are not all on this machine, and {why}:"]
    for n in needs:
        state = "cached" if is_cached(n, cache_dir) else "NOT cached"
        lines.append(f"  {n.role:<9} {n.name:<22} {n.source:<40} {state}")
    remote = [n for n in needs if not n.local and not is_cached(n, cache_dir)]
    lines.append("On a machine with internet access, fetch them:")
    lines += [f"  {n.fetch_command()}" for n in remote]
    lines.append("  (or `grounded-sam download` with the same model options)")
    lines.append(f"then copy that machine's Hugging Face cache to {cache} (or point HF_HOME / HF_HUB_CACHE at a copy).")
    lines.append("Or point at local files: --detector path/to/save_pretrained_folder, "
                 "--checkpoint path/to/sam2.1_hiera_tiny.pt (with --segmenter <config name>).")
    return "\n".join(lines)


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
