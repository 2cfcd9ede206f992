"""The report as one self-contained HTML page: the tables of ``report.md`` and the pictures inline."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from typing import Any

__all__ = ["render_html"]

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th:first-child,td:first-child{text-align:left}
figure{display:inline-block;margin:.5em}figcaption{font-size:.85em;color:#444}img{max-width:100%}"""


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def render_html(report: Any, curves: Mapping[str, bytes], worst: Mapping[str, bytes]) -> str:
    """``report`` (an :class:`~grounded_sam.evaluation.EvalReport`) with its PR curves (class ->
    PNG) and worst images (image -> PNG) inline."""
    from grounded_sam.evaluation.report import format_value

    t = report.iou_type
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Label quality</title><style>{_STYLE}</style>"
             "</head><body><h1>Label quality</h1>",
             f"<p>Ground truth: <code>{html.escape(report.ground_truth)}</code> ({report.images} images); predictions: "
             f"<code>{html.escape(report.predictions)}</code>.</p><h2>Summary</h2>"]
    rows = [[name, *(format_value(report.coco[k][name]) for k in report.coco)]
            for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")]
    rows += [["cgF1", *(f"{report.sa_co[k]['cgF1']:.1f}" for k in report.sa_co)],
             ["pmF1", *(format_value(report.sa_co[k]["pmF1"]) for k in report.sa_co)],
             ["IL_MCC", *(f"{report.sa_co[k]['IL_MCC']:.3f}" for k in report.sa_co)]]
    parts.append(_table(["metric", *report.coco], rows))
    parts.append(f"<h2>Per class</h2><p>{'Mask' if t == 'segm' else 'Box'} IoU; precision, recall and F1 of the "
                 f"labels as they are, at IoU {report.iou_threshold}.</p>")
    parts.append(_table(["class", "GT", "predictions", "AP", "AP50", "TP", "FP", "FN", "precision", "recall", "F1"],
                        [[name, r["gt_instances"], r["predictions"], format_value(r["AP"]), format_value(r["AP50"]),
                          r["TP"], r["FP"], r["FN"], format_value(r["precision"]), format_value(r["recall"]),
                          format_value(r["F1"])] for name, r in report.per_class.items()]))
    if report.confusions:
        parts.append("<h2>Confusions</h2>" + _table(["ground truth", "predicted as", "count"],
                                                     [[c["gt"], c["pred"], c["count"]] for c in report.confusions]))
    if curves:
        parts.append("<h2>Precision-recall curves</h2>" + "".join(_img(png, name) for name, png in curves.items()))
    if worst:
        parts.append("<h2>Images with the most errors</h2><p>Ground truth left, predictions right.</p>")
        errors = {w["image"]: w for w in report.worst_images}
        parts += [_img(png, f"{name}: {errors[name]['FP']} false positives, {errors[name]['FN']} missed")
                  for name, png in worst.items()]
    return "".join(parts) + "</body></html>\n"
