"""Models from the Hugging Face Hub: are they cached, can the hub be reached, and one error that says what to do.

Every loader that takes a hub id (the pipeline, :func:`detectors.load_detector`,
:func:`segmenter.build_sam` / :func:`segmenter.from_pretrained`) describes what it needs as
:class:`HubModel` rows and calls :func:`require_models`, which answers before any model loads:

- every model cached: go on; when the hub does not answer (one HEAD request, at most
  ``PROBE_TIMEOUT_S``; none with ``HF_HUB_OFFLINE=1``), load in :func:`offline_mode`, so that the
  loaders read the cache at once instead of retrying the connection for minutes;
- a model missing and the hub unreachable (or ``HF_HUB_OFFLINE=1``): :class:`MissingModelsError`,
  naming every model, whether it is cached, and the commands that fetch it;
- a model missing and the hub reachable: go on (the loader downloads it).

"Cached" is read through ``huggingface_hub.try_to_load_from_cache``: what the loaders find offline.
Nothing here imports torch or PIL.
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PROBE_TIMEOUT_S",
    "HubModel",
    "MissingModelsError",
    "describe_missing",
    "downloads_disabled",
    "hub_endpoint",
    "looks_like_hub_id",
    "offline_mode",
    "offline_reason",
    "require_models",
]

PROBE_TIMEOUT_S = 2.0  # how long the hub has to answer the probe
_PROBE_TTL_S = 30.0  # a probe's answer is reused this long (several loaders in one constructor ask once)
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_probes: dict[str, tuple[float, bool]] = {}  # endpoint -> (monotonic time, reachable)
_offline_lock = threading.RLock()


@dataclass(frozen=True)
class HubModel:
    """One model a loader reads: a hub repo (``local=False``) or a local file / folder."""

    role: str  # "detector", "segmenter", ...
    name: str  # the family or config name
    source: str  # hub id, or a local path
    local: bool = False
    checkpoint_file: str | None = None  # the one file the loader reads from the repo, if known

    def is_cached(self, cache_dir: str | Path | None = None) -> bool:
        """Whether the loader finds this model without a connection: a local path that exists, or a hub
        repo holding ``checkpoint_file``, or ``config.json`` and weights, in the Hugging Face cache."""
        if self.local:
            return Path(self.source).exists()
        from huggingface_hub import try_to_load_from_cache

        def cached(filename: str) -> bool:
            return isinstance(try_to_load_from_cache(self.source, filename, cache_dir=cache_dir), str)

        if self.checkpoint_file and cached(self.checkpoint_file):
            return True
        return cached("config.json") and any(cached(f) for f in _WEIGHTS)

    def fetch_command(self) -> str:
        """The shell command that puts this model into the Hugging Face cache on a connected machine."""
        if self.local:
            return f"(local {self.role}: {self.source})"
        return f"hf download {self.source}" + (f" {self.checkpoint_file}" if self.checkpoint_file else "")


class MissingModelsError(FileNotFoundError):
    """A model is neither on this machine nor downloadable from here; the message lists every model
    needed, whether it is cached, and the commands that fetch them. ``models``: those rows. An
    ``OSError``, as the loaders' own errors for missing weights are."""

    def __init__(self, message: str, models: Sequence[HubModel] = ()) -> None:
        super().__init__(message)
        self.models = tuple(models)


def looks_like_hub_id(text: str) -> bool:
    """Whether ``text`` reads as a hub repo id (``org/name``) rather than a local file or folder."""
    return (
        text.count("/") == 1
        and not text.startswith((".", "/", "~"))
        and "\\" not in text
        and Path(text).suffix not in {".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".json"}
        and not re.match(r"^[A-Za-z]:", text)
    )


def hub_endpoint() -> str:
    """The hub the downloads go to (``HF_ENDPOINT``, else https://huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def downloads_disabled() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (in the environment or in ``huggingface_hub`` at run time)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return env or bool(constants.HF_HUB_OFFLINE)


def offline_reason(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why downloads cannot happen from here (``None``: they can): ``HF_HUB_OFFLINE`` set, or no answer
    from the hub endpoint within ``timeout`` seconds (one HEAD request, proxies honoured; its answer is
    reused for a few seconds)."""
    if downloads_disabled():
        return "downloads are disabled (HF_HUB_OFFLINE=1)"
    endpoint = hub_endpoint()
    seen = _probes.get(endpoint)
    if seen is None or time.monotonic() - seen[0] > _PROBE_TTL_S:
        seen = _probes[endpoint] = (time.monotonic(), _probe(endpoint, timeout))
    return None if seen[1] else f"there is no connection to the hub ({endpoint})"


def _probe(endpoint: str, timeout: float) -> bool:
    answer: list[bool] = []

    def head() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
            answer.append(True)
        except urllib.error.HTTPError:  # the server answered (even 4xx/5xx): it is reachable
            answer.append(True)
        except (OSError, ValueError):
            answer.append(False)

    thread = threading.Thread(target=head, daemon=True)  # a slow DNS lookup cannot hold us longer
    thread.start()
    thread.join(timeout + 0.5)
    return bool(answer and answer[0])


def describe_missing(
    models: Sequence[HubModel],
    why: str,
    cache_dir: str | Path | None = None,
    *,
    headline: str = "the models this needs are not all on this machine, and ",
    also: Sequence[str] = (),
    local: str | None = None,
) -> str:
    """The message of :class:`MissingModelsError`: every model (role, name, hub id, cached or not),
    the ``hf download`` commands of those missing, ``also`` (other ways to fetch them) and ``local``
    (how to load local files instead)."""
    from huggingface_hub import constants

    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    lines = [f"{headline}{why}:"]
    missing = []
    for m in models:
        cached = m.is_cached(cache_dir)
        lines.append(f"  {m.role:<9} {m.name:<22} {m.source:<40} {'cached' if cached else 'NOT cached'}")
        if not cached and not m.local:
            missing.append(m)
    lines.append("On a machine with internet access, fetch them:" if len(missing) > 1 else
                 "On a machine with internet access, fetch it:")
    lines += [f"  {m.fetch_command()}" for m in missing] + [f"  {line}" for line in also]
    lines.append(f"then copy that machine's Hugging Face cache to {cache} (or point HF_HOME / HF_HUB_CACHE at a copy).")
    if local:
        lines.append(local)
    return "\n".join(lines)


@contextmanager
def offline_mode(enabled: bool = True) -> Iterator[None]:
    """Run the body with ``huggingface_hub``'s offline mode on (restored after; nothing when not
    ``enabled``): loaders read the cache and send no request. Process-wide while it lasts."""
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    with _offline_lock:
        before = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = before


def require_models(
    models: Sequence[HubModel],
    cache_dir: str | Path | None = None,
    *,
    headline: str = "the models this needs are not all on this machine, and ",
    also: Sequence[str] = (),
    local: str | None = None,
    error: type[MissingModelsError] = MissingModelsError,
) -> bool:
    """Check before loading ``models`` (module docs): raise ``error`` (a :class:`MissingModelsError`) when
    one is neither cached nor downloadable. Returns whether to load them in :func:`offline_mode` (all
    cached, the hub out of reach). ``headline``, ``also``, ``local``: the message's words (:func:`describe_missing`)."""
    remote = [m for m in models if not m.local]
    if not remote or downloads_disabled() and all(m.is_cached(cache_dir) for m in remote):
        return False  # nothing to ask the hub
    why = offline_reason()
    if why is None:
        return False
    if not all(m.is_cached(cache_dir) for m in remote):
        raise error(describe_missing(models, why, cache_dir, headline=headline, also=also, local=local), models)
    return True
