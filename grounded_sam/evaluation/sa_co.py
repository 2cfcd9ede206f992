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

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from grounded_sam.evaluation.data import EvalInstance, EvalSet
from grounded_sam.evaluation.matching import IouType, match_query

__all__ = ["IOU_THRESHOLDS", "sa_co_metrics", "by_query"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's 0.50:0.05:0.95


def by_query(data: EvalSet) -> dict[tuple[str, str], list[EvalInstance]]:
    out: dict[tuple[str, str], list[EvalInstance]] = defaultdict(list)
    for inst in data.instances:
        out[inst.image, inst.category].append(inst)
    return out


def sa_co_metrics(gt: EvalSet, pred: EvalSet, iou_type: IouType = "segm") -> dict[str, Any]:
    """SAM 3's cgF1, pmF1 and IL_MCC (module docs), with the counts they come from."""
    t = len(IOU_THRESHOLDS)
    tp, fp, pm_fp, fn = (np.zeros(t, dtype=np.int64) for _ in range(4))
    il = Counter()
    gts, preds = by_query(gt), by_query(pred)
    for image in gt.images:
        for name in gt.classes:
            match = match_query(preds.get((image, name), []), gts.get((image, name), []), iou_type)
            n_gt, n_dt = match.num_gts, match.num_preds
            if n_gt == 0 and n_dt == 0:
                il["TN"] += 1
                continue
            hits = np.array([match.true_positives(x) for x in IOU_THRESHOLDS], dtype=np.int64)
            tp += hits
            fp += n_dt - hits
            fn += n_gt - hits
            if n_gt and n_dt:
                il["TP"] += 1
                pm_fp += n_dt - hits
            elif n_dt:
                il["FP"] += 1
            else:
                il["FN"] += 1
    recall = tp / (tp + fn + 1e-4)
    pm_precision = tp / (tp + pm_fp + 1e-4)
    pm_f1 = 2 * pm_precision * recall / (pm_precision + recall + 1e-4)
    il_tp, il_fp, il_tn, il_fn = (float(il[k]) for k in ("TP", "FP", "TN", "FN"))
    mcc = (il_tp * il_tn - il_fp * il_fn) / (
        ((il_tp + il_fp) * (il_tp + il_fn) * (il_tn + il_fp) * (il_tn + il_fn)) ** 0.5 + 1e-6)
    cg_f1 = 100.0 * pm_f1 * mcc
    return {
        "cgF1": float(cg_f1.mean()), "cgF1@50": float(cg_f1[0]),
        "pmF1": float(pm_f1.mean()), "pmF1@50": float(pm_f1[0]),
        "IL_MCC": float(mcc),
        "image_level": {k: int(il[k]) for k in ("TP", "FP", "TN", "FN")},
        "iou_thresholds": [round(float(x), 2) for x in IOU_THRESHOLDS],
        "TP": tp.tolist(), "FP": fp.tolist(), "positive_FP": pm_fp.tolist(), "FN": fn.tolist(),
    }
