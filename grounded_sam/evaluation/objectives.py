"""What a tuned threshold maximises, and each class's best threshold for it.

- ``"f1"`` (default): the highest F1 at the matching IoU (0.5);
- ``"precision>=0.9"`` (any number): the highest recall whose precision is at least that much;
- ``"recall>=0.8"``: the highest precision whose recall is at least that much;
- ``"cgf1"``: SAM 3's cgF1 of all classes together (:mod:`~grounded_sam.evaluation.sa_co_tune`).

The first three are per class: a class's precision and recall depend on its own predictions
only, and because matching goes by descending score (:mod:`~grounded_sam.evaluation.operating`)
the counts at every threshold come from one sorted pass (:func:`best_threshold`). Ties between
thresholds go to the higher one (fewer predictions, same score). A class whose best is to keep
nothing (no ground truth, or a constraint no threshold meets) gets a threshold just above its
highest candidate (at most 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from grounded_sam.evaluation.operating import ClassOutcomes

__all__ = ["Objective", "parse_objective", "best_threshold", "objective_value"]


@dataclass(frozen=True)
class Objective:
    """``"f1"``, ``"cgf1"``, or ``"precision"`` / ``"recall"`` under a floor on the other."""

    kind: str  # "f1" | "cgf1" | "precision>=" | "recall>="
    bound: float = 0.0

    def __str__(self) -> str:
        return self.kind if self.kind in ("f1", "cgf1") else f"{self.kind}{self.bound:g}"

    @property
    def per_class(self) -> bool:
        """Whether each class's threshold can be chosen on its own (all but cgF1)."""
        return self.kind != "cgf1"


def parse_objective(text: str | Objective) -> Objective:
    """``"f1"``, ``"cgf1"``, ``"precision>=0.9"`` or ``"recall>=0.8"`` (module docs)."""
    if isinstance(text, Objective):
        return text
    spec = str(text).replace(" ", "").lower()
    if spec in ("f1", "cgf1"):
        return Objective(spec)
    m = re.fullmatch(r"(precision|recall)>=(0?\.\d+|1(\.0*)?|0)", spec)
    if not m:
        raise ValueError(f"objective must be 'f1', 'cgf1', 'precision>=P' or 'recall>=R' (P, R in [0, 1]), got {text!r}")
    return Objective(f"{m.group(1)}>=", float(m.group(2)))


def _nothing(outcomes: ClassOutcomes) -> float:
    return min(float(np.nextafter(outcomes.scores[0], np.inf)), 1.0) if len(outcomes.scores) else 1.0


def best_threshold(outcomes: ClassOutcomes, objective: Objective) -> float:
    """The score threshold of one class that is best for a per-class ``objective`` (module docs);
    for ``cgf1``, the class's best F1 (its own part of cgF1's pmF1)."""
    thresholds, precision, recall, f1 = outcomes.curve()
    nothing = _nothing(outcomes)
    if not len(thresholds) or outcomes.num_gt == 0:
        return nothing
    if objective.kind in ("f1", "cgf1"):
        value, ok = f1, np.ones(len(f1), bool)
    elif objective.kind == "precision>=":
        value, ok = recall + 1e-9 * f1, precision >= objective.bound
    else:
        value, ok = precision + 1e-9 * f1, recall >= objective.bound
    if not ok.any():
        return nothing
    scored = np.where(ok, value, -np.inf)
    best = scored.max()
    if objective.kind in ("f1", "cgf1") and best <= 0.0:
        return nothing  # no threshold finds anything right
    return float(thresholds[np.flatnonzero(scored >= best - 1e-12)[0]])  # highest threshold first


def objective_value(outcomes: ClassOutcomes, threshold: float, objective: Objective) -> float:
    """What a per-class ``objective`` scores at ``threshold``: F1, or the recall (precision) when
    the precision (recall) bound is met, else ``-inf``. Keeping nothing scores 0 for F1."""
    tp, fp, fn = outcomes.counts(threshold)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    if objective.kind in ("f1", "cgf1"):
        return f1
    if objective.kind == "precision>=":
        return recall + 1e-9 * f1 if tp + fp and precision >= objective.bound else -np.inf
    return precision + 1e-9 * f1 if recall >= objective.bound and tp + fn else -np.inf
