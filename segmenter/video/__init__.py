"""Video tracking: ``VideoPredictor`` and the parts of one tracking step.

- :mod:`~segmenter.video.predictor` — the public verbs (offline and streaming sessions).
- :mod:`~segmenter.video.tracking` — one SAM 2 tracking step for a batch of objects.
- :mod:`~segmenter.video.memory_bank` / :mod:`~segmenter.video.state` — per-object memory, session state.
- :mod:`~segmenter.video.prompts` / :mod:`~segmenter.video.outputs` — prompt checks, output resizing.
- :mod:`~segmenter.video.frames` / :mod:`~segmenter.video.decoder` — lazy frame sources, video decoding.
"""

from typing import Any

__all__ = ["VideoPredictor"]


def __getattr__(name: str) -> Any:
    # loaded on first use: the torch-free parts (memory_bank) import without torch
    if name == "VideoPredictor":
        from segmenter.video.predictor import VideoPredictor

        globals()[name] = VideoPredictor
        return VideoPredictor
    raise AttributeError(f"module 'segmenter.video' has no attribute {name!r}")
