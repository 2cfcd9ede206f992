"""Where the ML backend may read a task's image from, and how.

- An ``http(s)`` URL on the Label Studio host the project was set up with, or a path on it such as
  ``/data/upload/...`` (joined to the host). The project's access token goes along, and redirects
  are followed on that host only: the token never leaves it.
- A cloud URI (``s3://``, ``gs://``, ``azure-blob://``), resolved through Label Studio the way its
  own tools do: ``GET <host>/tasks/<task id>/resolve/?fileuri=<base64 of the URI>`` with the token.
  Label Studio then streams the file itself, or redirects to a presigned URL of the bucket, which
  is followed without the token (the signature is in the URL). Label Studio answers 404 when no
  cloud storage of the project holds the URI: the error says so.
- A local path (or ``file://`` URL) inside one of the folders the server was given.

Anything else is refused with :class:`ImageRefused`.

Tokens: a legacy API token (40 hex digits; what Label Studio hands a backend at ``/setup``) goes as
``Authorization: Token <key>``. A personal access token (a JWT refresh token, Label Studio 1.23's
default kind) is exchanged at ``<host>/api/token/refresh/`` for a short-lived access token, sent as
``Authorization: Bearer <access>`` and reused until a minute before it expires (:class:`AccessTokens`).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CLOUD_SCHEMES", "AccessTokens", "ImageRefused", "ImageSource", "fetch_file", "read_image"]

CLOUD_SCHEMES = ("s3", "gs", "azure-blob")


class ImageRefused(ValueError):
    """A task's image is not one this server may read, or could not be read."""


