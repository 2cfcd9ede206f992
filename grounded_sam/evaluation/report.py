""":class:`EvalReport`: what :func:`~grounded_sam.evaluation.evaluate` measured, as JSON, Markdown and HTML.

:meth:`EvalReport.save` writes a report folder all at once: ``metrics.json``, ``report.md``, a
self-contained ``report.html``, ``pr/<class>.png`` (precision-recall curves) and, when the images
are at hand, ``worst/<n>_<image>.png`` (the images with the most errors, ground truth beside
predictions). The files go to a temporary folder beside the target that is then renamed into
place, so an interrupted or failed write leaves the previous report (or nothing), never part of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EvalReport", "format_value", "write_folder"]


def write_folder(folder: str | os.PathLike, fill: Any) -> Path:
    """Make ``folder`` anew, whole: ``fill(staging)`` writes the files into a temporary folder beside
    it, which then replaces ``folder``; if ``fill`` fails, ``folder`` is left as it was."""
    target = Path(folder).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fill(staging)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
        staging.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def format_value(value: Any, scale: float = 100.0) -> str:
    """A rate as a percentage with one decimal; ``–`` where it is undefined (``None`` / COCO's -1)."""
    return "–" if value is None or value == -1 else f"{value * scale:.1f}"



@dataclass
class EvalReport:
    """Every metric of one evaluation (see :mod:`grounded_sam.evaluation`).

    ``coco``: per IoU type (``"segm"``, ``"bbox"``) COCOeval's 12 stats; ``sa_co``: per IoU type
    SAM 3's cgF1 / pmF1 / IL_MCC; ``per_class``: per class AP, AP50 and, at ``iou_threshold``,
    TP / FP / FN, precision, recall, F1; ``confusions``: ground-truth class vs predicted class.
    """

    ground_truth: str
    predictions: str
    classes: list[str]
    images: int
    iou_type: str  # the one per_class and the headline numbers use: "segm" when both sides have masks
    iou_threshold: float
    coco: dict[str, dict[str, float]] = field(default_factory=dict)
    sa_co: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    confusions: list[dict[str, Any]] = field(default_factory=list)
    pr_curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # per class, from the highest threshold
    worst_images: list[dict[str, Any]] = field(default_factory=list)  # [{image, FP, FN}], most errors first

    def __post_init__(self) -> None:  # not fields: not in metrics.json
        self.data: tuple[Any, Any] | None = None  # (ground truth, predictions) EvalSets, for drawing
        self.images_root: Path | None = None  # where the images are, when known

    # ------------------------------------------------------------------ numbers
    @property
    def ap(self) -> float:
        """COCO AP (IoU 0.50:0.95) of the main IoU type."""
        return self.coco[self.iou_type]["AP"]

    @property
    def cgf1(self) -> float:
        """SAM 3's cgF1 (IoU 0.50:0.95) of the main IoU type."""
        return self.sa_co[self.iou_type]["cgF1"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # ------------------------------------------------------------------ text
    def summary(self) -> str:
        """A few lines for a terminal."""
        t = self.iou_type
        kind = "mask" if t == "segm" else "box"
        lines = [f"{self.images} images, {len(self.classes)} classes: {kind} AP {format_value(self.coco[t]['AP'])}, "
                 f"AP50 {format_value(self.coco[t]['AP50'])}, cgF1 {self.sa_co[t]['cgF1']:.1f} "
                 f"(pmF1 {format_value(self.sa_co[t]['pmF1'])}, IL_MCC {self.sa_co[t]['IL_MCC']:.3f})"]
        if "bbox" in self.coco and t != "bbox":
            lines.append(f"box AP {format_value(self.coco['bbox']['AP'])}, AP50 {format_value(self.coco['bbox']['AP50'])}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        t = self.iou_type
        out = ["# Label quality", "",
               f"Ground truth: `{self.ground_truth}` ({self.images} images); predictions: `{self.predictions}`.", "",
               "## Summary", "", "| metric | " + " | ".join(self.coco) + " |", "|---|" + "---|" * len(self.coco)]
        for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
            out.append(f"| {name} | " + " | ".join(format_value(self.coco[k][name]) for k in self.coco) + " |")
        for name, scale in (("cgF1", 1.0), ("cgF1@50", 1.0), ("pmF1", 100.0), ("IL_MCC", 1.0)):
            out.append(f"| {name} | " + " | ".join(
                format_value(self.sa_co[k][name], scale) if scale != 1.0 or name.startswith("cg")
                else f"{self.sa_co[k][name]:.3f}" for k in self.sa_co) + " |")
        out += ["", f"## Per class ({'mask' if t == 'segm' else 'box'} IoU; P / R / F1 at IoU {self.iou_threshold})", "",
                "| class | GT | predictions | AP | AP50 | TP | FP | FN | precision | recall | F1 |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, row in self.per_class.items():
            out.append(f"| {name} | {row['gt_instances']} | {row['predictions']} | {format_value(row['AP'])} | "
                       f"{format_value(row['AP50'])} | {row['TP']} | {row['FP']} | {row['FN']} | {format_value(row['precision'])} | "
                       f"{format_value(row['recall'])} | {format_value(row['F1'])} |")
        if self.confusions:
            out += ["", "## Confusions (a ground-truth instance found as another class)", "",
                    "| ground truth | predicted as | count |", "|---|---|---|"]
            out += [f"| {c['gt']} | {c['pred']} | {c['count']} |" for c in self.confusions]
        return "\n".join(out) + "\n"

    # ------------------------------------------------------------------ files
    def save(self, folder: str | os.PathLike, *, images: str | os.PathLike | None = None) -> Path:
        """Write the report folder (replaced whole; module docs). ``images``: the folder the image
        file names are relative to (default: where the evaluation found them, if it did), for
        drawing the worst images."""
        from grounded_sam.evaluation.figures import pr_curve_png, safe_name, side_by_side_png
        from grounded_sam.evaluation.html import render_html

        def fill(staging: Path) -> None:
            (staging / "metrics.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
            (staging / "report.md").write_text(self.to_markdown(), encoding="utf-8")
            curves = {name: pr_curve_png(name, curve, self.per_class.get(name)) for name, curve in self.pr_curves.items()}
            worst: dict[str, bytes] = {}
            root = images if images is not None else self.images_root
            if root is not None and self.data is not None:
                ground_truth, predictions = self.data
                for entry in self.worst_images:
                    key = entry["image"]
                    info = ground_truth.images[key]
                    path = next((p for p in (Path(root) / info.path, Path(root) / key) if p.is_file()), None)
                    if path is not None:
                        worst[key] = side_by_side_png(path, key, ground_truth, predictions)
            for sub, pictures, numbered in (("pr", curves, False), ("worst", worst, True)):
                if pictures:
                    (staging / sub).mkdir()
                for k, (name, png) in enumerate(pictures.items(), start=1):
                    (staging / sub / f"{f'{k:02d}_' if numbered else ''}{safe_name(name)}.png").write_bytes(png)
            (staging / "report.html").write_text(render_html(self, curves, worst), encoding="utf-8")

        return write_folder(folder, fill)
