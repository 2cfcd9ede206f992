"""The Label Studio ML backend's logic, free of HTTP: set a project up, pre-annotate tasks, answer
the smart tools.

- **Pre-annotation** (``/predict`` without ``context``): the project's labels, each with its
  captions (:mod:`grounded_sam.serve.label_config`), become the pipeline's ontology for that
  project (a shallow copy of the pipeline: the models are shared); every detection is written
  into every drawing control whose labels hold its class, as a brush mask, a polygon or a
  rectangle (:mod:`grounded_sam.serve.results`).
- **Smart tools** (``/predict`` with ``context``): the keypoints (positive and negative) or the
  rectangle the annotator drew become SAM prompts on the task's image; the mask goes to the
  brush control on the same image with the prompt's label. The last task's image embedding
  stays set in the predictor, so further clicks on that task run the mask decoder only.
- **Images**: an ``http(s)`` URL on the Label Studio host given at ``/setup`` (relative URLs
  such as ``/data/upload/...`` are joined to it; the project's access token is sent), or a local
  path under one of ``local_roots``. Anything else is refused. A task whose image fails gets an
  empty prediction with an ``error`` field; the other tasks go on.
"""

from __future__ import annotations

import copy
import logging
import threading
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grounded_sam.serve.label_config import LabelConfig, LabelConfigError, parse_label_config
from grounded_sam.serve.results import brush_result, polygon_result, rectangle_result

__all__ = ["BackendOptions", "LabelStudioBackend", "ImageRefused", "LabelConfigError"]

log = logging.getLogger(__name__)


class ImageRefused(ValueError):
    """A task's image is not one this server may read."""


@dataclass(frozen=True)
class BackendOptions:
    """``local_roots``: folders whose files tasks may name by path. ``hostname``: the Label Studio
    URL to fetch images from before any ``/setup`` names one. ``max_image_mb``: refuse larger
    downloads. ``timeout_s``: per image download. ``pipeline_captions``: captions for labels
    without a ``hint`` come from the pipeline's ontology."""

    model_version: str = "grounded-sam"
    local_roots: tuple[Path, ...] = ()
    hostname: str | None = None
    access_token: str | None = None
    max_image_mb: float = 64.0
    timeout_s: float = 30.0
    pipeline_captions: bool = True  # False: the pipeline's ontology is a placeholder, hints only


@dataclass
class _Project:
    schema: str
    config: LabelConfig
    pipeline: Any
    hostname: str | None
    access_token: str | None


