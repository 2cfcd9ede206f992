"""Per-class score thresholds, and optionally captions, tuned on the user's ground truth from one
pass of the models: :func:`tune`.

The pipeline runs once over the ground truth's images keeping every candidate scoring at least
a low ``floor`` (:func:`~grounded_sam.evaluation.candidates.candidate_outcomes`). Each class then
has one or more *options* (:class:`ClassOption`): its current captions, and with ``candidates``
every set of its candidate captions (:mod:`~grounded_sam.evaluation.captions`), each with the
class's detections under it. The choice of option and threshold per class is offline:

- a per-class objective (``f1``, ``precision>=P``, ``recall>=R``,
  :mod:`~grounded_sam.evaluation.objectives`) takes, per class, the option whose best threshold
  scores highest (ties: the current captions, then the smaller set);
- ``cgf1`` chooses all classes together (:mod:`~grounded_sam.evaluation.sa_co_tune`).

The result says each class's counts before (the pipeline as it is) and after, cgF1 and micro F1
of the whole set before and after, and with a caption search each caption's own best.

Known limit: negative captions suppress positive boxes above the floor during the pass, so with
negatives the tuned thresholds are exact only where the negatives' boxes score above them too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grounded_sam.evaluation.candidates import candidate_outcomes, check_classes, current_thresholds, with_settings
from grounded_sam.evaluation.captions import caption_sets, detections_of, parse_candidates, search_ontology
from grounded_sam.evaluation.data import EvalInstance, EvalSet
from grounded_sam.evaluation.objectives import Objective, best_threshold, objective_value, parse_objective
from grounded_sam.evaluation.operating import ClassOutcomes, class_outcomes, prf

__all__ = ["tune", "TuneResult", "ClassOption"]


@dataclass
class ClassOption:
    """A way to label one class: its captions, its detections under them (per image highest score
    first) and their outcomes against the ground truth."""

    captions: tuple[str, ...]
    kept: list[EvalInstance]
    outcomes: ClassOutcomes


@dataclass
class TuneResult:
    """Tuned per-class thresholds (and captions); each class's counts before (the pipeline as it
    is) and after; the whole set's cgF1 and micro P / R / F1 before and after (``overall``); with
    a caption search, each class's caption table."""

    objective: str
    floor: float
    thresholds: dict[str, float]
    captions: dict[str, list[str]] = field(default_factory=dict)
    before: dict[str, dict[str, Any]] = field(default_factory=dict)
    after: dict[str, dict[str, Any]] = field(default_factory=dict)
    overall: dict[str, dict[str, float | None]] = field(default_factory=dict)
    caption_table: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ontology: Any = None  # the CaptionOntology with the tuned thresholds (and captions)
    seconds: float = 0.0  # the pass of the models

    def summary(self) -> str:
        f = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        rows = [f"{'class':<20} {'threshold':>9}  {'F1 before':>9}  {'F1 after':>8}  P / R after"]
        for name, t in self.thresholds.items():
            b, a = self.before[name], self.after[name]
            rows.append(f"{name:<20} {t:>9.4f}  {f(b['F1']):>9}  {f(a['F1']):>8}  {f(a['precision'])} / {f(a['recall'])}")
        if self.overall:
            b, a = self.overall["before"], self.overall["after"]
            rows.append(f"all classes: cgF1 {f(b['cgF1'])} -> {f(a['cgF1'])}, F1 {f(b['F1'])} -> {f(a['F1'])}")
        for name, table in self.caption_table.items():
            rows.append(f"\ncaptions of {name!r}:")
            rows.append(f"  {'captions':<40} {'threshold':>9}  {'P':>5}  {'R':>5}  {'F1':>5}")
            for row in table:
                mark = "  <- chosen" if row["chosen"] else "  (current)" if row["current"] else ""
                rows.append(f"  {' | '.join(row['captions'])[:40]:<40} {row['threshold']:>9.4f}  {f(row['precision']):>5}"
                            f"  {f(row['recall']):>5}  {f(row['F1']):>5}{mark}")
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the ontology, as JSON."""
        return {k: getattr(self, k) for k in ("objective", "floor", "thresholds", "captions", "before", "after",
                                              "overall", "caption_table", "seconds")}

    def save(self, path: str | Path) -> Path:
        """The tuned ontology as YAML: ``--ontology`` (CLI) or ``CaptionOntology.from_yaml`` take it."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.ontology.to_yaml(target)
        return target


