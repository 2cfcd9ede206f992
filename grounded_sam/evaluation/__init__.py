"""Label quality: labels scored against the user's own ground truth.

- :func:`evaluate` (:mod:`~grounded_sam.evaluation.evaluate`) — ground truth and predictions in,
  an :class:`EvalReport` out;
- :mod:`~grounded_sam.evaluation.data` — :class:`EvalSet` and its readers (COCO JSON, COCO results,
  ``label`` output folders and their app-reviewed images, ``sv.Detections`` in memory);
- :mod:`~grounded_sam.evaluation.coco_ap` — COCO AP / AR by pycocotools' ``COCOeval``;
- :mod:`~grounded_sam.evaluation.sa_co` — SAM 3's cgF1 / pmF1 / IL_MCC;
- :mod:`~grounded_sam.evaluation.operating` — per-class precision, recall, F1 (COCO's matching) and
  class confusions, and the per-class score sweep that tuning uses;
- :mod:`~grounded_sam.evaluation.report` — ``metrics.json`` and ``report.md``;
- :mod:`~grounded_sam.evaluation.tune` — per-class thresholds (and captions,
  :mod:`~grounded_sam.evaluation.captions`) tuned from one pass of the models
  (:mod:`~grounded_sam.evaluation.candidates`) for an objective
  (:mod:`~grounded_sam.evaluation.objectives`; cgF1: :mod:`~grounded_sam.evaluation.sa_co_tune`);
- :mod:`~grounded_sam.evaluation.compare` — presets compared on the same ground truth.
"""

from grounded_sam.evaluation.data import EvalInputError, EvalSet, read_coco, read_label_folder
from grounded_sam.evaluation.evaluate import evaluate
from grounded_sam.evaluation.report import EvalReport

__all__ = ["evaluate", "EvalReport", "EvalSet", "EvalInputError", "read_coco", "read_label_folder"]
