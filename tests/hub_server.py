"""A stand-in for the Hugging Face hub on 127.0.0.1, for download tests (no network).

:class:`LocalHub` serves local folders as model repos under the hub's URL scheme, with the
headers ``huggingface_hub`` checks (read from its ``file_download.py`` / ``hf_api.py``):

- ``GET /api/models/{repo}/revision/{rev}`` (and ``/api/models/{repo}``): the repo's info, ``sha``
  and ``siblings`` (``HfApi.model_info`` / ``repo_info``);
- ``GET /api/models/{repo}/tree/{rev}``: the file list (``list_repo_tree``, one page);
- ``HEAD`` / ``GET /{repo}/resolve/{rev}/{path}``: the file, with ``ETag`` (its git-style sha1),
  ``X-Repo-Commit``, ``Content-Length``; a missing file or repo answers 404 with the
  ``X-Error-Code`` the client maps to ``EntryNotFound`` / ``RepoNotFound``.

Point a process at it with ``HF_ENDPOINT=hub.url``. It runs in a thread; ``close()`` stops it.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LocalHub:
    """Serve ``{repo_id: folder}`` as hub model repos at ``self.url`` until :meth:`close`."""

    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = {repo: Path(folder) for repo, folder in repos.items()}
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                hub._answer(self, body=False)

            def do_GET(self) -> None:  # noqa: N802
                hub._answer(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LocalHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ routing
    def _files(self, repo: str) -> list[str]:
        root = self.repos[repo]
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(handler.path).path)
        self.requests.append(f"{handler.command} {path}")
        info = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        tree = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        repo = (info or tree or resolve).group(1) if (info or tree or resolve) else None
        if repo is None or repo not in self.repos:
            return self._send(handler, 404, b'{"error": "Repository not found"}', body,
                              {"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"})
        if info:
            data = {"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                    "siblings": [{"rfilename": f} for f in self._files(repo)]}
            return self._json(handler, data, body)
        if tree:
            entries = []
            for f in self._files(repo):
                content = (self.repos[repo] / f).read_bytes()
                entries.append({"type": "file", "path": f, "size": len(content), "oid": _git_sha1(content)})
            return self._json(handler, entries, body)
        file = self.repos[repo] / resolve.group(3)
        if not file.is_file():
            return self._send(handler, 404, b'{"error": "Entry not found"}', body,
                              {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT, "Content-Type": "application/json"})
        content = file.read_bytes()
        self._send(handler, 200, content, body, {"ETag": f'"{_git_sha1(content)}"', "X-Repo-Commit": COMMIT,
                                                 "Content-Type": "application/octet-stream"})

    def _json(self, handler: BaseHTTPRequestHandler, data: object, body: bool) -> None:
        self._send(handler, 200, json.dumps(data).encode(), body,
                   {"Content-Type": "application/json", "X-Repo-Commit": COMMIT})

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, content: bytes, body: bool, headers: dict[str, str]) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        if body:
            handler.wfile.write(content)
