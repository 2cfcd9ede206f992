"""Per-class score thresholds tuned on the user's ground truth, from one pass of the models.

:func:`tune_thresholds` takes every candidate a pipeline finds at a low floor threshold (one
detector + segmenter pass over the ground truth's images, :func:`candidates`) and chooses, per
class, the score threshold that is best for an objective:

- ``"f1"`` (default): the highest F1 at IoU 0.5;
- ``"precision>=0.9"`` (any number): the highest recall whose precision is at least that much;
- ``"recall>=0.8"``: the highest precision whose recall is at least that much.

Classes are independent (a class's precision and recall depend on its predictions only), and
because matching goes by descending score (:mod:`~grounded_sam.evaluation.operating`) the counts
at every threshold come from one sorted pass: the sweep costs a sort per class, not a run of the
models per threshold. Ties between thresholds go to the higher one (fewer predictions, same
score). A class whose best is to keep nothing (no ground truth, or a constraint no threshold
meets) gets a threshold just above its highest candidate (at most 1).

Known limit: negative captions suppress positive boxes above the floor during the pass, so with
negatives the tuned thresholds are exact only where the negatives' boxes score above them too.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grounded_sam.evaluation.data import EvalInputError, EvalSet
from grounded_sam.evaluation.operating import ClassOutcomes, prf

__all__ = ["Objective", "parse_objective", "best_threshold", "tune_thresholds", "TuneResult", "candidate_pass",
           "candidate_outcomes", "Candidates", "with_thresholds", "current_thresholds", "check_classes"]


@dataclass(frozen=True)
class Objective:
    """What a threshold maximises: ``"f1"``, or ``"precision"`` / ``"recall"`` under a floor on the other."""

    kind: str  # "f1" | "precision>=" | "recall>="
    bound: float = 0.0

    def __str__(self) -> str:
        return "f1" if self.kind == "f1" else f"{self.kind}{self.bound:g}"


def parse_objective(text: str | Objective) -> Objective:
    """``"f1"``, ``"precision>=0.9"`` or ``"recall>=0.8"`` (module docs)."""
    if isinstance(text, Objective):
        return text
    spec = str(text).replace(" ", "").lower()
    if spec == "f1":
        return Objective("f1")
    m = re.fullmatch(r"(precision|recall)>=(0?\.\d+|1(\.0*)?|0)", spec)
    if not m:
        raise ValueError(f"objective must be 'f1', 'precision>=P' or 'recall>=R' (P, R in [0, 1]), got {text!r}")
    return Objective(f"{m.group(1)}>=", float(m.group(2)))


def best_threshold(outcomes: ClassOutcomes, objective: Objective) -> float:
    """The score threshold of one class that is best for ``objective`` (module docs)."""
    thresholds, precision, recall, f1 = outcomes.curve()
    nothing = min(float(np.nextafter(outcomes.scores[0], np.inf)), 1.0) if len(outcomes.scores) else 1.0
    if not len(thresholds) or outcomes.num_gt == 0:
        return nothing
    if objective.kind == "f1":
        value, ok = f1, np.ones(len(f1), bool)
    elif objective.kind == "precision>=":
        value, ok = recall + 1e-9 * f1, precision >= objective.bound
    else:
        value, ok = precision + 1e-9 * f1, recall >= objective.bound
    if not ok.any():
        return nothing
    scored = np.where(ok, value, -np.inf)
    best = scored.max()
    if objective.kind == "f1" and best <= 0.0:
        return nothing  # no threshold finds anything right
    return float(thresholds[np.flatnonzero(scored >= best - 1e-12)[0]])  # highest threshold first


@dataclass
class TuneResult:
    """Tuned per-class thresholds, and each class's counts before (every candidate the pipeline
    keeps with its own thresholds) and after."""

    objective: str
    floor: float
    thresholds: dict[str, float]
    before: dict[str, dict[str, Any]] = field(default_factory=dict)
    after: dict[str, dict[str, Any]] = field(default_factory=dict)
    ontology: Any = None  # the CaptionOntology with the tuned thresholds

    def summary(self) -> str:
        rows = [f"{'class':<20} {'threshold':>9}  {'F1 before':>9}  {'F1 after':>8}  P / R after"]
        for name, t in self.thresholds.items():
            b, a = self.before[name], self.after[name]
            f = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
            rows.append(f"{name:<20} {t:>9.4f}  {f(b['F1']):>9}  {f(a['F1']):>8}  {f(a['precision'])} / {f(a['recall'])}")
        return "\n".join(rows)

    def save(self, path: str | Path) -> Path:
        """The tuned ontology as YAML: ``--ontology`` (CLI) or ``CaptionOntology.from_yaml`` take it."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.ontology.to_yaml(target)
        return target


