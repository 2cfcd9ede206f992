"""A port where nothing listens (a Hugging Face hub out of reach), for the first-run tests; the
``empty_cache`` and ``no_connection`` fixtures are in ``conftest.py``."""

from __future__ import annotations

import socket

__all__ = ["closed_port"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed
