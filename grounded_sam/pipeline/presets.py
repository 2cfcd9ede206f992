"""Pipeline presets: YAML files that fill ``GroundedSAM``'s constructor arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from grounded_sam.pipeline.configs import pipeline_config_path
from ontologies import CaptionOntology

__all__ = ["load_preset"]

_TOP = {"ontology", "detector", "segmenter", "device", "multimask", "postprocess"}
_DETECTOR = {"name", "model_id", "box_threshold", "text_threshold", "nms_iou", "options"}
_SEGMENTER = {"name", "checkpoint", "image_size"}
_POST = {"min_hole_area", "min_island_area", "smooth_kernel"}


def _section(data: dict[str, Any], key: str, allowed: set[str], where: str) -> dict[str, Any]:
    value = data.get(key) or {}
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: '{key}' must be a mapping, got {value!r}")
    unknown = set(value) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys in '{key}': {sorted(unknown)}; allowed: {sorted(allowed)}")
    return value


def load_preset(path_or_name: str | Path) -> dict[str, Any]:
    """Constructor kwargs for ``GroundedSAM`` from a preset file or a bundled preset name."""
    p = Path(path_or_name)
    path = p if p.suffix in {".yaml", ".yml"} and p.is_file() else pipeline_config_path(str(path_or_name))
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    where = str(path)
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a pipeline preset must be a mapping")
    unknown = set(data) - _TOP
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_TOP)}")
    kwargs: dict[str, Any] = {}
    onto = data.get("ontology")
    if isinstance(onto, str):
        onto_path = Path(onto) if Path(onto).is_absolute() else path.parent / onto
        kwargs["ontology"] = CaptionOntology.from_yaml(onto_path)
    elif onto is not None:
        kwargs["ontology"] = CaptionOntology.from_dict(onto)
    det = _section(data, "detector", _DETECTOR, where)
    if "name" in det:
        kwargs["detector"] = det["name"]
    for src, dst in (("model_id", "detector_model_id"), ("box_threshold", "box_threshold"),
                     ("text_threshold", "text_threshold"), ("nms_iou", "nms_iou"), ("options", "detector_options")):
        if src in det:
            kwargs[dst] = det[src]
    seg = _section(data, "segmenter", _SEGMENTER, where)
    if "name" in seg:
        kwargs["segmenter"] = seg["name"]
    for key in ("checkpoint", "image_size"):
        if key in seg:
            kwargs[key] = seg[key]
    kwargs.update(_section(data, "postprocess", _POST, where))
    for key in ("device", "multimask"):
        if key in data:
            kwargs[key] = data[key]
    return kwargs
