"""The policies of one batch of objects on one tracking step: who chooses which rows."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from segmenter.video.memory_bank import FrameEntry, ObjectMemory
from segmenter.video.policies.base import Candidates, FifoPolicy, MemoryPolicy

__all__ = ["PolicyStep"]


class PolicyStep:
    """Groups a batch's rows by policy; each policy decides for its rows in one vectorised call.

    :meth:`build` returns ``None`` when every object uses SAM 2's policy, and the tracker then
    runs exactly SAM 2's code path.
    """

    def __init__(self, objs: Sequence[ObjectMemory], policies: Sequence[MemoryPolicy], frame_idx: int) -> None:
        self.objs = list(objs)
        self.frame_idx = frame_idx
        groups: dict[int, tuple[MemoryPolicy, list[int]]] = {}
        for i, p in enumerate(policies):
            groups.setdefault(id(p), (p, []))[1].append(i)
        self.groups = list(groups.values())
        self._thresholds = [p.present_threshold for p in policies]
        self._cand: Candidates | None = None
        self._best: torch.Tensor | None = None

    @classmethod
    def build(
        cls, objs: Sequence[ObjectMemory], default: MemoryPolicy, frame_idx: int
    ) -> PolicyStep | None:
        policies = [obj.policy if obj.policy is not None else default for obj in objs]
        if all(type(p) is FifoPolicy for p in policies):
            return None
        return cls(objs, policies, frame_idx)

    def threshold(self, score: torch.Tensor) -> torch.Tensor | float:
        """The object-presence threshold of each row: a number, or (B, 1) when rows differ."""
        if len(set(self._thresholds)) == 1:
            return self._thresholds[0]
        return torch.tensor(self._thresholds, dtype=score.dtype, device=score.device)[:, None]

    def choose(
        self, low: torch.Tensor, high: torch.Tensor, ious: torch.Tensor, score: torch.Tensor
    ) -> torch.Tensor:
        """(B,) chosen candidate per row, from (B, M, ...) candidates."""
        best = ious.argmax(dim=-1)
        self._cand = Candidates(low, high, ious, score)
        for policy, rows in self.groups:
            if type(policy) is FifoPolicy:
                continue
            idx = torch.tensor(rows, device=low.device)
            sub = Candidates(low[idx], high[idx], ious[idx], score[idx])
            best[idx] = policy.choose([self.objs[i] for i in rows], sub, self.frame_idx).to(best.device)
        self._best = best
        return best

    def commit(self, entries: Sequence[FrameEntry], reverse: bool) -> None:
        """Let each policy record the step (after the entries are stored)."""
        cand, best = self._cand, self._best
        if cand is None or best is None:
            return
        for policy, rows in self.groups:
            idx = torch.tensor(rows, device=cand.low.device)
            sub = Candidates(cand.low[idx], cand.high[idx], cand.ious[idx], cand.scores[idx])
            policy.commit(
                [self.objs[i] for i in rows], [entries[i] for i in rows], self.frame_idx, reverse, sub, best[idx]
            )
