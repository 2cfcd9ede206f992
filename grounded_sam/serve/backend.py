"""The Label Studio ML backend's logic, free of HTTP: set a project up, pre-annotate tasks, answer
the smart tools.

- **Pre-annotation** (``/predict`` without ``context``): the project's labels, each with its
  captions (:mod:`grounded_sam.serve.label_config`), become the pipeline's ontology for that
  project (a shallow copy of the pipeline: the models are shared); every detection is written
  into every drawing control whose labels hold its class, as a brush mask, a polygon or a
  rectangle (:mod:`grounded_sam.serve.results`).
- **Smart tools** (``/predict`` with ``context``): the keypoints (positive and negative) or the
  rectangle the annotator drew become SAM prompts on the task's image; the mask goes to the
  brush control on the same image with the prompt's label. The image embeddings of the last
  ``cache_tasks`` tasks clicked on are kept (:class:`EmbeddingCache`, least recently used
  first out), so a click on any of them runs the mask decoder only: no download, no encoder.
  A caption typed into a ``TextArea`` (and no click) runs the detector for that caption instead
  (SAM 3 segments it by itself); its objects go to the same control.
- **Video** (a ``<Video>`` with a ``VideoRectangle`` and ``<Labels>``): pre-annotation tracks the
  labels' captions through the whole video with the pipeline's tracker and answers one
  ``videorectangle`` region per track (:mod:`grounded_sam.serve.video`). The video is fetched like
  an image (up to ``max_video_mb``).
- **Images**: an ``http(s)`` URL on the Label Studio host given at ``/setup`` (relative URLs
  such as ``/data/upload/...`` are joined to it; the project's access token is sent), a cloud
  URI (``s3://...``) resolved through that host, or a local path under one of ``local_roots``
  (:mod:`grounded_sam.serve.images`). Anything else is refused. A task whose image fails gets an
  empty prediction with an ``error`` field; the other tasks go on.
"""

from __future__ import annotations

import copy
import logging
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grounded_sam.serve.images import AccessTokens, ImageRefused, ImageSource, fetch_file, read_image
from grounded_sam.serve.label_config import LabelConfig, LabelConfigError, parse_label_config
from grounded_sam.serve.results import brush_result, polygon_result, rectangle_result
from grounded_sam.serve.video import VideoControl, parse_video_controls, predict_video, video_ontology

