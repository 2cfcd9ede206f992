"""The memory-policy interface and SAM 2's own policy (``fifo``).

A policy decides, for each object on each tracked frame, which past frames its memory attention
reads (:meth:`MemoryPolicy.select`), which of the decoder's candidate masks becomes the output
(:meth:`MemoryPolicy.choose`, vectorised over the objects that use the policy), what it records
about the frame afterwards (:meth:`MemoryPolicy.commit`) and which entries must survive the
bounded state's pruning (:meth:`MemoryPolicy.retain`). Everything a policy remembers lives in the
object (``ObjectMemory.policy_state``, ``FrameEntry.stats``), never on the policy or the model,
so one policy object serves any number of objects and sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from segmenter.video.memory_bank import FrameEntry, MemorySelection, ObjectMemory, select_memory

__all__ = ["Candidates", "MemoryContext", "MemoryPolicy", "FifoPolicy"]


@dataclass
class MemoryContext:
    """The model constants memory selection needs."""

    num_maskmem: int
    max_obj_ptrs: int
    signed_ptr_pos: bool


@dataclass
class Candidates:
    """The SAM heads' outputs for the rows (objects) one policy chooses for."""

    low: torch.Tensor  # (R, M, 4h, 4w) low-res logits, absent objects already set to NO_OBJ_SCORE
    high: torch.Tensor  # (R, M, S, S) the same upsampled to the model's input size
    ious: torch.Tensor  # (R, M) predicted IoUs
    scores: torch.Tensor  # (R, 1) object score logits


class MemoryPolicy:
    """SAM 2's behaviour; subclasses override what they change.

    ``present_threshold``: an object is present (its masks kept, its pointer used) when its
    score logit is above this (SAM 2: 0).
    """

    name = "fifo"
    present_threshold = 0.0
    records_stats = False  # whether commit() needs each frame's scores (one host sync per frame)

    def new_state(self) -> Any:
        return None

    def state(self, obj: ObjectMemory) -> Any:
        if obj.policy_state is None:
            obj.policy_state = self.new_state()
        return obj.policy_state

    def select(
        self, obj: ObjectMemory, frame_idx: int, reverse: bool, num_frames: int | None, ctx: MemoryContext
    ) -> MemorySelection:
        """The memories and pointers ``obj`` attends to on ``frame_idx``."""
        return select_memory(
            obj, frame_idx, reverse, num_frames, ctx.num_maskmem, ctx.max_obj_ptrs, ctx.signed_ptr_pos
        )

    def choose(self, objs: Sequence[ObjectMemory], cand: Candidates, frame_idx: int) -> torch.Tensor:
        """(R,) index of the output mask among each row's M candidates (SAM 2: the best predicted IoU)."""
        return cand.ious.argmax(dim=-1)

    def commit(
        self,
        objs: Sequence[ObjectMemory],
        entries: Sequence[FrameEntry],
        frame_idx: int,
        reverse: bool,
        cand: Candidates,
        best: torch.Tensor,  # (R,)
    ) -> None:
        """Record what the policy needs about the frame just tracked (entries are stored already)."""

    def retain(self, obj: ObjectMemory, frame_idx: int, reverse: bool, ctx: MemoryContext) -> set[int]:
        """Frames whose entries later selections may read beyond SAM 2's window (bounded state)."""
        return set()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FifoPolicy(MemoryPolicy):
    """SAM 2's memory: the prompted frames and the last ``num_maskmem - 1`` frames, best-IoU masks."""
