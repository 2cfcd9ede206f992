"""Quality-gated memory (``quality``) and SAMURAI's motion-aware tracking (``samurai``).

Rules of SAMURAI (Yang et al. 2024, arXiv 2411.11922; Apache-2.0 code at
github.com/yangchris11/samurai, ``sam2/sam2/modeling/sam2_base.py``), re-implemented per object
and batched over objects:

* memory (both policies): walking back from ``t - 1``, a tracked frame is a memory candidate when
  its chosen mask's predicted IoU > ``iou_threshold`` (0.5), its object score >
  ``obj_score_threshold`` (0) and, once motion scoring is on, its Kalman IoU >
  ``kf_score_threshold`` (0). The ``num_maskmem - 1`` most recent candidates are the memory
  frames, always with ``t - 1`` in the most recent slot (it replaces the oldest candidate when it
  is not one). As in SAMURAI's walk (``range(t - 1, 1, -1)`` with the prompt on frame 0), the
  frame right after the prompted one counts only as ``t - 1``. Prompted frames and object
  pointers are SAM 2's.
* mask choice (``samurai``): a constant-velocity Kalman filter on the chosen mask's box
  (:mod:`~segmenter.video.policies.kalman`). Until ``stable_frames_threshold`` (15) consecutive
  frames had a predicted IoU > ``stable_ious_threshold`` (0.3) the best-IoU mask is chosen and
  feeds the filter; after that the choice is the argmax of
  ``kf_score_weight * IoU(candidate box, predicted box) + (1 - kf_score_weight) * predicted IoU``
  over the candidates, and a chosen IoU below 0.3 restarts the count (and the filter). An object
  is present when its score logit is > ``min_obj_score_logits`` (-1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from segmenter.video.memory_bank import FrameEntry, FrameStats, MemorySelection, ObjectMemory
from segmenter.video.memory_bank import select_usable_memory, usable_frames
from segmenter.video.policies.base import Candidates, MemoryContext, MemoryPolicy
from segmenter.video.policies.kalman import KalmanBoxFilter, box_iou_xyxy, mask_boxes, xyah_to_xyxy, xyxy_to_xyah

__all__ = ["QualityConfig", "SamuraiConfig", "QualityPolicy", "SamuraiPolicy"]


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the quality gate (SAMURAI's ``memory_bank_*_threshold`` keys)."""

    iou_threshold: float = 0.5
    obj_score_threshold: float = 0.0
    kf_score_threshold: float = 0.0


@dataclass(frozen=True)
class SamuraiConfig(QualityConfig):
    """SAMURAI's keys; the defaults are its shipped configs' (``configs/samurai/*.yaml``).

    ``kf_score_weight`` is 0.25 in those configs (the code's own default is 0.15).
    """

    stable_frames_threshold: int = 15
    stable_ious_threshold: float = 0.3
    min_obj_score_logits: float = -1.0
    kf_score_weight: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.kf_score_weight <= 1.0:
            raise ValueError(f"kf_score_weight must be in [0, 1], got {self.kf_score_weight}")
        if self.stable_frames_threshold < 1:
            raise ValueError(f"stable_frames_threshold must be >= 1, got {self.stable_frames_threshold}")


class QualityPolicy(MemoryPolicy):
    """Memory frames gated by predicted IoU and object score (see the module docstring)."""

    name = "quality"
    records_stats = True

    def __init__(self, config: QualityConfig | None = None) -> None:
        self.config = config or QualityConfig()

    def _usable(self, stats: FrameStats) -> bool:
        c = self.config
        return (
            stats.iou > c.iou_threshold
            and stats.score > c.obj_score_threshold
            and (stats.kf_iou is None or stats.kf_iou > c.kf_score_threshold)
        )

    def select(
        self, obj: ObjectMemory, frame_idx: int, reverse: bool, num_frames: int | None, ctx: MemoryContext
    ) -> MemorySelection:
        return select_usable_memory(
            obj, frame_idx, reverse, num_frames, ctx.num_maskmem, ctx.max_obj_ptrs, ctx.signed_ptr_pos
        )

    def _kf_scores(self, objs: Sequence[ObjectMemory]) -> list[float | None]:
        return [None] * len(objs)

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
        chosen = torch.stack([cand.ious[rows, best], cand.scores[:, 0].to(cand.ious.dtype)], dim=1)
        values = chosen.float().tolist()  # one host sync for the batch
        for entry, (iou, score), kf in zip(entries, values, self._kf_scores(objs)):
            stats = FrameStats(iou=iou, score=score, kf_iou=kf)
            stats.usable = self._usable(stats)
            entry.stats = stats

    def retain(self, obj: ObjectMemory, frame_idx: int, reverse: bool, ctx: MemoryContext) -> set[int]:
        nxt = frame_idx + (-1 if reverse else 1)
        return set(usable_frames(obj, nxt, reverse, ctx.num_maskmem - 1))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


