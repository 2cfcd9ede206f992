"""Per-class precision, recall and F1 at an operating point, the threshold sweep behind them, and
class confusions.

Predictions are matched to ground truth the way COCO does, per image and class: in descending
score order, each prediction takes the unmatched ground-truth instance it overlaps most, if that
IoU is at least the threshold (0.5); a prediction left over that lies on a crowd region (IoU >= 0.5
with it, over the prediction's area) is neither right nor wrong (ignored); any other is a false
positive. Because the order is by score, the matches of the predictions scoring ``>= t`` are the
same for every ``t``: one pass gives each prediction its outcome, and the counts at any score
threshold are prefix sums of the sorted outcomes (:class:`ClassOutcomes`). That is what makes
threshold tuning a sweep instead of a re-evaluation.

**Confusions**: a ground-truth instance of class A left unmatched that an unmatched prediction of
class B covers with IoU >= 0.5 (one-to-one, largest summed IoU).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from grounded_sam.evaluation.data import EvalInstance, EvalSet
from grounded_sam.evaluation.matching import IouType, iou_matrix
from grounded_sam.evaluation.sa_co import by_query

__all__ = ["ClassOutcomes", "Matching", "class_outcomes", "per_class_counts", "prf"]


@dataclass
class ClassOutcomes:
    """One class's predictions sorted by descending score, each a true positive or not (``tp``),
    ignored ones (on crowd regions) left out, and how many ground-truth instances there are."""

    scores: np.ndarray  # (N,) descending
    tp: np.ndarray  # (N,) bool
    num_gt: int

    def counts(self, threshold: float = -np.inf) -> tuple[int, int, int]:
        """``(TP, FP, FN)`` of the predictions scoring ``>= threshold``."""
        keep = self.scores >= threshold
        tp = int(self.tp[keep].sum())
        return tp, int(keep.sum()) - tp, self.num_gt - tp

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(thresholds, precision, recall, F1)`` at each distinct score (keeping every prediction
        scoring at least it), highest threshold first."""
        if not len(self.scores):
            return (np.zeros(0),) * 4
        tp = np.cumsum(self.tp)
        fp = np.cumsum(~self.tp)
        last = np.r_[self.scores[1:] != self.scores[:-1], True]  # the end of each run of equal scores
        tp, fp, thresholds = tp[last], fp[last], self.scores[last]
        precision = tp / (tp + fp)
        recall = tp / self.num_gt if self.num_gt else np.zeros_like(precision)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
        return thresholds, precision, recall, f1


@dataclass
class Matching:
    """All of :func:`class_outcomes`: per class outcomes, the confusions, and per image its false
    positives and false negatives (``{image: (FP, FN)}``)."""

    outcomes: dict[str, ClassOutcomes]
    confusions: list[dict[str, Any]]
    image_errors: dict[str, tuple[int, int]]


def _greedy(preds: list[EvalInstance], gts: list[EvalInstance], iou_type: IouType, iou_threshold: float
            ) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    """COCO's matching in one image and class: per prediction (in the given, descending-score order)
    ``tp`` and ``ignored``; and the unmatched prediction and ground-truth indices."""
    real = [g for g in gts if not g.iscrowd]
    crowd = [g for g in gts if g.iscrowd]
    ious = iou_matrix(preds, real, iou_type)
    on_crowd = (iou_matrix(preds, crowd, iou_type, crowd=True).max(axis=1) >= iou_threshold if crowd and preds
                else np.zeros(len(preds), bool))
    taken = np.zeros(len(real), bool)
    tp = np.zeros(len(preds), bool)
    for i in range(len(preds)):
        if real:
            candidates = np.where(~taken & (ious[i] >= iou_threshold), ious[i], -1.0)
            j = int(candidates.argmax())
            if candidates[j] >= 0:
                taken[j] = tp[i] = True
    ignored = ~tp & on_crowd
    left_preds = [i for i in range(len(preds)) if not tp[i] and not ignored[i]]
    return tp, ignored, left_preds, [j for j in range(len(real)) if not taken[j]]


def class_outcomes(gt: EvalSet, pred: EvalSet, iou_type: IouType = "segm", iou_threshold: float = 0.5) -> Matching:
    """Every class's :class:`ClassOutcomes`, the confusions and each image's errors (module docs)."""
    from scipy.optimize import linear_sum_assignment

    scores: dict[str, list[np.ndarray]] = {c: [] for c in gt.classes}
    hits: dict[str, list[np.ndarray]] = {c: [] for c in gt.classes}
    num_gt = Counter(i.category for i in gt.instances if not i.iscrowd)
    confusions: Counter = Counter()
    image_errors: dict[str, tuple[int, int]] = {}
    gts, preds = by_query(gt), by_query(pred)
    for image in gt.images:
        left_gt: list[EvalInstance] = []
        left_pred: list[EvalInstance] = []
        for name in gt.classes:
            g = gts.get((image, name), [])
            p = sorted(preds.get((image, name), []), key=lambda x: -x.score)  # stable: ties keep their order
            tp, ignored, lp, lg = _greedy(p, g, iou_type, iou_threshold)
            keep = ~ignored
            scores[name].append(np.array([x.score for x in p], dtype=np.float64)[keep])
            hits[name].append(tp[keep])
            real = [x for x in g if not x.iscrowd]
            left_pred += [p[i] for i in lp]
            left_gt += [real[j] for j in lg]
        image_errors[image] = (len(left_pred), len(left_gt))
        if left_gt and left_pred:
            ious = iou_matrix(left_pred, left_gt, iou_type)
            for r, c in zip(*linear_sum_assignment(-ious)):
                a, b = left_gt[c].category, left_pred[r].category
                if ious[r, c] >= iou_threshold and a != b:
                    confusions[a, b] += 1
    out = {}
    for name in gt.classes:
        s = np.concatenate(scores[name]) if scores[name] else np.zeros(0)
        t = np.concatenate(hits[name]) if hits[name] else np.zeros(0, bool)
        order = np.argsort(-s, kind="stable")
        out[name] = ClassOutcomes(s[order], t[order].astype(bool), int(num_gt[name]))
    return Matching(out, [{"gt": a, "pred": b, "count": n} for (a, b), n in sorted(confusions.items())], image_errors)


def prf(tp: int, fp: int, fn: int) -> dict[str, Any]:
    """``{TP, FP, FN, precision, recall, F1}``; precision / recall ``None`` where 0 / 0."""
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = None
    if precision is not None or recall is not None:
        p, r = precision or 0.0, recall or 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"TP": tp, "FP": fp, "FN": fn, "precision": precision, "recall": recall, "F1": f1}


def per_class_counts(gt: EvalSet, pred: EvalSet, iou_type: IouType = "segm", iou_threshold: float = 0.5
                     ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """``(per class {TP, FP, FN, precision, recall, F1}, confusions)`` of every prediction."""
    matching = class_outcomes(gt, pred, iou_type, iou_threshold)
    return {name: prf(*o.counts()) for name, o in matching.outcomes.items()}, matching.confusions
