"""Hugging Face Hub ids for SAM 2 checkpoints: config names, and download / cache lookup.

A Hub id resolves to Meta's ``.pt`` when the repo has one (the config's ``checkpoint_filename``),
else to the snapshot folder holding transformers' ``model.safetensors`` (+ ``config.json``).
With ``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` only the local cache is consulted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from gsam_runtime.hub import HubModel, MissingModelsError, looks_like_hub_id, require_models
from segmenter.config import list_model_configs, load_model_config

__all__ = [
    "resolve_checkpoint", "config_name_for_hub_id", "looks_like_path", "official_checkpoint_file", "checkpoint_need",
    "require_checkpoint", "CheckpointNotCachedError",
]

TORCH_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}
HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"


class CheckpointNotCachedError(MissingModelsError):
    """A Hub checkpoint is needed but downloads are disabled and it is not in the local cache."""


def config_name_for_hub_id(hub_id: str) -> str | None:
    """Our config name for a Hub repo id listed in a config's ``hf_ids`` (case-insensitive), else None."""
    wanted = hub_id.strip().strip("/").lower()
    for name in list_model_configs():
        if any(wanted == i.lower() for i in load_model_config(name).hf_ids):
            return name
    return None


def looks_like_path(text: str) -> bool:
    """Whether ``text`` names a local file or folder rather than a hub repo id (``org/name``)."""
    return not looks_like_hub_id(text)


def official_checkpoint_file(config_name: str, repo_id: str) -> str | None:
    """Meta's checkpoint file of the config when ``repo_id`` is Meta's own repo for it (its first hub id)."""
    config = load_model_config(config_name)
    return config.checkpoint_filename if config.hf_ids and config.hf_ids[0].lower() == repo_id.lower() else None


def checkpoint_need(id_or_path: str | Path, config_name: str | None = None) -> HubModel | None:
    """The hub model a checkpoint argument names (``None`` for a local path): the repo, and the file the
    loader reads from it when known (Meta's ``.pt``, or the one ``.pt`` of an unknown repo in the cache)."""
    text = str(id_or_path)
    if isinstance(id_or_path, Path) or Path(text).expanduser().exists() or looks_like_path(text):
        return None
    known = config_name_for_hub_id(text)  # a repo no config lists: a single .pt already in the cache counts
    file = official_checkpoint_file(known, text) if known else _cached_torch_file(text)
    return HubModel("segmenter", known or config_name or "(inferred from the checkpoint)", text, checkpoint_file=file)


def _cached_torch_file(repo_id: str) -> str | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    found = [p.name for p in folder.iterdir() if p.suffix in {".pt", ".pth"}]
    return found[0] if len(found) == 1 else None


def require_checkpoint(id_or_path: str | Path, config_name: str | None = None) -> bool:
    """Before reading a checkpoint: :class:`gsam_runtime.hub.MissingModelsError` at once when it is a hub
    repo neither cached nor downloadable (no retries); returns whether to read it in
    :func:`gsam_runtime.hub.offline_mode` (cached, the hub out of reach)."""
    need = checkpoint_need(id_or_path, config_name)
    if need is None:
        return False
    return require_models([need], error=CheckpointNotCachedError, headline=(
        "the segmenter checkpoint is not on this machine, and "), local=(
        "Or pass the path of a local checkpoint (Meta's .pt / .pth, or a transformers save_pretrained folder)."))


def _offline(local_files_only: bool | None) -> bool:
    if local_files_only is not None:
        return local_files_only
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE) or env