def tune_thresholds(outcomes: Mapping[str, ClassOutcomes], current: Mapping[str, float],
                    objective: str | Objective = "f1", floor: float = 0.0) -> TuneResult:
    """Per-class thresholds from the candidates' outcomes (:func:`~grounded_sam.evaluation.operating.class_outcomes`).

    ``current``: each class's threshold before tuning (for the "before" counts)."""
    goal = parse_objective(objective)
    result = TuneResult(str(goal), floor, {})
    for name, o in outcomes.items():
        result.thresholds[name] = best_threshold(o, goal)
        result.before[name] = prf(*o.counts(current.get(name, floor)))
        result.after[name] = prf(*o.counts(result.thresholds[name]))
    return result


@contextlib.contextmanager
def candidate_pass(pipeline: Any, floor: float) -> Iterator[Any]:
    """``pipeline`` with its detector keeping everything scoring ``>= floor`` and its ontology
    without per-class thresholds, for the duration of the block."""
    detector = pipeline.detector
    if not hasattr(detector, "box_threshold"):
        raise EvalInputError(f"tuning needs a detector with a score threshold (box_threshold); "
                             f"{type(detector).__name__} has none")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor}")
    from ontologies import CaptionOntology

    data = pipeline.ontology.to_dict()
    stripped = CaptionOntology.from_dict(
        {"classes": {name: {k: v for k, v in entry.items() if k != "threshold"}
                     for name, entry in data["classes"].items()}} if "classes" in data else data)
    saved = detector.box_threshold, pipeline.ontology
    detector.box_threshold, pipeline.ontology = floor, stripped
    try:
        yield pipeline
    finally:
        detector.box_threshold, pipeline.ontology = saved


@dataclass
class Candidates:
    """One pass of a pipeline at the floor over the ground truth's images: what it found (class
    names mapped to the ground truth's), each class's outcomes, and the IoU type they use."""

    found: EvalSet
    outcomes: dict[str, ClassOutcomes]
    iou_type: str
    seconds: float  # the model pass alone (images decoded, detector, segmenter)


def candidate_outcomes(pipeline: Any, gt: EvalSet, ground_truth: Any, images: Any, floor: float,
                       class_map: Mapping[str, str] | None = None, iou_threshold: float = 0.5,
                       batch_size: int = 1) -> Candidates:
    """Run ``pipeline`` once over ``gt``'s images keeping every candidate ``>= floor``
    (:func:`candidate_pass`), check the result against ``gt`` and match it (what ``tune`` and
    ``compare`` sweep)."""
    from grounded_sam.evaluation.evaluate import check_pair
    from grounded_sam.evaluation.matching import iou_type_for
    from grounded_sam.evaluation.operating import class_outcomes
    from grounded_sam.evaluation.run import predict_ground_truth

    start = time.perf_counter()
    with candidate_pass(pipeline, floor):
        found, _ = predict_ground_truth(pipeline, gt, ground_truth, images, batch_size)
    seconds = time.perf_counter() - start
    found = check_pair(gt, found.rename(class_map) if class_map else found)
    iou_type = iou_type_for(gt, found)
    return Candidates(found, class_outcomes(gt, found, iou_type, iou_threshold).outcomes, iou_type, seconds)


def with_thresholds(ontology: Any, thresholds: Mapping[str, float]) -> Any:
    """``ontology`` (a CaptionOntology) with per-class ``thresholds``."""
    from ontologies import CaptionOntology

    data = ontology.to_dict()
    classes = data["classes"] if "classes" in data else {
        name: {"captions": ontology.captions(name)} for name in ontology.classes()}
    return CaptionOntology.from_dict({"classes": {
        name: {**entry, "threshold": float(thresholds[name])} if name in thresholds else dict(entry)
        for name, entry in classes.items()}})


def current_thresholds(pipeline: Any) -> dict[str, float]:
    """Each class's threshold as the pipeline runs now: its own, else the detector's."""
    default = float(getattr(pipeline.detector, "box_threshold", 0.0))
    return {name: (pipeline.ontology.threshold(name) if pipeline.ontology.threshold(name) is not None else default)
            for name in pipeline.ontology.classes()}


def check_classes(gt: EvalSet, classes: list[str]) -> None:
    missing = [c for c in classes if c not in gt.classes]
    if missing:
        raise EvalInputError(f"the ground truth has no class {missing[0]!r} (its classes: {gt.classes}); "
                             "tuning needs every class of the ontology in the ground truth")
