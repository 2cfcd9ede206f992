"""Per-class thresholds (and caption sets) for the best cgF1, SAM 3's measure (:mod:`~grounded_sam.evaluation.sa_co`).

cgF1 is not a sum over classes: its pmF1 is a micro average and IL_MCC counts every (image,
class) query, so one class's threshold changes what another's is worth. Each class gets a
table (:func:`threshold_table`): for every threshold at which its labels change, the SA-Co
counts of its queries, summed over the images (one sorted pass over each query's prefixes,
:func:`~grounded_sam.evaluation.sa_co.prefix_counts`). The counts of a choice of one row per class
add up to the whole set's, so the cgF1 of any choice is a sum and a formula.
:func:`maximise` then does coordinate ascent: each class in turn takes its best row with the
others fixed, until no class can improve. It starts from the thresholds in use and from each
class's best F1 and keeps the better end, so the result is never worse than what it started
from; it is a local optimum (no single class's change improves cgF1), not always the global one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from grounded_sam.evaluation.data import EvalInstance, EvalSet
from grounded_sam.evaluation.matching import IouType
from grounded_sam.evaluation.sa_co import WIDTH, by_query, prefix_counts, sa_co_scores

__all__ = ["ThresholdTable", "threshold_table", "cgf1_of", "maximise"]


@dataclass
class ThresholdTable:
    """One class's labels at each threshold: ``counts[j]`` (WIDTH,) are its queries' summed SA-Co
    counts keeping the scores ``>= thresholds[j]``; the last row keeps nothing."""

    thresholds: np.ndarray  # (M + 1,) descending; the last one is above every score
    counts: np.ndarray  # (M + 1, WIDTH)

    def row(self, threshold: float) -> int:
        """The row that keeps what ``threshold`` keeps."""
        above = np.flatnonzero(self.thresholds[:-1] >= threshold)
        return int(above[-1]) if len(above) else len(self.thresholds) - 1


def threshold_table(gt: EvalSet, name: str, kept: Sequence[EvalInstance], iou_type: IouType) -> ThresholdTable:
    """The :class:`ThresholdTable` of class ``name`` labeled with ``kept`` (its detections, per image
    highest score first) on every image of ``gt``."""
    gts = by_query(gt)
    per_image: dict[str, list[EvalInstance]] = defaultdict(list)
    for inst in kept:
        per_image[inst.image].append(inst)
    base = np.zeros(WIDTH, dtype=np.int64)
    scores, deltas = [], []
    for image in gt.images:
        preds = per_image.get(image, [])
        rows = prefix_counts(preds, gts.get((image, name), []), iou_type)  # (n + 1, WIDTH)
        base += rows[0]
        scores += [p.score for p in preds]
        deltas.append(np.diff(rows, axis=0))
    if not scores:
        return ThresholdTable(np.array([1.0]), base[None])
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    cum = base + np.cumsum(np.concatenate(deltas)[order], axis=0)
    s = s[order]
    last = np.r_[s[1:] != s[:-1], True]  # the end of each run of equal scores
    nothing = min(float(np.nextafter(s[0], np.inf)), 1.0)
    return ThresholdTable(np.r_[s[last], nothing], np.vstack([cum[last], base]))


def cgf1_of(counts: np.ndarray) -> np.ndarray:
    """cgF1 (the mean over IoU 0.50:0.95) of summed counts (..., WIDTH) -> (...,)."""
    return sa_co_scores(counts)[0].mean(axis=-1)


def _ascend(tables: Sequence[np.ndarray], start: list[int], max_rounds: int = 100) -> tuple[list[int], float]:
    choice = list(start)
    total = sum(t[c] for t, c in zip(tables, choice))
    value = float(cgf1_of(total))
    for _ in range(max_rounds):
        changed = False
        for k, table in enumerate(tables):
            others = total - table[choice[k]]
            values = cgf1_of(others[None] + table)  # (R_k,)
            best = int(np.argmax(values))  # the first best: the highest threshold among equals
            if values[best] > value + 1e-12:
                choice[k], total, value, changed = best, others + table[best], float(values[best]), True
        if not changed:
            break
    return choice, value


def maximise(tables: Mapping[str, np.ndarray], starts: Sequence[Mapping[str, int]]) -> tuple[dict[str, int], float]:
    """The rows (one per class, of each class's (R, WIDTH) counts) that coordinate ascent from
    each of ``starts`` reaches (module docs), and their cgF1; the best end wins, the first on ties."""
    names = list(tables)
    best: tuple[dict[str, int], float] | None = None
    for start in starts:
        choice, value = _ascend([tables[n] for n in names], [start[n] for n in names])
        if best is None or value > best[1] + 1e-12:
            best = dict(zip(names, choice)), value
    assert best is not None, "maximise needs a start"
    return best