def resolve_checkpoint(
    id_or_path: str | Path,
    *,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
    filename: str | None = None,
) -> Path:
    """A local checkpoint file/folder as is, or a Hub repo id downloaded (or found) in the HF cache.

    For a Hub id, ``filename`` (default: Meta's ``.pt`` named by the config's
    ``checkpoint_filename``) is preferred, else transformers' ``model.safetensors``
    (+ ``config.json``), returned as the snapshot folder. Offline (``HF_HUB_OFFLINE=1`` or
    ``local_files_only=True``) only the cache is used.
    """
    text = str(id_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if isinstance(id_or_path, Path) or looks_like_path(text):
        raise FileNotFoundError(f"checkpoint {text!r} does not exist")
    offline = _offline(local_files_only)
    return _from_hub(text, cache_dir=cache_dir, revision=revision, offline=offline, filename=filename)


def _from_hub(
    repo_id: str, *, cache_dir: str | Path | None, revision: str | None, offline: bool, filename: str | None
) -> Path:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    not_cached = False

    def fetch(name: str) -> Path | None:
        nonlocal not_cached
        try:
            return Path(
                hf_hub_download(
                    repo_id, name, revision=revision, cache_dir=cache_dir, local_files_only=offline
                )
            )
        except LocalEntryNotFoundError:  # offline (or no network) and not in the cache
            not_cached = True
        except EntryNotFoundError:  # the repo has no such file
            pass
        except RepositoryNotFoundError:
            raise FileNotFoundError(
                f"{repo_id!r} is neither a local path nor a Hugging Face Hub repo you can access "
                "(check the spelling; private repos need `hf auth login`)"
            ) from None
        return None

    config_name = config_name_for_hub_id(repo_id)
    official = filename or (load_model_config(config_name).checkpoint_filename if config_name else None)
    if official and (found := fetch(official)):
        return found
    if weights := fetch(HF_WEIGHTS):
        fetch("config.json")
        return weights.parent
    if index := fetch(HF_INDEX):
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        for shard in sorted(shards):
            if fetch(shard) is None:
                raise (
                    _not_cached(repo_id, cache, offline)
                    if not_cached
                    else FileNotFoundError(f"{repo_id}: shard {shard} missing")
                )
        fetch("config.json")
        return index.parent
    # a repo we know nothing about may hold a single .pt; listing it online needs a working connection
    if official is None and (offline or not not_cached):
        found = _single_torch_file(
            repo_id, cache_dir=cache_dir, revision=revision, offline=offline, fetch=fetch
        )
        if found:
            return found
    if not_cached:
        raise _not_cached(repo_id, cache, offline)
    raise FileNotFoundError(
        f"Hub repo {repo_id!r} has no SAM 2 checkpoint ({official or 'a .pt file'} or {HF_WEIGHTS})"
    )


def _single_torch_file(
    repo_id: str,
    *,
    cache_dir: str | Path | None,
    revision: str | None,
    offline: bool,
    fetch: Callable[[str], Path | None],
) -> Path | None:
    """The one ``.pt``/``.pth`` of a repo we have no config for (listed online, or found in the cache)."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        if offline:
            folder = Path(
                snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
            )
            names = [p.name for p in folder.iterdir()]
        else:
            names = HfApi().list_repo_files(repo_id, revision=revision)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError):
        return None
    torch_files = sorted(n for n in names if Path(n).suffix in {".pt", ".pth"})
    if len(torch_files) > 1:
        raise ValueError(
            f"Hub repo {repo_id!r} holds several checkpoints ({', '.join(torch_files)}); download the one "
            f"you want (`hf download {repo_id} <file>`) and pass its local path"
        )
    return fetch(torch_files[0]) if torch_files else None


def _not_cached(repo_id: str, cache: Path, offline: bool) -> CheckpointNotCachedError:
    why = (
        "downloads are disabled (HF_HUB_OFFLINE=1 or local_files_only=True)"
        if offline
        else "it could not be downloaded (no connection to the Hub?)"
    )
    return CheckpointNotCachedError(
        f"{repo_id!r} is not in the Hugging Face cache ({cache}) and {why}. On a machine with internet "
        f"access run `hf download {repo_id}` (older clients: `huggingface-cli download {repo_id}`) and copy "
        f"the cache to {cache} (or point HF_HUB_CACHE at it), or pass the path of a local checkpoint file "
        "or folder."
    )