__all__ = ["BackendOptions", "LabelStudioBackend", "ImageRefused", "LabelConfigError", "EmbeddingCache"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendOptions:
    """``local_roots``: folders whose files tasks may name by path. ``hostname``: the Label Studio
    URL to fetch images from before any ``/setup`` names one. ``access_token``: sent to it instead
    of the token Label Studio gives at ``/setup`` (a legacy token, which Label Studio 1.23 takes only
    where legacy tokens are on); a personal access token works too. ``max_image_mb``: refuse larger
    downloads. ``timeout_s``: per image download. ``pipeline_captions``: captions for labels
    without a ``hint`` come from the pipeline's ontology. ``cache_tasks``: how many tasks' image
    embeddings the smart tools keep (SAM 2 at 1024 px: ~16 MB each)."""

    model_version: str = "grounded-sam"
    local_roots: tuple[Path, ...] = ()
    hostname: str | None = None
    access_token: str | None = None
    max_image_mb: float = 64.0
    timeout_s: float = 30.0
    pipeline_captions: bool = True  # False: the pipeline's ontology is a placeholder, hints only
    cache_tasks: int = 8
    max_video_mb: float = 1024.0
    track_options: Mapping[str, Any] | None = None  # GroundedSAM.track's: tracker, redetect_every, memory

    def __post_init__(self) -> None:
        if self.cache_tasks < 1:
            raise ValueError(f"cache_tasks must be at least 1, got {self.cache_tasks}")


class EmbeddingCache:
    """The image embeddings of the last ``size`` tasks, least recently used first out.

    An entry is a predictor holding one image's embedding and that image's ``(height, width)``,
    so a hit needs neither the image nor the encoder. For a PyTorch :class:`segmenter.ImagePredictor`
    each entry gets a predictor of its own on the shared model; any other predictor (an exported
    ONNX segmenter holds one image) is used as it is, so its entries evict one another and
    :meth:`forget` drops them when the pipeline sets another image on it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, tuple[Any, tuple[int, int]]] = OrderedDict()

    def forget(self, predictor: Any) -> None:
        """Drop the entries that ``predictor`` holds (it is about to hold another image)."""
        for key in [k for k, (p, _) in self._entries.items() if p is predictor]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> tuple[Any, tuple[int, int]] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def embed(self, key: Hashable, predictor: Any, image: np.ndarray) -> tuple[Any, tuple[int, int]]:
        """Embed ``image`` for ``key`` (in a predictor of its own on ``predictor``'s model where it can)."""
        from segmenter import ImagePredictor

        if isinstance(predictor, ImagePredictor):
            own = ImagePredictor(predictor.model, mask_threshold=predictor.mask_threshold)
        else:
            own = predictor
            self.forget(predictor)
        own.set_image(image)
        self._entries[key] = (own, (int(image.shape[0]), int(image.shape[1])))
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return self._entries[key]


@dataclass
class _Project:
    schema: str
    config: LabelConfig
    pipeline: Any
    hostname: str | None
    access_token: str | None
    videos: tuple[VideoControl, ...] = ()
    video_pipeline: Any = None


class LabelStudioBackend:
    """``pipeline``: a :class:`grounded_sam.GroundedSAM` (or anything with ``ontology``,
    ``predict(image) -> sv.Detections`` with masks, ``classes`` and ``predictor``). Its ontology
    supplies captions for labels without a ``hint``."""

    def __init__(self, pipeline: Any, options: BackendOptions | None = None) -> None:
        self.pipeline = pipeline
        self.options = options or BackendOptions()
        self._projects: dict[str, _Project] = {}
        self._lock = threading.Lock()  # one model call at a time; guards the embeddings
        self.embeddings = EmbeddingCache(self.options.cache_tasks)  # (project, task id, image source) -> embedding
        self._tokens = AccessTokens()  # personal access tokens -> access tokens

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
        videos, problems = parse_video_controls(schema, captions)
        if problems:
            raise LabelConfigError(problems)
        try:
            config = parse_label_config(schema, captions)
        except LabelConfigError as e:
            if not videos or any("<Image>" not in p and "BrushLabels" not in p for p in e.problems):
                raise
            config = LabelConfig({}, ())  # a video project: no image controls
        from ontologies import CaptionOntology

        pipeline = copy.copy(self.pipeline)  # the models are shared; only the ontology is the project's
        pipeline.ontology = CaptionOntology(config.ontology()) if config.images else self.pipeline.ontology
        video_pipeline = None
        if videos:
            video_pipeline = copy.copy(self.pipeline)
            video_pipeline.ontology = CaptionOntology(video_ontology(videos))
        project = _Project(schema, config, pipeline, hostname or (known.hostname if known else None) or self.options.hostname,
                           self.options.access_token or token or (known.access_token if known else None),
                           tuple(videos), video_pipeline)
        self._projects[key] = project
        return project

    # ------------------------------------------------------------------ pre-annotation
    def _preannotate(self, project: _Project, task: Mapping[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        controls = project.config.drawing()
        for to_name in dict.fromkeys(c.to_name for c in controls):
            image = self.load_image(project, task, to_name)
            out += self._detect(project.pipeline, image, [c for c in controls if c.to_name == to_name])
        for data_key in dict.fromkeys(v.data_key for v in project.videos):
            out += self._track(project, task, data_key, [v for v in project.videos if v.data_key == data_key])
        return out

    def _track(self, project: _Project, task: Mapping[str, Any], data_key: str,
               controls: list[VideoControl]) -> list[dict[str, Any]]:
        """The tracks of the task's video ``data[data_key]`` as ``videorectangle`` regions."""
        import tempfile

        value = (task.get("data") or {}).get(data_key)
        if not isinstance(value, str) or not value:
            raise ImageRefused(f"task {task.get('id')}: no video under data[{data_key!r}]")
        source = ImageSource(project.hostname, project.access_token, self.options.local_roots,
                             self.options.max_video_mb, self.options.timeout_s, self._tokens)
        data = fetch_file(value, task.get("id"), source)
        options = dict(self.options.track_options or {})
        with tempfile.TemporaryDirectory(prefix="gsam-ls-video-") as tmp:
            if not isinstance(data, Path):  # the decoder reads files: the download goes to a temporary one
                suffix = Path(urllib.parse.urlparse(value).path).suffix or ".mp4"
                path = Path(tmp) / f"video{suffix}"
                path.write_bytes(data)
                data = path
            with self._lock:
                self.embeddings.forget(project.video_pipeline.predictor)
                return predict_video(project.video_pipeline, str(data), controls, **options)

    def _detect(self, pipeline: Any, image: np.ndarray, controls: list[Any]) -> list[dict[str, Any]]:
        """``pipeline``'s detections on ``image``, written into each of ``controls`` that holds their class."""
        with self._lock:
            self.embeddings.forget(pipeline.predictor)  # when clicks share it (ONNX)
            dets = pipeline.predict(image)
        out: list[dict[str, Any]] = []
        hw = image.shape[:2]
        for i in range(len(dets)):
            label = pipeline.classes[int(dets.class_id[i])]
            score = float(dets.confidence[i]) if dets.confidence is not None else None
            for control in controls:
                if label not in control.labels:
                    continue
                if control.type == "rectanglelabels":
                    out.append(rectangle_result(dets.xyxy[i], hw, label, control.name, control.to_name, score))
                elif control.type == "polygonlabels":
                    result = polygon_result(dets.mask[i], label, control.name, control.to_name, score)
                    if result is not None:
                        out.append(result)
                else:
                    out.append(brush_result(dets.mask[i], label, control.name, control.to_name, score))
        return out

    # ------------------------------------------------------------------ smart tools
    def _smart(self, project: _Project, key: Any, task: Mapping[str, Any],
               context: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        prompts = [r for r in context if r.get("type") in ("keypointlabels", "rectanglelabels")]
        captions = [(r, t.strip()) for r in context if r.get("type") == "textarea"
                    for t in (r.get("value") or {}).get("text") or () if isinstance(t, str) and t.strip()]
        if not prompts and captions:
            return self._caption(project, task, *captions[-1])
        if not prompts:
            raise ValueError("the context holds no keypoint, rectangle or text to segment")
        to_name = prompts[0].get("to_name") or next(iter(project.config.images))
        target = self._mask_control(project, to_name)
        first = prompts[0]["value"]
        label = (first.get(prompts[0]["type"]) or [None])[0] or (target.labels[0] if target.labels else "")
        predictor = project.pipeline.predictor
        if predictor is None:
            raise ValueError("smart tools need a segmenter; this pipeline's detector segments by itself (give --segmenter)")
        source = (str(key or ""), task.get("id"), self._image_value(project, task, to_name))
        with self._lock:
            entry = self.embeddings.get(source)
        if entry is None:
            image = self.load_image(project, task, to_name)  # outside the lock: other clicks go on meanwhile
            with self._lock:
                entry = self.embeddings.embed(source, predictor, image)
        embedded, (h, w) = entry
        points, labels, box = [], [], None
        for r in prompts:
            v = r["value"]
            if r["type"] == "keypointlabels":
                points.append([v["x"] * w / 100.0, v["y"] * h / 100.0])
                labels.append(0 if r.get("is_positive") is False else 1)
            else:
                x, y = v["x"] * w / 100.0, v["y"] * h / 100.0
                box = np.array([x, y, x + v["width"] * w / 100.0, y + v["height"] * h / 100.0])
        multimask = box is None and len(points) == 1  # one click is ambiguous: keep SAM's best guess
        with self._lock:
            low_res, iou = embedded.predict_low_res(
                point_coords=np.array(points, dtype=np.float32) if points else None,
                point_labels=np.array(labels, dtype=np.int32) if points else None,
                boxes=box, multimask_output=multimask)  # (1, C, h, w), (1, C)
            best = int(iou[0].argmax())
            logits = embedded.upscale_logits(low_res[:, best:best + 1])  # only the mask kept goes to full size
            mask = (logits[0, 0] > embedded.mask_threshold).cpu().numpy()
        score = float(iou[0, best])
        if target.type == "brushlabels":
            return [brush_result(mask, label, target.name, to_name, score)]
        result = polygon_result(mask, label, target.name, to_name, score)
        return [result] if result is not None else []

    def _mask_control(self, project: _Project, to_name: str) -> Any:
        """Where a smart tool's mask goes: the brush control on ``to_name``, else its polygon control."""
        target = project.config.brush_for(to_name) or next(
            (c for c in project.config.drawing() if c.to_name == to_name and c.type == "polygonlabels"), None)
        if target is None:
            raise ValueError(f"the labeling config has no BrushLabels or PolygonLabels on {to_name!r} for the mask")
        return target

    def _caption(self, project: _Project, task: Mapping[str, Any], region: Mapping[str, Any],
                 caption: str) -> list[dict[str, Any]]:
        """A caption typed into a ``TextArea``: the detector looks for it (SAM 3 segments it itself);
        its objects go to the mask control with the label the caption names (a label's value or
        hint, any case), else that control's first label."""
        from ontologies import CaptionOntology

        names = list(project.config.images)
        to_name = region.get("to_name") if region.get("to_name") in names else names[0]
        target = self._mask_control(project, to_name)
        wanted = caption.casefold()
        label = next((label for label in target.labels if wanted == label.casefold()
                      or wanted in (c.casefold() for c in target.captions.get(label, ()))),
                     target.labels[0] if target.labels else "")
        pipeline = copy.copy(project.pipeline)  # the models are shared; the ontology is this caption
        pipeline.ontology = CaptionOntology({caption: label})
        return self._detect(pipeline, self.load_image(project, task, to_name), [target])

    # ------------------------------------------------------------------ images
    def _image_value(self, project: _Project, task: Mapping[str, Any], to_name: str) -> str:
        key = project.config.images.get(to_name, "image")
        value = (task.get("data") or {}).get(key)
        if not isinstance(value, str) or not value:
            raise ImageRefused(f"task {task.get('id')}: no image under data[{key!r}]")
        return value

    def load_image(self, project: _Project, task: Mapping[str, Any], to_name: str) -> np.ndarray:
        """The task's image as an RGB array, from an allowed place only (:mod:`grounded_sam.serve.images`)."""
        source = ImageSource(project.hostname, project.access_token, self.options.local_roots,
                             self.options.max_image_mb, self.options.timeout_s, self._tokens)
        return read_image(self._image_value(project, task, to_name), task.get("id"), source)