def tune(pipeline: Any, gt: EvalSet, ground_truth: Any, images: str | Path | None = None, objective: str = "f1",
         floor: float = 0.05, iou_threshold: float = 0.5, class_map: Mapping[str, str] | None = None,
         batch_size: int = 1, candidates: Any = None) -> TuneResult:
    """Tune ``pipeline``'s per-class thresholds (and, with ``candidates``, captions) on ``gt``
    (module docs). ``class_map``: the pipeline's class name -> the ground truth's."""
    goal = parse_objective(objective)
    mapping = dict(class_map or {})
    ours = {mapping.get(c, c): c for c in pipeline.classes}  # ground-truth name -> ours
    check_classes(gt, list(ours))
    current = {mapping.get(c, c): t for c, t in current_thresholds(pipeline).items()}
    wanted = parse_candidates(candidates)
    search, captions = None, {c: pipeline.ontology.captions(c) for c in pipeline.classes}
    if wanted:
        search, captions = search_ontology(pipeline.ontology, wanted, getattr(pipeline.detector, "normalize", None))
    run = candidate_outcomes(pipeline, gt, ground_truth, images, floor, mapping, iou_threshold, batch_size,
                             ontology=search, merge_captions=search is None)
    if search is None:
        options = {g: [ClassOption(tuple(captions[c]), detections_of(run.found, g), run.outcomes[g])]
                   for g, c in ours.items()}
    else:
        nms_iou = pipeline.detector.nms_iou
        options = {g: [_option(gt, run.found, g, s, nms_iou, run.iou_type, iou_threshold)
                       for s in caption_sets(captions[c], pipeline.ontology.captions(c))] for g, c in ours.items()}
    chosen = (_choose_per_class(options, goal) if goal.per_class
              else _choose_cgf1(gt, options, current, run.iou_type))
    result = TuneResult(str(goal), floor, {}, seconds=run.seconds)
    for g, c in ours.items():
        k, t = chosen[g]
        result.thresholds[c], result.captions[c] = t, list(options[g][k].captions)
        result.before[c] = prf(*options[g][0].outcomes.counts(current[g]))
        result.after[c] = prf(*options[g][k].outcomes.counts(t))
        if len(options[g]) > 1:
            result.caption_table[c] = _caption_table(options[g], k, t, goal)
    result.overall = {"before": _overall(gt, {g: (0, current[g]) for g in ours}, options, run.iou_type, iou_threshold),
                      "after": _overall(gt, chosen, options, run.iou_type, iou_threshold)}
    result.ontology = with_settings(pipeline.ontology, result.thresholds,
                                    result.captions if search is not None else None)
    return result


def _option(gt: EvalSet, found: EvalSet, name: str, captions: Sequence[str], nms_iou: float | None, iou_type: str,
            iou_threshold: float) -> ClassOption:
    kept = detections_of(found, name, captions, nms_iou)
    view = EvalSet(gt.images, gt.instances, [name], gt.source)
    outcomes = class_outcomes(view, EvalSet(gt.images, kept, [name]), iou_type, iou_threshold).outcomes[name]
    return ClassOption(tuple(captions), kept, outcomes)


def _choose_per_class(options: Mapping[str, list[ClassOption]], goal: Objective) -> dict[str, tuple[int, float]]:
    """Per class, ``(option index, threshold)`` with the best objective; the first best wins."""
    out = {}
    for name, opts in options.items():
        thresholds = [best_threshold(o.outcomes, goal) for o in opts]
        values = [objective_value(o.outcomes, t, goal) for o, t in zip(opts, thresholds)]
        k = int(np.argmax(values)) if np.isfinite(np.max(values)) else 0
        out[name] = k, thresholds[k]
    return out


def _choose_cgf1(gt: EvalSet, options: Mapping[str, list[ClassOption]], current: Mapping[str, float],
                 iou_type: str) -> dict[str, tuple[int, float]]:
    """All classes' ``(option index, threshold)`` for the best cgF1, from the thresholds in use
    and from each class's best F1 (:func:`~grounded_sam.evaluation.sa_co_tune.maximise`)."""
    from grounded_sam.evaluation.sa_co_tune import maximise, threshold_table

    tables, rows, start_now, start_f1 = {}, {}, {}, {}
    f1 = parse_objective("f1")
    for name, opts in options.items():
        parts = [threshold_table(gt, name, o.kept, iou_type) for o in opts]
        rows[name] = [(k, float(t)) for k, part in enumerate(parts) for t in part.thresholds]
        offsets = np.cumsum([0] + [len(p.thresholds) for p in parts])
        tables[name] = np.vstack([p.counts for p in parts])
        start_now[name] = int(offsets[0] + parts[0].row(current[name]))
        best = _choose_per_class({name: opts}, f1)[name]
        start_f1[name] = int(offsets[best[0]] + parts[best[0]].row(best[1]))
    choice, _ = maximise(tables, [start_now, start_f1])
    return {name: rows[name][i] for name, i in choice.items()}


def _overall(gt: EvalSet, chosen: Mapping[str, tuple[int, float]], options: Mapping[str, list[ClassOption]],
             iou_type: str, iou_threshold: float) -> dict[str, float | None]:
    """cgF1 (:func:`~grounded_sam.evaluation.sa_co.sa_co_metrics`) and micro precision, recall, F1 of the labels a choice gives."""
    from grounded_sam.evaluation.sa_co import sa_co_metrics

    labels = EvalSet(gt.images, [i for g, (k, t) in chosen.items() for i in options[g][k].kept if i.score >= t],
                     list(gt.classes))
    counts = np.sum([options[g][k].outcomes.counts(t) for g, (k, t) in chosen.items()], axis=0)
    sa_co = sa_co_metrics(gt, labels, iou_type)
    micro = prf(*(int(v) for v in counts))
    return {"cgF1": sa_co["cgF1"], "pmF1": sa_co["pmF1"], "IL_MCC": sa_co["IL_MCC"],
            "precision": micro["precision"], "recall": micro["recall"], "F1": micro["F1"]}


def _caption_table(opts: list[ClassOption], k: int, t: float, goal: Objective) -> list[dict[str, Any]]:
    """The current captions, each caption alone (at its own best threshold) and the chosen set."""
    picked = [0, *(i for i, o in enumerate(opts) if len(o.captions) == 1 and i != 0)]
    picked += [k] if k not in picked else []
    rows = []
    for i in picked:
        threshold = t if i == k else best_threshold(opts[i].outcomes, goal)
        counts = prf(*opts[i].outcomes.counts(threshold))
        rows.append({"captions": list(opts[i].captions), "threshold": threshold, "precision": counts["precision"],
                     "recall": counts["recall"], "F1": counts["F1"], "current": i == 0, "chosen": i == k})
    return rows