class LabelStudioBackend:
    """``pipeline``: a :class:`grounded_sam.GroundedSAM` (or anything with ``ontology``,
    ``predict(image) -> sv.Detections`` with masks, ``classes`` and ``predictor``). Its ontology
    supplies captions for labels without a ``hint``."""

    def __init__(self, pipeline: Any, options: BackendOptions | None = None) -> None:
        self.pipeline = pipeline
        self.options = options or BackendOptions()
        self._projects: dict[str, _Project] = {}
        self._lock = threading.Lock()  # one model call at a time; guards the embedded task
        self._embedded: tuple[Any, ...] | None = None  # (project, task id, image source) now set in the predictor

    # ------------------------------------------------------------------ protocol
    def setup(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``/setup``: read the project's labeling config (``schema``). Raises ``LabelConfigError``."""
        self._project(payload.get("project"), payload.get("schema") or payload.get("label_config"),
                      payload.get("hostname"), payload.get("access_token"))
        return {"model_version": self.options.model_version}

    def predict(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``/predict``: one prediction per task, in order. Raises ``LabelConfigError``."""
        tasks = payload.get("tasks") or []
        params = payload.get("params") or {}
        context = params.get("context") or payload.get("context")
        project = self._project(payload.get("project"), payload.get("label_config"),
                                payload.get("hostname"), payload.get("access_token"))
        results = []
        for task in tasks:
            try:
                if context and context.get("result"):
                    result = self._smart(project, payload.get("project"), task, context["result"])
                else:
                    result = self._preannotate(project, task)
                score = float(np.mean([r["score"] for r in result])) if result else 0.0
                results.append({"result": result, "score": score, "model_version": self.options.model_version})
            except Exception as e:  # noqa: BLE001 (one task's failure is that task's answer)
                log.warning("task %s: %s: %s", task.get("id"), type(e).__name__, e)
                results.append({"result": [], "score": 0.0, "model_version": self.options.model_version,
                                 "error": f"{type(e).__name__}: {e}"})
        return {"results": results, "model_version": self.options.model_version}

    # ------------------------------------------------------------------ projects
    def _project(self, key: Any, schema: str | None, hostname: str | None, token: str | None) -> _Project:
        key = str(key or "")
        known = self._projects.get(key)
        if known is not None and (not schema or schema == known.schema):
            return known
        if not schema:
            raise LabelConfigError([("no labeling config: Label Studio sends it as 'schema' (/setup) or "
                                     "'label_config' (/predict)")])
        captions: dict[str, list[str]] = {}
        for caption, cls in (self.pipeline.ontology.items() if self.options.pipeline_captions else ()):
            captions.setdefault(cls, []).append(caption)
        config = parse_label_config(schema, captions)
        from ontologies import CaptionOntology

        pipeline = copy.copy(self.pipeline)  # the models are shared; only the ontology is the project's
        pipeline.ontology = CaptionOntology(config.ontology())
        project = _Project(schema, config, pipeline, hostname or (known.hostname if known else None) or self.options.hostname,
                           token or (known.access_token if known else None) or self.options.access_token)
        self._projects[key] = project
        return project

    # ------------------------------------------------------------------ pre-annotation
    def _preannotate(self, project: _Project, task: Mapping[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        controls = project.config.drawing()
        for to_name in dict.fromkeys(c.to_name for c in controls):
            image = self.load_image(project, task, to_name)
            with self._lock:
                self._embedded = None  # the pipeline sets its own image in the shared predictor
                dets = project.pipeline.predict(image)
            classes = project.pipeline.classes
            hw = image.shape[:2]
            for i in range(len(dets)):
                label = classes[int(dets.class_id[i])]
                score = float(dets.confidence[i]) if dets.confidence is not None else None
                for control in controls:
                    if control.to_name != to_name or label not in control.labels:
                        continue
                    if control.type == "rectanglelabels":
                        out.append(rectangle_result(dets.xyxy[i], hw, label, control.name, to_name, score))
                    elif control.type == "polygonlabels":
                        result = polygon_result(dets.mask[i], label, control.name, to_name, score)
                        if result is not None:
                            out.append(result)
                    else:
                        out.append(brush_result(dets.mask[i], label, control.name, to_name, score))
        return out

    # ------------------------------------------------------------------ smart tools
    def _smart(self, project: _Project, key: Any, task: Mapping[str, Any],
               context: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        prompts = [r for r in context if r.get("type") in ("keypointlabels", "rectanglelabels")]
        if not prompts:
            raise ValueError("the context holds no keypoint or rectangle to segment")
        to_name = prompts[0].get("to_name") or next(iter(project.config.images))
        target = project.config.brush_for(to_name) or next(
            (c for c in project.config.drawing() if c.to_name == to_name and c.type == "polygonlabels"), None)
        if target is None:
            raise ValueError(f"the labeling config has no BrushLabels or PolygonLabels on {to_name!r} for the mask")
        first = prompts[0]["value"]
        label = (first.get(prompts[0]["type"]) or [None])[0] or (target.labels[0] if target.labels else "")
        image = self.load_image(project, task, to_name)
        h, w = image.shape[:2]
        points, labels, box = [], [], None
        for r in prompts:
            v = r["value"]
            if r["type"] == "keypointlabels":
                points.append([v["x"] * w / 100.0, v["y"] * h / 100.0])
                labels.append(0 if r.get("is_positive") is False else 1)
            else:
                x, y = v["x"] * w / 100.0, v["y"] * h / 100.0
                box = np.array([x, y, x + v["width"] * w / 100.0, y + v["height"] * h / 100.0])
        predictor = project.pipeline.predictor
        if predictor is None:
            raise ValueError("smart tools need a segmenter; this pipeline's detector segments by itself (give --segmenter)")
        with self._lock:
            source = (str(key or ""), task.get("id"), self._image_value(project, task, to_name))
            if self._embedded != source or not predictor.is_image_set:
                predictor.set_image(image)
                self._embedded = source
            multimask = box is None and len(points) == 1  # one click is ambiguous: keep SAM's best guess
            masks, iou, _ = predictor.predict(
                point_coords=np.array(points, dtype=np.float32) if points else None,
                point_labels=np.array(labels, dtype=np.int32) if points else None,
                box=box, multimask_output=multimask)
        best = int(np.argmax(iou))
        mask, score = masks[best] > 0, float(iou[best])
        if target.type == "brushlabels":
            return [brush_result(mask, label, target.name, to_name, score)]
        result = polygon_result(mask, label, target.name, to_name, score)
        return [result] if result is not None else []

    # ------------------------------------------------------------------ images
    def _image_value(self, project: _Project, task: Mapping[str, Any], to_name: str) -> str:
        key = project.config.images.get(to_name, "image")
        value = (task.get("data") or {}).get(key)
        if not isinstance(value, str) or not value:
            raise ImageRefused(f"task {task.get('id')}: no image under data[{key!r}]")
        return value

    def load_image(self, project: _Project, task: Mapping[str, Any], to_name: str) -> np.ndarray:
        """The task's image as an RGB array, from an allowed place only (see the module docs)."""
        from gsam_runtime.images import load_image, load_image_bytes

        value = self._image_value(project, task, to_name)
        parsed = urllib.parse.urlparse(value)
        if parsed.scheme in ("http", "https") or value.startswith("/data/"):
            if not project.hostname:
                raise ImageRefused(f"{value!r}: no Label Studio host is known to fetch it from (give --label-studio-url)")
            url = urllib.parse.urljoin(project.hostname.rstrip("/") + "/", value)
            if _origin(url) != _origin(project.hostname):
                raise ImageRefused(f"{value!r} is not on the Label Studio host {project.hostname}")
            request = urllib.request.Request(url)
            if project.access_token:
                request.add_header("Authorization", f"Token {project.access_token}")
            limit = int(self.options.max_image_mb * 2**20)
            opener = urllib.request.build_opener(_SameOriginRedirects(_origin(project.hostname)))
            with opener.open(request, timeout=self.options.timeout_s) as response:  # the origin is checked above
                data = response.read(limit + 1)
            if len(data) > limit:
                raise ImageRefused(f"{value!r} is larger than {self.options.max_image_mb} MB")
            return load_image_bytes(data, name=value)
        if parsed.scheme not in ("", "file"):
            raise ImageRefused(f"{value!r}: only http(s) URLs on the Label Studio host or local paths are read")
        path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else value).resolve()
        if not any(path.is_relative_to(root.resolve()) for root in self.options.local_roots):
            raise ImageRefused(f"{value!r} is outside the folders this server may read (--local-root)")
        return load_image(path)


def _origin(url: str) -> tuple[str, str]:
    parsed = urllib.parse.urlparse(url)
    return parsed.scheme, parsed.netloc.lower()


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects on the Label Studio host only (the access token must not leave it)."""

    def __init__(self, origin: tuple[str, str]) -> None:
        self.origin = origin

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
        if _origin(newurl) != self.origin:
            raise ImageRefused(f"{req.full_url!r} redirects off the Label Studio host, to {newurl!r}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)