@dataclass
class MotionState:
    """One object's Kalman filter and stable-run count (SAMURAI's ``kf_mean`` etc., per object)."""

    mean: torch.Tensor | None = None  # (8,) float64
    cov: torch.Tensor | None = None  # (8, 8) float64
    stable: int = 0
    kf_iou: float | None = None  # the last choice's Kalman IoU (None before the stable run)


class SamuraiPolicy(QualityPolicy):
    """Quality-gated memory plus Kalman-weighted mask choice (see the module docstring)."""

    name = "samurai"

    def __init__(self, config: SamuraiConfig | None = None) -> None:
        super().__init__(config or SamuraiConfig())
        self.config: SamuraiConfig
        self.present_threshold = float(self.config.min_obj_score_logits)
        self.kf = KalmanBoxFilter()

    def new_state(self) -> MotionState:
        return MotionState()

    def _kf_scores(self, objs: Sequence[ObjectMemory]) -> list[float | None]:
        return [self.state(o).kf_iou for o in objs]

    def choose(self, objs: Sequence[ObjectMemory], cand: Candidates, frame_idx: int) -> torch.Tensor:
        cfg, kf = self.config, self.kf
        states: list[MotionState] = [self.state(o) for o in objs]
        ious = cand.ious.detach().float().cpu()  # (R, M)
        best = ious.argmax(dim=-1)
        boxes = mask_boxes(cand.high > 0)  # (R, M, 4) float64 on the CPU
        for s in states:
            s.kf_iou = None
        fresh = [i for i, s in enumerate(states) if s.mean is None or s.stable == 0]
        known = [i for i, s in enumerate(states) if not (s.mean is None or s.stable == 0)]
        if known:
            mean, cov = kf.predict(
                torch.stack([states[i].mean for i in known]), torch.stack([states[i].cov for i in known])
            )
            steady = [j for j, i in enumerate(known) if states[i].stable >= cfg.stable_frames_threshold]
            if steady:
                rows = [known[j] for j in steady]
                kf_iou = box_iou_xyxy(xyah_to_xyxy(mean[steady, :4]), boxes[rows]).to(torch.float32)  # (W, M)
                weighted = cfg.kf_score_weight * kf_iou + (1 - cfg.kf_score_weight) * ious[rows]
                pick = weighted.argmax(dim=-1)
                best[rows] = pick
                for k, i in enumerate(rows):
                    states[i].kf_iou = float(kf_iou[k, pick[k]])
            chosen_iou = ious[known, best[known]]
            above = (chosen_iou > cfg.stable_ious_threshold).tolist()
            not_below = (~(chosen_iou < cfg.stable_ious_threshold)).tolist()
            update = []
            for j, i in enumerate(known):
                s = states[i]
                s.mean, s.cov = mean[j], cov[j]
                if s.stable >= cfg.stable_frames_threshold:
                    ok = not_below[j]
                else:
                    ok = above[j]
                    if ok:
                        s.stable += 1
                if ok:
                    update.append(j)
                else:
                    s.stable = 0
            if update:
                rows = [known[j] for j in update]
                meas = xyxy_to_xyah(boxes[rows, best[rows]])
                new_mean, new_cov = kf.update(mean[update], cov[update], meas)
                for k, i in enumerate(rows):
                    states[i].mean, states[i].cov = new_mean[k], new_cov[k]
        if fresh:
            mean, cov = kf.initiate(xyxy_to_xyah(boxes[fresh, best[fresh]]))
            for k, i in enumerate(fresh):
                states[i].mean, states[i].cov = mean[k], cov[k]
                states[i].stable += 1
        return best.to(cand.ious.device)
