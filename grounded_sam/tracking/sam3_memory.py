"""Bounded memory for transformers' SAM 3 video sessions (``Sam3VideoInferenceSession``).

transformers keeps, for every object, the outputs of every frame it has tracked (low-res and
image-size masks, memory features, object pointers), every preprocessed frame, and per-frame
score / suppression records that it deep-copies on every frame. Memory and time per frame
therefore grow with the video's length. :func:`prune_session` drops, after each frame, what
the model can no longer read, so that the outputs stay bit-identical while memory stays flat.

What SAM 3's tracker reads back when it processes frame ``g`` (transformers 5.x,
``Sam3TrackerVideoModel._prepare_memory_conditioned_features``; the video model calls the
tracker with ``frame_idx``, i.e. its non-streaming path):

- spatial memory (``maskmem_features``, ``maskmem_pos_enc``) of the non-conditioning frames
  ``g - 1 ... g - (num_maskmem - 1)``; a conditioning frame in that range that is not among
  the selected ones stands in for a missing non-conditioning frame;
- spatial memory of the ``max_cond_frame_num`` conditioning frames closest to ``g`` (going
  forward: the most recent ones);
- ``object_pointer`` of the non-conditioning frames ``g - 1 ... g - (P - 1)`` with
  ``P = min(num_frames, max_object_pointers_in_encoder)``, ``num_frames`` being
  ``len(session.processed_frames)``;
- ``object_pointer`` of **every** conditioning frame up to ``g`` (transformers' port; Meta's
  ``sam2``/``sam3`` read only the selected ones). Conditioning frames are the frame where an
  object was found plus every re-conditioning (``recondition_every_nth_frame``), so these
  pointers (one ``hidden_size`` vector each) are the one thing that still grows, slowly.

So after frame ``f`` the session keeps per object: full memory of the last ``num_maskmem - 1``
frames and of the ``max_cond_frame_num`` most recent conditioning frames; only the object
pointer of the other frames in the pointer window and of older conditioning frames; nothing
else. Masks of past frames, mask prompts of past frames and per-frame bookkeeping are
dropped; the processed frames are replaced by a :class:`FrameWindow` that holds the newest
frame but still counts all of them (the pointer window above depends on that count).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["FrameWindow", "MemoryWindow", "prune_session", "tensor_bytes"]

READ_BACK = ("maskmem_features", "maskmem_pos_enc", "object_pointer")
"""Keys of a stored frame output that later frames read (masks are read on their own frame only)."""


@dataclass(frozen=True)
class MemoryWindow:
    """How far back SAM 3's tracker looks (the tracker config's values)."""

    num_maskmem: int  # frames of spatial memory, the current one included
    max_object_pointers: int  # frames of object pointers, the current one included
    max_cond_frames: int  # conditioning frames in spatial memory (-1: all)
    hotstart_unmatch: int  # the hotstart rules only compare list lengths against these
    hotstart_dup: int

    @classmethod
    def of(cls, model: Any) -> MemoryWindow:
        """The window of a ``Sam3VideoModel``."""
        trk = model.tracker_model.config
        return cls(
            num_maskmem=int(trk.num_maskmem),
            max_object_pointers=int(trk.max_object_pointers_in_encoder),
            max_cond_frames=int(trk.max_cond_frame_num),
            hotstart_unmatch=int(model.config.hotstart_unmatch_thresh),
            hotstart_dup=int(model.config.hotstart_dup_thresh),
        )


class FrameWindow(MutableMapping[int, torch.Tensor]):
    """Stand-in for ``session.processed_frames``: holds the newest ``keep`` frames only.

    ``len()`` is the number of frames added so far (one more than the highest index), as a
    dict holding every frame would report: transformers derives the new frame's index and the
    object-pointer window from it. Reading a dropped frame raises ``KeyError``.
    """

    def __init__(self, keep: int = 1) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = int(keep)
        self._frames: dict[int, torch.Tensor] = {}
        self._count = 0

    def __setitem__(self, idx: int, frame: torch.Tensor) -> None:
        self._frames[idx] = frame
        self._count = max(self._count, int(idx) + 1)
        for old in sorted(self._frames)[: -self.keep]:
            del self._frames[old]

    def __getitem__(self, idx: int) -> torch.Tensor:
        try:
            return self._frames[idx]
        except KeyError:
            raise KeyError(f"frame {idx} is no longer held (the session keeps the newest {self.keep})") from None

    def __delitem__(self, idx: int) -> None:
        del self._frames[idx]

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._frames))

    def __len__(self) -> int:
        return self._count


def _keep_only(out: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in [k for k in out if k not in keys]:
        del out[key]


def _prune_object(per_obj: dict[str, dict[int, dict[str, Any]]], f: int, w: MemoryWindow) -> None:
    spatial_from = f + 2 - w.num_maskmem  # oldest frame whose spatial memory frame f + 1 reads
    pointer_from = f + 2 - w.max_object_pointers  # oldest frame whose pointer frame f + 1 reads
    non_cond = per_obj["non_cond_frame_outputs"]
    for t in list(non_cond):
        if t >= spatial_from:
            _keep_only(non_cond[t], READ_BACK)
        elif t >= pointer_from:
            _keep_only(non_cond[t], ("object_pointer",))
        else:
            del non_cond[t]
    cond = per_obj["cond_frame_outputs"]
    selected = set(sorted(cond)[-w.max_cond_frames :]) if w.max_cond_frames >= 1 else set(cond)
    for t, out in cond.items():
        keys = READ_BACK if t in selected or t >= spatial_from else ("object_pointer",)
        _keep_only(out, keys)


def prune_session(session: Any, frame_idx: int, window: MemoryWindow) -> None:
    """Drop what frames after ``frame_idx`` never read (module docstring); outputs are unchanged.

    Call after ``model(session, frame=...)`` and the processor's ``postprocess_outputs`` of
    frame ``frame_idx``, when frames are processed in increasing order. Touches the session's
    documented attributes and these containers: ``output_dict_per_obj``,
    ``mask_inputs_per_obj``, ``point_inputs_per_obj``, ``frames_tracked_per_obj``,
    ``obj_id_to_tracker_score_frame_wise``, ``suppressed_obj_ids``, ``unmatched_frame_inds``,
    ``overlap_pair_to_frame_inds``, ``processed_frames``.
    """
    f = int(frame_idx)
    for per_obj in session.output_dict_per_obj.values():
        _prune_object(per_obj, f, window)
    for table in (session.mask_inputs_per_obj, session.point_inputs_per_obj, session.frames_tracked_per_obj):
        for per_frame in table.values():
            for t in [t for t in per_frame if t <= f]:
                del per_frame[t]
    for per_frame in (session.obj_id_to_tracker_score_frame_wise, session.suppressed_obj_ids):
        for t in [t for t in per_frame if t <= f]:
            del per_frame[t]
    # the hotstart rules test len(list) >= threshold: the newest `threshold` entries decide it
    for lists, limit in (
        (session.unmatched_frame_inds, window.hotstart_unmatch),
        (session.overlap_pair_to_frame_inds, window.hotstart_dup),
    ):
        for key, frames in lists.items():
            if len(frames) > max(limit, 1):
                lists[key] = frames[-max(limit, 1) :]
    if not isinstance(session.processed_frames, FrameWindow):
        frames = FrameWindow()
        for t in sorted(session.processed_frames or {}):
            frames[t] = session.processed_frames[t]
        session.processed_frames = frames


def tensor_bytes(obj: Any) -> int:
    """Bytes of the distinct tensor storages reachable from ``obj`` (containers and ``__dict__``)."""
    seen_storages: set[tuple[str, int]] = set()
    seen_objects: set[int] = set()
    total = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen_objects:
            continue
        seen_objects.add(id(item))
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            key = (str(item.device), storage.data_ptr())
            if key not in seen_storages:
                seen_storages.add(key)
                total += storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, MutableMapping):
            stack.extend(item[k] for k in item)
        elif hasattr(item, "__dict__") and not isinstance(item, (type, torch.nn.Module)):
            stack.extend(vars(item).values())
    return total
