"""Serve the pipeline to other tools: Label Studio's ML backend protocol (``grounded-sam serve label-studio``).

Needs the ``[label-studio]`` extra (Starlette, uvicorn). :func:`build_server` gives the ASGI app.
"""

from grounded_sam.serve.backend import BackendOptions, EmbeddingCache, LabelStudioBackend
from grounded_sam.serve.images import ImageRefused
from grounded_sam.serve.label_config import LabelConfig, LabelConfigError, parse_label_config
from grounded_sam.serve.results import brush_rle

__all__ = ["BackendOptions", "EmbeddingCache", "ImageRefused", "LabelStudioBackend", "LabelConfig",
           "LabelConfigError", "parse_label_config", "brush_rle", "build_server"]


def build_server(*args, **kwargs):  # imports Starlette only when a server is built
    from grounded_sam.serve.app import build_server as build

    return build(*args, **kwargs)
