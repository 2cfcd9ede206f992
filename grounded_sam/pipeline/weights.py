"""What weights a model holds, by content: the identity a labeling job's fingerprint records.

- A Hugging Face hub id is identified by the commit of the snapshot in the local cache that the
  model was loaded from (``refs/<revision>``, ``main`` by default): ``hub:<repo>@<commit>``.
- A local file is identified by its SHA-256, a local folder (a ``save_pretrained`` folder, a
  snapshot) by the SHA-256 of its files' names and hashes (hidden entries such as ``.cache/``
  left out): ``sha256:<hex>``. Neither depends on where the file lies, so the same weights copied
  elsewhere have the same identity.
- A model built in memory (random weights, weights changed after loading) is identified by its
  state dict: names, dtypes, shapes and bytes (``tensors:<hex>``).

File hashes are cached by resolved path, size and ``mtime_ns`` in
``<cache>/weight-hashes.json`` (:func:`cache_dir`), so a rerun does not read gigabytes again;
a file that changed in place has another size or mtime and is hashed anew.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["weights_id", "file_sha256", "folder_sha256", "module_weights_id", "hub_commit", "cache_dir"]

_CHUNK = 1 << 22  # 4 MiB reads
_CACHE_FILE = "weight-hashes.json"


def cache_dir() -> Path:
    """``$GROUNDED_SAM_CACHE``, else ``$XDG_CACHE_HOME/grounded-sam``, else ``~/.cache/grounded-sam``."""
    explicit = os.environ.get("GROUNDED_SAM_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "grounded-sam"


def _load_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(path: Path, data: dict[str, Any]) -> None:
    """Best effort: a cache that cannot be written only costs a re-hash later."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 (hex) of a file's bytes, cached by resolved path + size + mtime_ns."""
    real = Path(path).resolve()
    st = real.stat()
    key = str(real)
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    cache_path = cache_dir() / _CACHE_FILE
    cache = _load_cache(cache_path)
    hit = cache.get(key)
    if isinstance(hit, dict) and all(hit.get(k) == v for k, v in stamp.items()) and isinstance(hit.get("sha256"), str):
        return hit["sha256"]
    digest = hashlib.sha256()
    with open(real, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    hexdigest = digest.hexdigest()
    cache = _load_cache(cache_path)  # another process may have added entries meanwhile
    cache[key] = {**stamp, "sha256": hexdigest}
    _save_cache(cache_path, cache)
    return hexdigest


def folder_sha256(folder: str | os.PathLike) -> str:
    """The SHA-256 of a folder's files (relative POSIX name and content hash, sorted), hidden
    files and folders left out. Links are followed (a hub snapshot links to its blobs)."""
    root = Path(folder)
    lines = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.is_file():
                lines.append(f"{path.relative_to(root).as_posix()}\0{file_sha256(path)}\n")
    if not lines:
        raise ValueError(f"weights folder {str(root)!r} holds no files")
    return hashlib.sha256("".join(sorted(lines)).encode("utf-8")).hexdigest()


def hub_commit(repo_id: str, revision: str | None = None, cache: str | os.PathLike | None = None) -> str | None:
    """The commit that ``revision`` (default ``main``) of a model repo points to in the local
    hub cache (what an offline load uses), or ``None`` when the repo is not cached."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    folder = Path(cache or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    rev = revision or "main"
    if len(rev) == 40 and all(c in "0123456789abcdef" for c in rev) and (folder / "snapshots" / rev).is_dir():
        return rev
    try:
        commit = (folder / "refs" / rev).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return commit or None


def weights_id(source: str | os.PathLike, revision: str | None = None) -> str:
    """The identity of the weights at ``source``: a local file or folder, or a hub id (module docs)."""
    path = Path(source).expanduser()
    if path.is_file():
        return f"sha256:{file_sha256(path)}"
    if path.is_dir():
        return f"sha256:{folder_sha256(path)}"
    repo = str(source)
    commit = hub_commit(repo, revision)
    return f"hub:{repo}@{commit or 'uncached'}"


def module_weights_id(module: Any) -> str:
    """The identity of a torch module's weights in memory: its state dict's names, dtypes,
    shapes and bytes (module docs)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"tensors:{digest.hexdigest()}"
