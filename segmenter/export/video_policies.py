"""Memory policies of the ONNX Runtime video predictor (numpy, no torch).

The frame selection is the PyTorch predictor's own (:func:`segmenter.video.memory_bank.select_memory`,
:func:`~segmenter.video.memory_bank.usable_frames`, :func:`~segmenter.video.memory_bank.recent_memories`);
only what touches tensors (recording a frame's chosen IoU and score) is written here for numpy.
Policies that choose among candidate masks themselves (``samurai``, ``distractor``) are not
available in this runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from segmenter.video.memory_bank import (
    FrameEntry,
    FrameStats,
    MemorySelection,
    ObjectMemory,
    select_memory,
    select_usable_memory,
    usable_frames,
)

__all__ = ["NumpyFifoPolicy", "NumpyQualityPolicy", "SelectionContext", "numpy_policy"]


@dataclass(frozen=True)
class SelectionContext:
    """The model constants memory selection needs (from the export's manifest)."""

    num_maskmem: int
    max_obj_ptrs: int
    signed_ptr_pos: bool


class NumpyFifoPolicy:
    """SAM 2's memory (``fifo``): prompted frames + the last ``num_maskmem - 1`` frames, best-IoU mask."""

    name = "fifo"
    present_threshold = 0.0

    def select(
        self, obj: ObjectMemory, frame_idx: int, reverse: bool, num_frames: int | None, ctx: SelectionContext
    ) -> MemorySelection:
        return select_memory(
            obj, frame_idx, reverse, num_frames, ctx.num_maskmem, ctx.max_obj_ptrs, ctx.signed_ptr_pos
        )

    def commit(self, entries: Sequence[FrameEntry], ious: Sequence[float], scores: Sequence[float]) -> None:
        """Record the chosen mask's predicted IoU and object score of each entry (nothing for fifo)."""

    def retain(self, obj: ObjectMemory, frame_idx: int, reverse: bool, ctx: SelectionContext) -> set[int]:
        return set()


class NumpyQualityPolicy(NumpyFifoPolicy):
    """``quality``: memory frames where the chosen mask's IoU > ``iou_threshold`` and the object
    score > ``obj_score_threshold``, ``t - 1`` always (see :mod:`segmenter.video.policies.quality`)."""

    name = "quality"

    def __init__(self, iou_threshold: float = 0.5, obj_score_threshold: float = 0.0) -> None:
        self.iou_threshold = float(iou_threshold)
        self.obj_score_threshold = float(obj_score_threshold)

    def select(
        self, obj: ObjectMemory, frame_idx: int, reverse: bool, num_frames: int | None, ctx: SelectionContext
    ) -> MemorySelection:
        return select_usable_memory(
            obj, frame_idx, reverse, num_frames, ctx.num_maskmem, ctx.max_obj_ptrs, ctx.signed_ptr_pos
        )

    def commit(self, entries: Sequence[FrameEntry], ious: Sequence[float], scores: Sequence[float]) -> None:
        for entry, iou, score in zip(entries, ious, scores):
            stats = FrameStats(iou=float(iou), score=float(score))
            stats.usable = stats.iou > self.iou_threshold and stats.score > self.obj_score_threshold
            entry.stats = stats

    def retain(self, obj: ObjectMemory, frame_idx: int, reverse: bool, ctx: SelectionContext) -> set[int]:
        nxt = frame_idx + (-1 if reverse else 1)
        return set(usable_frames(obj, nxt, reverse, ctx.num_maskmem - 1))

    def __repr__(self) -> str:
        return f"NumpyQualityPolicy(iou_threshold={self.iou_threshold}, obj_score_threshold={self.obj_score_threshold})"


def numpy_policy(memory: str | NumpyFifoPolicy) -> NumpyFifoPolicy:
    """A policy from its name (``"fifo"``, ``"quality"``) or a policy object as is."""
    if isinstance(memory, NumpyFifoPolicy):
        return memory
    if memory == "fifo" or memory is None:
        return NumpyFifoPolicy()
    if memory == "quality":
        return NumpyQualityPolicy()
    raise ValueError(
        f"the ONNX Runtime video predictor supports the memory policies 'fifo' and 'quality', got {memory!r} "
        "(samurai / distractor choose masks with PyTorch-side state: use segmenter.VideoPredictor)"
    )
