"""Per-image matching of predictions to ground truth, and the counts every metric here is made of.

For one image and class (a *query* in SAM 3's terms) :func:`match_query` pairs predictions with
ground-truth instances one to one so that the summed IoU is largest (Hungarian assignment, as
SAM 3's cgF1 evaluation does), IoU being mask IoU (``"segm"``) or box IoU (``"bbox"``) from
pycocotools. Crowd regions (``iscrowd``) are not instances to find: they take no part in the
assignment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from grounded_sam.evaluation.data import EvalInstance, EvalSet

__all__ = ["IouType", "iou_type_for", "iou_matrix", "match_query", "QueryMatch"]

IouType = Literal["segm", "bbox"]


def iou_type_for(gt: EvalSet, pred: EvalSet) -> IouType:
    """``"segm"`` when every instance on both sides has a mask, else ``"bbox"``."""
    return "segm" if gt.instances and gt.has_masks and pred.has_masks else "bbox"


def iou_matrix(preds: Sequence[EvalInstance], gts: Sequence[EvalInstance], iou_type: IouType,
               crowd: bool = False) -> np.ndarray:
    """(P, G) IoU; with ``crowd`` the ground truth are crowd regions (intersection over the
    prediction's area, COCO's rule)."""
    from pycocotools import mask as mask_utils

    if not preds or not gts:
        return np.zeros((len(preds), len(gts)))
    if iou_type == "segm":
        d = [p.rle for p in preds]
        g = [t.rle for t in gts]
        if any(r is None for r in d) or any(r is None for r in g):
            raise ValueError("mask IoU needs masks on both sides (use iou_type='bbox')")
    else:
        d = [list(p.bbox) for p in preds]
        g = [list(t.bbox) for t in gts]
    return np.asarray(mask_utils.iou(d, g, [int(crowd)] * len(g)), dtype=np.float64).reshape(len(preds), len(gts))


@dataclass(frozen=True)
class QueryMatch:
    """One query's assignment: ``pairs`` (prediction index, gt index, IoU), largest summed IoU."""

    num_preds: int
    num_gts: int
    pairs: list[tuple[int, int, float]]

    def true_positives(self, threshold: float) -> int:
        return sum(1 for _, _, iou in self.pairs if iou >= threshold)


def match_query(preds: Sequence[EvalInstance], gts: Sequence[EvalInstance], iou_type: IouType) -> QueryMatch:
    """Hungarian assignment of ``preds`` to the non-crowd ``gts`` of one query (module docs)."""
    from scipy.optimize import linear_sum_assignment

    real = [g for g in gts if not g.iscrowd]
    if not preds or not real:
        return QueryMatch(len(preds), len(real), [])
    ious = iou_matrix(preds, real, iou_type)
    rows, cols = linear_sum_assignment(-ious)
    return QueryMatch(len(preds), len(real), [(int(r), int(c), float(ious[r, c])) for r, c in zip(rows, cols)])
