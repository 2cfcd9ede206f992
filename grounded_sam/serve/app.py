"""The HTTP face of the Label Studio ML backend: ``/health``, ``/setup``, ``/predict``, ``/webhook``.

Built on Starlette (with uvicorn to serve it), not on the ``label-studio-ml`` package: its last
release on the index (1.0.9, January 2023) pins Flask 1.1.2, Jinja2 3.0.3 and werkzeug 2.0.2,
which would downgrade what Gradio and the rest of our environment use, while Starlette and uvicorn
are current and already installed with the app's dependencies (the ``[label-studio]`` extra names
them alone). The protocol is plain JSON over HTTP, so the backend logic
(:mod:`grounded_sam.serve.backend`) needs no framework at all.

Answers are JSON; a brush mask's RLE is a list of up to hundreds of thousands of byte values, so
``orjson`` writes them when it is installed (it comes with Gradio; ~10x faster than ``json``),
else the standard library does.

Security: the CLI binds 127.0.0.1 unless told otherwise; with ``token`` every route but
``/health`` wants ``Authorization: Bearer <token>``, or HTTP basic auth with the token as the
password (what Label Studio's "Use basic auth" setting for a backend sends), compared in
constant time.
"""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from grounded_sam.serve.backend import LabelStudioBackend
from grounded_sam.serve.label_config import LabelConfigError

__all__ = ["build_server"]

try:
    import orjson

    def _dumps(content: Any) -> bytes:
        return orjson.dumps(content)
except ImportError:  # optional: the [label-studio] extra needs only Starlette and uvicorn
    def _dumps(content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return _dumps(content)


def build_server(backend: LabelStudioBackend, token: str | None = None) -> Starlette:
    """The ASGI app around ``backend`` (serve it with uvicorn, or test it with a TestClient)."""

    def authorised(request: Request) -> bool:
        if not token:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        value = value.strip()
        if scheme.lower() == "basic":  # Label Studio's "basic auth" for a backend: any user, the token as password
            try:
                value = base64.b64decode(value, validate=True).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                return False
        elif scheme.lower() not in ("bearer", "token"):
            return False
        return hmac.compare_digest(value.encode(), token.encode())

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            raise _BadRequest("the request body is not JSON") from None
        if not isinstance(data, dict):
            raise _BadRequest("the request body must be a JSON object")
        return data

    def guarded(handler):
        async def endpoint(request: Request) -> JSONResponse:
            if not authorised(request):
                return _JSON({"status": "error", "errors": ["missing or wrong token"]}, status_code=401)
            try:
                return await handler(request)
            except _BadRequest as e:
                return _JSON({"status": "error", "errors": [str(e)]}, status_code=400)
            except LabelConfigError as e:
                return _JSON({"status": "error", "errors": e.problems}, status_code=400)
        return endpoint

    async def health(request: Request) -> JSONResponse:
        return _JSON({"status": "UP", "model_class": "GroundedSAM",
                             "model_version": backend.options.model_version})

    async def setup(request: Request) -> JSONResponse:
        data = await body(request)
        return _JSON(await run_in_threadpool(backend.setup, data))

    async def predict(request: Request) -> JSONResponse:
        data = await body(request)
        return _JSON(await run_in_threadpool(backend.predict, data))

    async def webhook(request: Request) -> JSONResponse:
        data = await body(request)  # training events: nothing is trained here; acknowledged
        return _JSON({"status": "ok", "action": data.get("action")}, status_code=201)

    return Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        Route("/", health, methods=["GET"]),
        Route("/setup", guarded(setup), methods=["POST"]),
        Route("/predict", guarded(predict), methods=["POST"]),
        Route("/webhook", guarded(webhook), methods=["POST"]),
    ])


class _BadRequest(ValueError):
    pass
