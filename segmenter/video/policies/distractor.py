"""Distractor-aware memory (``distractor``), after DAM4SAM / "SAM2.1++".

Ideas of Videnović, Lukežič and Kristan (CVPR 2025, arXiv 2411.17576), written here from the
paper's and repository's description (their additions carry no licence; nothing is copied):

* **Recent appearance memory (RAM)**: the slots left after the conditioning frames
  (``num_maskmem`` minus the prompted and distractor frames attended) hold the most recent frame
  where the object is visible (a non-empty mask; empty frames are skipped), then frames on a
  ``stride`` grid (multiples of 5) going back, again skipping empty ones. Their temporal
  encodings are re-indexed by age (the most recent gets SAM 2's ``t - 1`` encoding). Object
  pointers come only from frames where the object is visible.
* **Distractor-resolving memory (DRM)**: frames added by introspection and attended as
  conditioning frames (with the prompted frames, at most ``max_cond_frames`` in all, the newest
  kept). A tracked frame is added when its chosen mask's predicted IoU > ``iou_threshold`` (0.8),
  its area is within ``area_ratio`` (0.8-1.2) of the median of the last 10 non-empty areas, the
  object is present, more than ``min_gap`` (5) frames passed since the last addition, and some
  alternative candidate — minus the chosen mask, its largest 8-connected component, united with
  the chosen mask — has a box IoU <= ``alt_box_iou`` (0.7) with the chosen mask's box: another
  look-alike is near the target, so this frame's appearance is worth keeping.

Masks are read at the decoder's low resolution (4x the embedding), which is what the memory
encoder's masks come from.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from segmenter.video.memory_bank import FrameEntry, FrameStats, MemorySelection, ObjectMemory, select_memory
from segmenter.video.policies.base import Candidates, MemoryContext, MemoryPolicy

__all__ = ["DistractorConfig", "DistractorPolicy", "DistractorState", "should_add", "alternative_box_ious"]


@dataclass(frozen=True)
class DistractorConfig:
    stride: int = 5
    max_cond_frames: int = 4  # prompted + distractor frames attended
    iou_threshold: float = 0.8
    area_ratio: tuple[float, float] = (0.8, 1.2)
    min_gap: int = 5
    alt_box_iou: float = 0.7
    area_history: int = 10  # non-empty areas in the median
    area_window: int = 300  # ... among the last this many frames

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.max_cond_frames < 2:
            raise ValueError(f"max_cond_frames must be >= 2 (the prompt and one distractor frame), got {self.max_cond_frames}")


@dataclass
class DistractorState:
    """One object's distractor memory and area history."""

    drm: dict[int, FrameEntry] = field(default_factory=dict)  # frame -> entry, oldest first
    areas: deque = field(default_factory=deque)  # (step, area) of recent non-empty frames
    steps: int = 0  # frames committed so far
    last_added: int | None = None


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _pixel_box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """IoU of two boxes as pixel sets (inclusive corners)."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(iw, 0) * max(ih, 0)
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def alternative_box_ious(chosen: np.ndarray, alternatives: Sequence[np.ndarray]) -> list[float]:
    """Box IoU of the chosen mask with each alternative hypothesis (H, W bool masks).

    An alternative is the candidate minus the chosen mask, reduced to its largest 8-connected
    component and united with the chosen mask; candidates with nothing outside the chosen mask
    are left out.
    """
    box = _bbox(chosen)
    if box is None:
        return []
    out = []
    for alt in alternatives:
        extra = (alt & ~chosen).astype(np.uint8)
        if not extra.any():
            continue
        n, labels, stats, _ = cv2.connectedComponentsWithStats(extra, connectivity=8)
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        out.append(_pixel_box_iou(box, _bbox((labels == largest) | chosen)))
    return out


def should_add(
    cfg: DistractorConfig, state: DistractorState, frame_idx: int, iou: float, area: int, alt_ious: Sequence[float]
) -> bool:
    """The introspection rule for a frame whose area is already in ``state.areas``."""
    if area < 1 or iou <= cfg.iou_threshold:
        return False
    if state.last_added is not None and abs(frame_idx - state.last_added) <= cfg.min_gap:
        return False
    history = [a for s, a in state.areas if state.steps - s < cfg.area_window][-cfg.area_history :]
    if state.steps < 2 or not history:
        return False
    ratio = area / statistics.median(history)
    lo, hi = cfg.area_ratio
    return lo <= ratio <= hi and len(alt_ious) > 0 and min(alt_ious) <= cfg.alt_box_iou


class DistractorPolicy(MemoryPolicy):
    """Recent-appearance memory that skips empty frames, plus a distractor memory (module docstring)."""

    name = "distractor"
    records_stats = True

    def __init__(self, config: DistractorConfig | None = None) -> None:
        self.config = config or DistractorConfig()

    def new_state(self) -> DistractorState:
        return DistractorState()

    def _drm(self, obj: ObjectMemory, frame_idx: int, reverse: bool) -> dict[int, FrameEntry]:
        """The distractor frames attended: the newest ones behind ``frame_idx``."""
        room = max(self.config.max_cond_frames - len(obj.cond), 0)
        drm = self.state(obj).drm
        behind = [t for t in drm if ((t > frame_idx) if reverse else (t < frame_idx))]
        behind.sort(key=lambda t: abs(frame_idx - t))
        keep = sorted(behind[:room])
        return {t: drm[t] for t in keep}

    def _ram(self, obj: ObjectMemory, frame_idx: int, reverse: bool, slots: int, skip: set[int]) -> list[int]:
        """RAM frames, most recent first (see the module docstring)."""
        sign = -1 if reverse else 1
        visible = sorted(
            (sign * t for t, e in obj.non_cond.items()
             if e.stats is not None and e.stats.area >= 1 and t not in skip and sign * t < sign * frame_idx),
            reverse=True,
        )  # fmt: skip
        out: list[int] = []
        bound = sign * frame_idx
        for u in visible:
            if len(out) == slots:
                break
            if u < bound and (not out or u % self.config.stride == 0):
                out.append(sign * u)
                bound = u
        return out

    def select(
        self, obj: ObjectMemory, frame_idx: int, reverse: bool, num_frames: int | None, ctx: MemoryContext
    ) -> MemorySelection:
        drm = self._drm(obj, frame_idx, reverse)
        slots = max(ctx.num_maskmem - len(obj.cond) - len(drm), 0)
        frames = self._ram(obj, frame_idx, reverse, slots, set(drm) | set(obj.cond))
        recent = [(j, obj.non_cond[t]) for j, t in enumerate(frames) if obj.non_cond[t].maskmem is not None]
        recent.reverse()  # oldest first; the most recent has SAM 2's t - 1 encoding
        return select_memory(
            obj, frame_idx, reverse, num_frames, ctx.num_maskmem, ctx.max_obj_ptrs, ctx.signed_ptr_pos,
            recent=recent, extra_cond=drm, pointer_ok=lambda t, e: t not in drm and e.stats is not None and e.stats.area >= 1,
        )  # fmt: skip

    def commit(
        self,
        objs: Sequence[ObjectMemory],
        entries: Sequence[FrameEntry],
        frame_idx: int,
        reverse: bool,
        cand: Candidates,
        best: torch.Tensor,
    ) -> None:
        rows = torch.arange(len(objs), device=cand.ious.device)
        low = torch.stack([e.pred_masks[0, 0] for e in entries]).to(cand.low.device) > 0  # (R, h, w)
        areas = low.flatten(1).sum(1)
        values = torch.stack([cand.ious[rows, best].float(), cand.scores[:, 0].float(), areas.float()], 1).tolist()
        cfg = self.config
        for r, (obj, entry, (iou, score, area)) in enumerate(zip(objs, entries, values)):
            state: DistractorState = self.state(obj)
            area = int(area)
            entry.stats = FrameStats(iou=iou, score=score, area=area)
            state.steps += 1
            if area >= 1:
                state.areas.append((state.steps, area))
                while len(state.areas) > cfg.area_history:
                    state.areas.popleft()
            if area < 1 or iou <= cfg.iou_threshold:
                continue  # cheap exits before any mask work
            chosen = low[r].cpu().numpy()
            alts = [(cand.low[r, m] > 0).cpu().numpy() for m in range(cand.low.shape[1]) if m != int(best[r])]
            if should_add(cfg, state, frame_idx, iou, area, alternative_box_ious(chosen, alts)):
                state.last_added = frame_idx
                state.drm[frame_idx] = entry
                while len(state.drm) > cfg.max_cond_frames - 1:
                    state.drm.pop(next(iter(state.drm)))

    def retain(self, obj: ObjectMemory, frame_idx: int, reverse: bool, ctx: MemoryContext) -> set[int]:
        nxt = frame_idx + (-1 if reverse else 1)
        drm = set(self.state(obj).drm)
        keep = set(self._ram(obj, nxt, reverse, ctx.num_maskmem - 1, drm | set(obj.cond)))
        # later RAM picks come from the newest visible frame and the newest stride-aligned ones
        return keep | drm

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
