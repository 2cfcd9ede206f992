"""SAM 3's SA-Co metrics of the labels as they are (every prediction kept counts): cgF1, pmF1, IL_MCC.

Each (image, class) pair is one query; every class is a query on every image
(the ground truth is taken as exhaustive). A query's predictions and non-crowd ground truth are
matched one to one (:func:`~grounded_sam.evaluation.matching.match_query`); at an IoU threshold
``t`` a pair with IoU >= ``t`` is a true positive, the other predictions false positives, the
other ground truth false negatives. Summed over queries:

- ``pmF1`` (positive micro F1): precision counts the false positives of the queries that have both
  ground truth and predictions only; ``pmF1 = 2 P R / (P + R)``;
- ``IL_MCC`` (image-level Matthews correlation): a query is an image-level TP (ground truth and
  predictions), FP (predictions only), FN (ground truth only) or TN (neither);
- ``cgF1 = 100 * pmF1 * IL_MCC``, reported as the mean over IoU 0.50:0.05:0.95 and at 0.5.

The small constants SAM 3's evaluator adds to each denominator (1e-4 for precision, recall and
F1, 1e-6 for MCC) are kept, so that the numbers are the same as its evaluator's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from grounded_sam.evaluation.data import EvalInstance, EvalSet
from grounded_sam.evaluation.matching import IouType, QueryMatch, iou_matrix, match_query

__all__ = ["IOU_THRESHOLDS", "sa_co_metrics", "by_query", "query_counts", "prefix_counts", "sa_co_scores"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's 0.50:0.05:0.95
_T = len(IOU_THRESHOLDS)
# One query's counts as one row: TP, positive FP and FN at each IoU threshold, the image-level TP, FP, TN, FN,
# and the number of predictions.
TP, PM_FP, FN, IL = slice(0, _T), slice(_T, 2 * _T), slice(2 * _T, 3 * _T), slice(3 * _T, 3 * _T + 4)
DT = 3 * _T + 4
WIDTH = DT + 1


def by_query(data: EvalSet) -> dict[tuple[str, str], list[EvalInstance]]:
    out: dict[tuple[str, str], list[EvalInstance]] = defaultdict(list)
    for inst in data.instances:
        out[inst.image, inst.category].append(inst)
    return out


def query_counts(match: QueryMatch) -> np.ndarray:
    """(WIDTH,) the counts of one query (module docs) from its assignment."""
    row = np.zeros(WIDTH, dtype=np.int64)
    n_gt, n_dt = match.num_gts, match.num_preds
    hits = np.array([match.true_positives(x) for x in IOU_THRESHOLDS], dtype=np.int64)
    row[TP], row[FN] = hits, n_gt - hits
    if n_gt and n_dt:
        row[PM_FP] = n_dt - hits
    row[IL.start + (0 if n_gt and n_dt else 1 if n_dt else 3 if n_gt else 2)] = 1
    row[DT] = n_dt
    return row


def prefix_counts(preds: Sequence[EvalInstance], gts: Sequence[EvalInstance], iou_type: IouType) -> np.ndarray:
    """(n + 1, WIDTH) the counts of one query keeping its ``k`` first ``preds`` (in the given,
    descending-score order), ``k = 0 .. n``: the threshold sweep of cgF1. A prediction that
    overlaps no ground truth changes no assignment, so only the others are matched anew."""
    from scipy.optimize import linear_sum_assignment

    real = [g for g in gts if not g.iscrowd]
    ious = iou_matrix(list(preds), real, iou_type)  # (n, G)
    rows = [query_counts(QueryMatch(0, len(real), []))]
    pairs: list[tuple[int, int, float]] = []
    for k in range(1, len(preds) + 1):
        if real and ious[k - 1].max() > 0:
            r, c = linear_sum_assignment(-ious[:k])
            pairs = [(int(i), int(j), float(ious[i, j])) for i, j in zip(r, c)]
        rows.append(query_counts(QueryMatch(k, len(real), pairs)))
    return np.stack(rows)


def sa_co_scores(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cgF1, pmF1, IL_MCC)`` of summed counts (..., WIDTH): cgF1 and pmF1 (..., T) per IoU
    threshold, IL_MCC (...,)."""
    c = counts.astype(np.float64)
    tp, pm_fp, fn = c[..., TP], c[..., PM_FP], c[..., FN]
    il_tp, il_fp, il_tn, il_fn = (c[..., IL.start + i] for i in range(4))
    recall = tp / (tp + fn + 1e-4)
    pm_precision = tp / (tp + pm_fp + 1e-4)
    pm_f1 = 2 * pm_precision * recall / (pm_precision + recall + 1e-4)
    mcc = (il_tp * il_tn - il_fp * il_fn) / (
        np.sqrt((il_tp + il_fp) * (il_tp + il_fn) * (il_tn + il_fp) * (il_tn + il_fn)) + 1e-6)
    return 100.0 * pm_f1 * mcc[..., None], pm_f1, mcc


def sa_co_metrics(gt: EvalSet, pred: EvalSet, iou_type: IouType = "segm") -> dict[str, Any]:
    """SAM 3's cgF1, pmF1 and IL_MCC (module docs), with the counts they come from."""
    total = np.zeros(WIDTH, dtype=np.int64)
    gts, preds = by_query(gt), by_query(pred)
    for image in gt.images:
        for name in gt.classes:
            total += query_counts(match_query(preds.get((image, name), []), gts.get((image, name), []), iou_type))
    cg_f1, pm_f1, mcc = sa_co_scores(total)
    tp, pm_fp, fn = total[TP], total[PM_FP], total[FN]
    il = dict(zip(("TP", "FP", "TN", "FN"), (int(v) for v in total[IL])))
    return {
        "cgF1": float(cg_f1.mean()), "cgF1@50": float(cg_f1[0]),
        "pmF1": float(pm_f1.mean()), "pmF1@50": float(pm_f1[0]),
        "IL_MCC": float(mcc),
        "image_level": il,
        "iou_thresholds": [round(float(x), 2) for x in IOU_THRESHOLDS],
        "TP": tp.tolist(), "FP": (total[DT] - tp).tolist(), "positive_FP": pm_fp.tolist(),
        "FN": fn.tolist(),
    }
