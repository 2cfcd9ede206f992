"""Per-object memory of SAM 2 video tracking: what each object keeps, and what a frame reads.

Every object has its own prompts and its own per-frame outputs, split like the reference's
``output_dict_per_obj`` into conditioning frames (prompted) and non-conditioning frames
(tracked), plus the not-yet-consolidated outputs of prompts (``temp_*``). Dictionaries keep
insertion order, which decides the order of memory tokens exactly as in the reference.

:func:`select_memory` reproduces ``SAM2Base._prepare_memory_conditioned_features``'s choice
of memory frames and object pointers. :func:`prune` drops entries no later step can read
(see :class:`RetentionPolicy`), so the state does not grow with the length of the video.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # arrays of any library: the ONNX Runtime predictor stores numpy arrays here
    import torch

__all__ = [
    "FrameEntry",
    "FrameStats",
    "TrackedFrames",
    "ObjectMemory",
    "MemorySelection",
    "RetentionPolicy",
    "select_memory",
    "usable_frames",
    "recent_memories",
    "select_usable_memory",
    "pending_prompt_entries",
    "has_cond_prompt",
    "new_object_ids",
    "forget_object",
    "prune",
]


@dataclass
class FrameStats:
    """What memory policies read about one tracked frame (host numbers: no device sync later)."""

    iou: float  # predicted IoU of the chosen candidate mask
    score: float  # object score logit
    kf_iou: float | None = None  # box IoU of the chosen mask with the motion prediction (samurai)
    area: int = 0  # positive pixels of the stored low-res mask
    usable: bool = True  # the policy's verdict: may serve as a memory frame


@dataclass
class FrameEntry:
    """One object's compact output on one frame (the reference's ``compact_current_out``)."""

    obj_ptr: torch.Tensor  # (1, C) object pointer, kept on the compute device
    object_score_logits: torch.Tensor  # (1, 1)
    pred_masks: torch.Tensor | None  # (1, 1, h, w) low-res logits after hole filling; None once released
    maskmem: torch.Tensor | None = None  # (HW, mem_dim) bfloat16, sequence-first; None until encoded / released
    stats: FrameStats | None = None  # set by memory policies that read it (None under fifo)

    def release_masks(self) -> None:
        """Keep only what an object pointer needs."""
        self.pred_masks = None
        self.maskmem = None


class TrackedFrames:
    """frame index -> tracked in reverse? (the reference's ``frames_tracked_per_obj``).

    Stored as disjoint runs ``[start, end, reverse]`` so that a long video costs a few
    integers, not one entry per frame.
    """

    def __init__(self) -> None:
        self._runs: list[list[int]] = []  # sorted by start; [start, end (inclusive), reverse 0/1]

    def _find(self, t: int) -> int:  # index of the run containing t, or -1
        i = bisect.bisect_right(self._runs, t, key=lambda r: r[0]) - 1
        return i if i >= 0 and self._runs[i][1] >= t else -1

    def get(self, t: int) -> bool | None:
        i = self._find(t)
        return None if i < 0 else bool(self._runs[i][2])

    def __contains__(self, t: int) -> bool:
        return self._find(t) >= 0

    def discard(self, t: int) -> None:
        i = self._find(t)
        if i < 0:
            return
        start, end, rev = self._runs.pop(i)
        pieces = [[s, e, rev] for s, e in ((start, t - 1), (t + 1, end)) if s <= e]
        self._runs[i:i] = pieces

    def mark(self, t: int, reverse: bool) -> None:
        if self.get(t) is reverse:
            return
        self.discard(t)
        rev = int(reverse)
        i = bisect.bisect_right(self._runs, t, key=lambda r: r[0])
        left = self._runs[i - 1] if i > 0 and self._runs[i - 1][1] == t - 1 and self._runs[i - 1][2] == rev else None
        right = self._runs[i] if i < len(self._runs) and self._runs[i][0] == t + 1 and self._runs[i][2] == rev else None
        if left and right:
            left[1] = right[1]
            del self._runs[i]
        elif left:
            left[1] = t
        elif right:
            right[0] = t
        else:
            self._runs.insert(i, [t, t, rev])

    def clear(self) -> None:
        self._runs.clear()

    def __len__(self) -> int:
        return sum(e - s + 1 for s, e, _ in self._runs)


@dataclass
class ObjectMemory:
    """Prompts and outputs of one object."""

    obj_id: Hashable
    point_inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # (1,N,2), (1,N)
    mask_frames: set[int] = field(default_factory=set)  # frames with a mask prompt
    cond: dict[int, FrameEntry] = field(default_factory=dict)
    non_cond: dict[int, FrameEntry] = field(default_factory=dict)
    temp_cond: dict[int, FrameEntry] = field(default_factory=dict)
    temp_non_cond: dict[int, FrameEntry] = field(default_factory=dict)
    tracked: TrackedFrames = field(default_factory=TrackedFrames)
    policy: Any = None  # the object's memory policy (segmenter.video.policies); None: the predictor's
    policy_state: Any = None  # that policy's per-object state (motion filter, distractor memory, ...)

    def temp(self, is_cond: bool) -> dict[int, FrameEntry]:
        return self.temp_cond if is_cond else self.temp_non_cond

    def output_at(self, frame_idx: int, is_cond: bool) -> FrameEntry | None:
        """The newest output on a frame: prompt outputs first, then tracked ones."""
        for d in (self.temp(is_cond), self.cond, self.non_cond):
            out = d.get(frame_idx)
            if out is not None:
                return out
        return None

    def file_prompt_outputs(self) -> None:
        """Move the prompts' outputs (memories encoded) to the conditioning / tracked outputs."""
        for is_cond in (False, True):
            dest = self.cond if is_cond else self.non_cond
            temp = self.temp(is_cond)
            dest.update(temp)
            temp.clear()
        if not self.cond:
            raise RuntimeError(
                f"No input points or masks are provided for object id {self.obj_id!r}; please add inputs first."
            )
        for t in self.cond:
            self.non_cond.pop(t, None)

    def prompted_frames(self) -> set[int]:
        """Frames with clicks, a box or a mask of this object."""
        return set(self.point_inputs) | self.mask_frames

    def clear_prompts(self, frame_idx: int) -> None:
        """Drop the prompts and prompt outputs on a frame; a filed output there becomes a tracked one."""
        self.point_inputs.pop(frame_idx, None)
        self.mask_frames.discard(frame_idx)
        self.temp_cond.pop(frame_idx, None)
        self.temp_non_cond.pop(frame_idx, None)
        out = self.cond.pop(frame_idx, None)
        if out is not None:
            self.non_cond[frame_idx] = out
            self.tracked.discard(frame_idx)

    def clear(self) -> None:
        self.point_inputs.clear()
        self.mask_frames.clear()
        for d in (self.cond, self.non_cond, self.temp_cond, self.temp_non_cond):
            d.clear()
        self.tracked.clear()
        self.policy_state = None

    def num_entries(self) -> int:
        return len(self.cond) + len(self.non_cond) + len(self.temp_cond) + len(self.temp_non_cond)


@dataclass
class MemorySelection:
    """What one object attends to on one frame, in the reference's token order."""

    memories: list[tuple[int, FrameEntry]]  # (index into maskmem_tpos_enc, entry)
    pointers: list[tuple[int, torch.Tensor]]  # (temporal offset, (1, C) pointer)
    missing: int = 0  # frames the reference would read but that were released (bounded state)

    @property
    def layout(self) -> tuple[int, int]:
        """Objects with the same layout can share one memory-attention call."""
        return len(self.memories), len(self.pointers)


def select_memory(
    obj: ObjectMemory,
    frame_idx: int,
    reverse: bool,
    num_frames: int | None,
    num_maskmem: int,
    max_obj_ptrs: int,
    signed_ptr_pos: bool,
    recent: list[tuple[int, FrameEntry]] | None = None,
    extra_cond: dict[int, FrameEntry] | None = None,
    pointer_ok: Callable[[int, FrameEntry], bool] | None = None,
) -> MemorySelection:
    """Memory frames and pointers for ``obj`` on a frame it is tracked (not initially prompted) on.

    Every conditioning frame (t_pos 0), then the ``num_maskmem - 1`` previous frames in the
    tracking direction (oldest first); pointers of the conditioning frames not in the future,
    then of up to ``max_obj_ptrs - 1`` previous frames. Memory policies change the choice:
    ``recent`` replaces the previous frames ((temporal slot, entry), oldest first),
    ``extra_cond`` adds frames treated as conditioning ones (after the prompted frames) and
    ``pointer_ok`` filters the previous frames' pointers.
    """
    if not obj.cond:
        raise RuntimeError(
            f"object {obj.obj_id!r} has no prompted (conditioning) frame to track from; "
            "add points, a box or a mask first"
        )
    step = -1 if reverse else 1
    missing = 0
    cond = obj.cond if not extra_cond else {**obj.cond, **extra_cond}
    memories = [(num_maskmem - 1, out) for out in cond.values()]  # t_pos 0
    if recent is not None:
        memories.extend(recent)
    else:
        for t_pos in range(1, num_maskmem):
            t = frame_idx - step * (num_maskmem - t_pos)
            out = obj.non_cond.get(t)
            if out is not None and out.maskmem is not None:
                memories.append((num_maskmem - t_pos - 1, out))
            elif out is not None or (t in obj.tracked and t not in obj.cond):
                missing += 1  # the reference still has this memory

    sign = -1 if reverse else 1
    pointers = []
    for t, out in cond.items():
        if (t >= frame_idx) if reverse else (t <= frame_idx):
            pointers.append(((frame_idx - t) * sign if signed_ptr_pos else abs(frame_idx - t), out.obj_ptr))
    cap = max_obj_ptrs if num_frames is None else min(num_frames, max_obj_ptrs)
    for t_diff in range(1, cap):
        t = frame_idx - step * t_diff
        if t < 0 or (num_frames is not None and t >= num_frames):
            break
        out = obj.non_cond.get(t)
        if out is not None:
            if pointer_ok is None or pointer_ok(t, out):
                pointers.append((t_diff, out.obj_ptr))
        elif t in obj.tracked and t not in obj.cond:
            missing += 1
    return MemorySelection(memories, pointers, missing)


def _behind(frame_idx: int, t: int, reverse: bool) -> int:
    """How many frames ``t`` lies behind ``frame_idx`` in the tracking direction."""
    return (t - frame_idx) if reverse else (frame_idx - t)


def usable_frames(obj: ObjectMemory, frame_idx: int, reverse: bool, n: int) -> list[int]:
    """The ``n`` most recent tracked frames behind ``frame_idx`` whose ``stats.usable`` is set,
    most recent first; the frame right after a prompted one is skipped (SAMURAI's walk)."""
    prompts = [_behind(frame_idx, c, reverse) for c in obj.cond if _behind(frame_idx, c, reverse) > 0]
    horizon = min(prompts) - 2 if prompts else None
    found = [
        (d, t)
        for t, e in obj.non_cond.items()
        if e.stats is not None and e.stats.usable
        for d in (_behind(frame_idx, t, reverse),)
        if d >= 1 and (horizon is None or d <= horizon)
    ]
    found.sort()
    return [t for _, t in found[:n]]


def recent_memories(
    obj: ObjectMemory, frame_idx: int, reverse: bool, picks: list[int], n: int
) -> tuple[list[tuple[int, FrameEntry]], int]:
    """``picks`` (most recent first) as ``n`` recent memory slots with ``t - 1`` always in the
    most recent one: ((temporal slot, entry) oldest first, number of released frames)."""
    prev = frame_idx + (1 if reverse else -1)
    slots = picks if prev in picks else [prev, *picks[: n - 1]]  # most recent first
    recent: list[tuple[int, FrameEntry]] = []
    missing = 0
    for j, t in enumerate(slots):  # slot j -> temporal encoding j (0 = most recent)
        entry = obj.non_cond.get(t)
        if entry is not None and entry.maskmem is not None:
            recent.append((j, entry))
        elif entry is not None or (t in obj.tracked and t not in obj.cond):
            missing += 1
    recent.reverse()  # oldest first, as SAM 2 orders memory tokens
    return recent, missing


def select_usable_memory(
    obj: ObjectMemory, frame_idx: int, reverse: bool, num_frames: int | None, num_maskmem: int, max_obj_ptrs: int,
    signed_ptr_pos: bool,
) -> MemorySelection:
    """:func:`select_memory` with the recent slots taken from usable frames only (the ``quality``
    policy's selection, shared by the PyTorch and the ONNX Runtime predictors)."""
    n = num_maskmem - 1
    recent, missing = recent_memories(obj, frame_idx, reverse, usable_frames(obj, frame_idx, reverse, n), n)
    sel = select_memory(obj, frame_idx, reverse, num_frames, num_maskmem, max_obj_ptrs, signed_ptr_pos, recent=recent)
    sel.missing += missing
    return sel


def pending_prompt_entries(objects: Iterable[ObjectMemory]) -> dict[int, list[FrameEntry]]:
    """Frame -> the prompt outputs (temporary entries of every object) whose memory is not encoded yet."""
    pending: dict[int, list[FrameEntry]] = {}
    for obj in objects:
        for is_cond in (False, True):
            for t, entry in obj.temp(is_cond).items():
                if entry.maskmem is None:
                    pending.setdefault(t, []).append(entry)
    return pending


def has_cond_prompt(objects: Iterable[ObjectMemory], frame_idx: int) -> bool:
    """Whether some object has an unfiled conditioning prompt output on the frame (what a
    consolidated output of the frame reads first)."""
    return any(frame_idx in obj.temp_cond for obj in objects)


def new_object_ids(objects: Mapping[Hashable, ObjectMemory], obj_ids: Iterable[Hashable]) -> list[Hashable]:
    """``obj_ids`` as a list, checked to be hashable, distinct and not used by ``objects`` yet."""
    ids = list(obj_ids)
    try:
        taken = [i for i in ids if i in objects]
        repeated = len(set(ids)) != len(ids)
    except TypeError:
        raise ValueError("object ids must be hashable (ints or strings)") from None
    if taken or repeated:
        raise ValueError(
            f"add_new_boxes starts new objects: ids {taken or ids} are already used (or repeated); "
            "correct an existing object with add_new_points_or_box"
        )
    return ids


def forget_object(objects: dict[Hashable, ObjectMemory], obj_id: Hashable) -> list[int]:
    """Remove an existing object with its prompts and outputs; returns the frames it was prompted on,
    where the other objects' outputs are to be reported again (none when it was the last object)."""
    obj = objects[obj_id]
    if len(objects) == 1:
        obj.clear()
        objects.clear()
        return []
    frames = obj.prompted_frames()
    for t in frames:
        obj.clear_prompts(t)
    del objects[obj_id]
    return list(frames)


def remove_object_memory(
    objects: dict[Hashable, ObjectMemory], obj_id: Hashable, strict: bool, report: Callable[[int, bool], Any] | None
) -> list[tuple[int, Any]]:
    """A predictor's ``remove_object``: forget ``obj_id`` (an unknown id is ignored, or a ``ValueError``
    when ``strict``); ``report(frame, is_cond)`` gives the frame's outputs again for each frame it was
    prompted on, as ``(frame, output)`` pairs (none without ``report``)."""
    if obj_id not in objects:
        if not strict:
            return []
        raise ValueError(f"cannot remove object id {obj_id!r}: it does not exist (ids: {list(objects)})")
    frames = forget_object(objects, obj_id)
    if report is None:
        return []
    return [(t, report(t, has_cond_prompt(objects.values(), t))) for t in frames]


@dataclass(frozen=True)
class RetentionPolicy:
    """Which non-conditioning entries stay in memory when outputs are not kept.

    Kept with their memory features and masks: frames at most ``num_maskmem - 1`` frames
    behind the last tracked frame, and frames that near a prompted frame (of any object).
    Kept as pointers only: the same with ``max_obj_ptrs - 1``. That is every entry the
    reference reads when propagation continues, restarts from a prompted frame (either
    direction), or a correction click lands on the last tracked frame or near a prompt.
    """

    num_maskmem: int
    max_obj_ptrs: int

    def keep(self, t: int, frame_idx: int, reverse: bool, anchors: Iterable[int]) -> tuple[bool, bool]:
        """(keep memory features and masks, keep pointer) for an entry on frame ``t``."""
        behind = (t - frame_idx) if reverse else (frame_idx - t)
        dist = min((abs(t - a) for a in anchors), default=None)
        near_mem = (0 <= behind <= self.num_maskmem - 1) or (dist is not None and dist <= self.num_maskmem - 1)
        near_ptr = (0 <= behind <= self.max_obj_ptrs - 1) or (dist is not None and dist <= self.max_obj_ptrs - 1)
        return near_mem, near_ptr or near_mem


def prune(
    objects: Iterable[ObjectMemory],
    frame_idx: int,
    reverse: bool,
    policy: RetentionPolicy,
    extra: Callable[[ObjectMemory], set[int]] | None = None,
) -> None:
    """Release the non-conditioning entries of all objects that no later step can read.

    ``extra(obj)`` names more frames whose entries stay whole (a memory policy's picks).
    """
    objects = list(objects)
    anchors = sorted({t for obj in objects for t in obj.cond} | {t for obj in objects for t in obj.temp_cond})
    for obj in objects:
        kept = extra(obj) if extra is not None else ()
        for t in list(obj.non_cond):
            if t in kept:
                continue
            keep_mem, keep_ptr = policy.keep(t, frame_idx, reverse, anchors)
            if not keep_ptr:
                del obj.non_cond[t]
            elif not keep_mem:
                obj.non_cond[t].release_masks()
