"""Which model for my data: pipelines compared on the same ground truth, one pass each.

:func:`compare` runs each pipeline once over the ground truth's images at a low floor threshold
(as tuning does) and, from that one pass, reports per pipeline:

- box and mask AP over every candidate (AP is a ranking measure: the floor keeps the ranking);
- cgF1 and micro F1 at the pipeline's own thresholds (the labels it would write);
- micro F1 at per-class thresholds tuned for F1 on the same images (an optimistic bound: tuned and
  scored on one set);
- seconds per image of the pass (detector + segmenter, images decoded), and peak memory: CUDA's
  peak allocation on a GPU, else the growth of the process's peak resident size during the pass
  (0 when an earlier pass already reached it).

Pipelines given as factories (``lambda: GroundedSAM.from_config("sam3", ontology=...)``) are
built one at a time and released before the next, so only one set of models is held.
"""

from __future__ import annotations

import gc
import resource
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grounded_sam.evaluation.data import EvalSet, read_ground_truth
from grounded_sam.evaluation.sa_co import sa_co_metrics
from grounded_sam.evaluation.candidates import candidate_outcomes, current_thresholds
from grounded_sam.evaluation.objectives import best_threshold, parse_objective

__all__ = ["Comparison", "compare"]

COLUMNS = ("mask AP", "box AP", "cgF1", "F1", "F1 tuned", "s/image", "peak MB")


@dataclass
class Comparison:
    """One row per pipeline (:data:`COLUMNS`; ``None`` where a number does not apply)."""

    rows: dict[str, dict[str, float | None]] = field(default_factory=dict)
    images: int = 0

    def table(self) -> str:
        """A Markdown table."""
        def cell(v: float | None, col: str) -> str:
            if v is None:
                return "–"
            return f"{v:.3f}" if col == "s/image" else f"{v:.0f}" if col == "peak MB" else f"{v * 100 if col != 'cgF1' else v:.1f}"

        out = ["| pipeline | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
        out += [f"| {name} | " + " | ".join(cell(row[c], c) for c in COLUMNS) + " |" for name, row in self.rows.items()]
        return "\n".join(out)

    def save(self, folder: str | Path) -> Path:
        """``comparison.json``, ``comparison.md`` and ``comparison.png`` (AP and F1 per pipeline),
        the folder written whole (as :meth:`EvalReport.save <grounded_sam.evaluation.EvalReport.save>`)."""
        import json

        from grounded_sam.evaluation.report import write_folder

        def fill(staging: Path) -> None:
            (staging / "comparison.json").write_text(json.dumps({"images": self.images, "rows": self.rows}, indent=2)
                                                     + "\n", encoding="utf-8")
            (staging / "comparison.md").write_text(f"# Pipelines on {self.images} images\n\n{self.table()}\n",
                                                   encoding="utf-8")
            (staging / "comparison.png").write_bytes(self.chart_png())

        return write_folder(folder, fill)

    def chart_png(self) -> bytes:
        """AP and F1 of each pipeline as a bar chart (PNG bytes)."""
        import io

        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        metrics = [c for c in ("mask AP", "box AP", "F1", "F1 tuned") if any(r[c] is not None for r in self.rows.values())]
        fig = Figure(figsize=(1.5 + 1.4 * len(self.rows), 3.2), dpi=100)
        ax = fig.add_subplot()
        width = 0.8 / max(1, len(metrics))
        for k, metric in enumerate(metrics):
            ax.bar([i + k * width for i in range(len(self.rows))],
                   [(r[metric] or 0.0) * 100 for r in self.rows.values()], width, label=metric)
        ax.set_xticks([i + width * (len(metrics) - 1) / 2 for i in range(len(self.rows))], list(self.rows))
        ax.set(ylabel="%", ylim=(0, 100), title=f"{self.images} images")
        ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()


def _micro_f1(counts: list[tuple[int, int, int]]) -> float:
    tp, fp, fn = (sum(c[k] for c in counts) for k in range(3))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def _peak_mb(device: Any) -> float:
    import torch

    if getattr(device, "type", None) == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 2 ** 20 if sys.platform == "darwin" else kb / 2 ** 10  # bytes on macOS, KiB on Linux


def compare(
    pipelines: Mapping[str, Any | Callable[[], Any]],
    ground_truth: Any,
    *,
    images: str | Path | None = None,
    floor: float = 0.05,
    class_map: Mapping[str, str] | None = None,
    iou_threshold: float = 0.5,
    batch_size: int = 1,
) -> Comparison:
    """Compare ``pipelines`` (name -> a pipeline or a factory of one) on ``ground_truth`` (module docs)."""
    from grounded_sam.evaluation.coco_ap import coco_ap

    gt: EvalSet = read_ground_truth(ground_truth)
    result = Comparison(images=len(gt.images))
    goal = parse_objective("f1")
    for name, candidate in pipelines.items():
        pipe = candidate() if callable(candidate) and not hasattr(candidate, "predict_batch") else candidate
        mapping = dict(class_map or {})
        own = {mapping.get(c, c): t for c, t in current_thresholds(pipe).items()}
        if getattr(pipe.device, "type", None) == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(pipe.device)
        before_mb = _peak_mb(pipe.device)
        run = candidate_outcomes(pipe, gt, ground_truth, images, floor, mapping, iou_threshold, batch_size)
        seconds = run.seconds / max(1, len(gt.images))
        peak = _peak_mb(pipe.device) - (0.0 if getattr(pipe.device, "type", None) == "cuda" else before_mb)
        found, outcomes, iou_type = run.found, run.outcomes, run.iou_type
        kept = EvalSet(dict(found.images), [i for i in found.instances if i.score >= own.get(i.category, floor)],
                       list(found.classes), found.source)
        result.rows[name] = {
            "mask AP": coco_ap(gt, found, "segm")["stats"]["AP"] if iou_type == "segm" else None,
            "box AP": coco_ap(gt, found, "bbox")["stats"]["AP"],
            "cgF1": sa_co_metrics(gt, kept, iou_type)["cgF1"],
            "F1": _micro_f1([o.counts(own.get(c, floor)) for c, o in outcomes.items()]),
            "F1 tuned": _micro_f1([o.counts(best_threshold(o, goal)) for o in outcomes.values()]),
            "s/image": seconds,
            "peak MB": max(0.0, peak),
        }
        del pipe, run, found, kept, outcomes
        gc.collect()
    return result