class AccessTokens:
    """Access tokens got for personal access tokens, per (host, token), until they expire."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}  # -> (access token, expiry, epoch s)

    def authorization(self, host: str, token: str, timeout_s: float) -> str:
        """The ``Authorization`` header value for ``token`` on ``host``."""
        if not _is_jwt(token):
            return f"Token {token}"
        with self._lock:
            access, expiry = self._tokens.get((host, token), ("", 0.0))
        if time.time() > expiry - 60:
            access = self._refresh(host, token, timeout_s)
            with self._lock:
                self._tokens[(host, token)] = (access, _expiry(access))
        return f"Bearer {access}"

    @staticmethod
    def _refresh(host: str, token: str, timeout_s: float) -> str:
        request = urllib.request.Request(f"{host.rstrip('/')}/api/token/refresh/", method="POST",
                                         data=json.dumps({"refresh": token}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # the configured host only
                return json.loads(response.read())["access"]
        except urllib.error.HTTPError as e:
            raise ImageRefused(f"Label Studio at {host} refused the personal access token (HTTP {e.code} from "
                               "/api/token/refresh/): give a current one with --label-studio-token") from None
        except urllib.error.URLError as e:
            raise ImageRefused(f"Label Studio at {host} is not reachable ({e.reason})") from None
        except (ValueError, KeyError):
            raise ImageRefused(f"Label Studio at {host} gave no access token for the personal access token") from None


def _is_jwt(token: str) -> bool:
    parts = token.split(".")
    return len(parts) == 3 and all(parts)


def _expiry(jwt: str) -> float:
    """The ``exp`` claim of a JWT (not verified: only to know when to ask again); now if unreadable."""
    try:
        payload = jwt.split(".")[1]
        return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return time.time()


@dataclass(frozen=True)
class ImageSource:
    """Where images may come from: the Label Studio ``host`` (with its ``token``) and ``local_roots``;
    ``tokens`` turns a personal access token into access tokens (shared, so they are reused)."""

    host: str | None
    token: str | None
    local_roots: Sequence[Path] = ()
    max_mb: float = 64.0
    timeout_s: float = 30.0
    tokens: AccessTokens | None = None


def read_image(value: str, task_id: object, source: ImageSource) -> np.ndarray:
    """The image a task names (``value``: its URL, cloud URI or path) as an RGB array."""
    from gsam_runtime.images import load_image, load_image_bytes

    data = fetch_file(value, task_id, source)
    return load_image(data) if isinstance(data, Path) else load_image_bytes(data, name=value)


def fetch_file(value: str, task_id: object, source: ImageSource) -> bytes | Path:
    """The file a task names (an image or a video): its contents when it is on the Label Studio host or
    in its cloud storage, its resolved path when it is local (inside ``source.local_roots``)."""
    parsed = urllib.parse.urlparse(value)
    if parsed.scheme in CLOUD_SCHEMES:
        return _resolve_cloud(value, task_id, source)
    if parsed.scheme in ("http", "https") or value.startswith("/data/"):
        host = _host(value, source)
        url = urllib.parse.urljoin(host.rstrip("/") + "/", value)
        if _origin(url) != _origin(host):
            raise ImageRefused(f"{value!r} is not on the Label Studio host {host}")
        return _get(url, value, source, elsewhere=False)
    if parsed.scheme not in ("", "file"):
        raise ImageRefused(f"{value!r}: only http(s) URLs on the Label Studio host, {', '.join(s + '://' for s in CLOUD_SCHEMES)} "
                           "URIs of its cloud storage, or local paths are read")
    path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else value).resolve()
    if not any(path.is_relative_to(Path(root).resolve()) for root in source.local_roots):
        raise ImageRefused(f"{value!r} is outside the folders this server may read (--local-root)")
    return path


def _host(value: str, source: ImageSource) -> str:
    if not source.host:
        raise ImageRefused(f"{value!r}: no Label Studio host is known to fetch it from (give --label-studio-url)")
    return source.host


def _resolve_cloud(uri: str, task_id: object, source: ImageSource) -> bytes:
    host = _host(uri, source)
    if task_id is None:
        raise ImageRefused(f"{uri!r}: Label Studio resolves cloud URIs per task, and this task has no id")
    fileuri = base64.urlsafe_b64encode(uri.encode()).decode()
    url = f"{host.rstrip('/')}/tasks/{urllib.parse.quote(str(task_id))}/resolve/?fileuri={fileuri}"
    try:
        return _get(url, uri, source, elsewhere=True)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise ImageRefused(
                f"{uri!r}: Label Studio at {host} could not resolve it (HTTP 404 from /tasks/{task_id}/resolve/): "
                "connect the bucket to the project as cloud storage in Label Studio (Settings > Cloud Storage)"
            ) from None
        if e.code in (401, 403):
            raise ImageRefused(f"{uri!r}: Label Studio at {host} refused the access token (HTTP {e.code}) "
                               "when resolving it; give --label-studio-token") from None
        raise ImageRefused(f"{uri!r}: resolving it through Label Studio at {host} failed: HTTP {e.code}") from None


def _get(url: str, name: str, source: ImageSource, elsewhere: bool) -> bytes:
    """GET ``url`` on the Label Studio host with its token; ``elsewhere``: a redirect off the host
    (a presigned URL) is followed without the token, else refused."""
    request = urllib.request.Request(url)
    if source.token:
        tokens = source.tokens or AccessTokens()
        request.add_header("Authorization", tokens.authorization(_host(name, source), source.token, source.timeout_s))
    limit = int(source.max_mb * 2**20)
    opener = urllib.request.build_opener(_Redirects(_origin(source.host or url), elsewhere))
    try:
        with opener.open(request, timeout=source.timeout_s) as response:
            data = response.read(limit + 1)
    except urllib.error.URLError as e:
        if isinstance(e, urllib.error.HTTPError):
            raise
        raise ImageRefused(f"{name!r}: Label Studio at {source.host} is not reachable ({e.reason})") from None
    if len(data) > limit:
        raise ImageRefused(f"{name!r} is larger than {source.max_mb} MB")
    return data


def _origin(url: str) -> tuple[str, str]:
    parsed = urllib.parse.urlparse(url)
    return parsed.scheme, parsed.netloc.lower()


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects on the Label Studio host keep the token; one elsewhere is refused, or with
    ``elsewhere`` (a presigned URL of a bucket) followed without the token."""

    def __init__(self, origin: tuple[str, str], elsewhere: bool) -> None:
        self.origin = origin
        self.elsewhere = elsewhere

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
        if _origin(newurl) == self.origin:
            return super().redirect_request(req, fp, code, msg, headers, newurl)
        if not self.elsewhere:
            raise ImageRefused(f"{req.full_url!r} redirects off the Label Studio host, to {newurl!r}")
        if urllib.parse.urlparse(newurl).scheme not in ("http", "https"):
            raise ImageRefused(f"{req.full_url!r} redirects to {newurl!r}, which is not http(s)")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.remove_header("Authorization")  # the token stays on the Label Studio host
        return new
