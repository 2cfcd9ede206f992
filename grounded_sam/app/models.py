"""The models behind the app: one detector and one segmenter, loaded once, shared by every view.

:class:`AppModels` loads the pipeline the first time captions are given (so the page, not the
shell, shows a loading error: the CLI's message, :func:`grounded_sam.pipeline.hub.loading_error_message`)
and reuses its detector and segmenter for every later ontology. Before loading, it checks that
the models are cached or downloadable (:meth:`AppModels.model_problem`, the CLI's fast check: no
connection retries) and remembers a failure until the models change (the options, or what the
Hugging Face cache holds), so that every later Detect answers at once; :meth:`AppModels.status`
is the start-up line of the terminal and the page. It also remembers which image
the click predictor holds, so an image is embedded once and each click runs only the prompt
encoder and the mask decoder. Model calls take :attr:`AppModels.lock`: the page's events may
run on several threads.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from grounded_sam.pipeline.defaults import DEFAULT_DETECTOR, DEFAULT_SEGMENTER

__all__ = ["ModelOptions", "ModelStatus", "AppModels", "AppError", "parse_captions"]


class AppError(Exception):
    """A problem to show in the page (bad input, a model that failed to load)."""


@dataclass(frozen=True)
class ModelOptions:
    """The CLI's model options (``None``: the pipeline's default)."""

    config: str | None = None  # a pipeline preset (YAML path or bundled name)
    detector: str | None = None
    detector_model_id: str | None = None
    segmenter: str | None = None
    checkpoint: str | None = None
    device: str | None = None
    box_threshold: float | None = None
    text_threshold: float | None = None
    nms_iou: float | None = None
    multimask: bool | None = None
    image_size: int | None = None
    tile: int | str | None = None  # tiled detection of the image view (video does not tile)
    tile_overlap: float | None = None

    def pipeline_kwargs(self) -> dict[str, Any]:
        """``GroundedSAM`` keyword arguments: the preset's, then every option that is set."""
        kwargs: dict[str, Any] = {}
        if self.config:
            from grounded_sam.pipeline.presets import load_preset

            kwargs.update(load_preset(self.config))
            kwargs.pop("ontology", None)
        kwargs.update({k: v for k, v in asdict(self).items() if v is not None and k != "config"})
        return kwargs


@dataclass(frozen=True)
class ModelStatus:
    """What the app says about its models at start-up: ``ok`` (they are cached or downloadable) and the text."""

    ok: bool
    text: str


def parse_captions(text: str | None) -> dict[str, str]:
    """``"a dog:dog, person"`` -> ``{caption: class}`` with the CLI's rules; :class:`AppError` if empty."""
    from grounded_sam.pipeline.prompts import parse_prompt

    try:
        return parse_prompt(text or "")
    except ValueError as e:
        raise AppError(f"captions: {e}") from None


class AppModels:
    """The app's detector + segmenter (module docs)."""

    def __init__(self, options: ModelOptions | None = None) -> None:
        self.options = options or ModelOptions()
        self.lock = threading.RLock()
        self._base: Any = None  # the first GroundedSAM built: owns the detector and the segmenter
        self._pipelines: dict[tuple[tuple[tuple[str, str], ...], bool], Any] = {}  # (captions, tiled) -> pipeline
        self._click: Any = None  # an ImagePredictor for clicks when the pipeline has no segmenter
        self._embedded: tuple[int, str] | None = None  # (id(predictor), image key) held by the predictor
        self._video: Any = None  # the VideoPredictor of corrections
        self._failures: dict[tuple[Any, ...], str] = {}  # (options, role, cache state) -> the message

    @property
    def detector_name(self) -> str:
        return str(self.options.pipeline_kwargs().get("detector", DEFAULT_DETECTOR))

    def default_tracker(self) -> str:
        return "sam3" if self.detector_name == "sam3" else "sam2"

    # ------------------------------------------------------------------ can the models load
    def _needs(self, segmenter_only: bool) -> list[Any]:
        """The hub models Detect (or, ``segmenter_only``, a click) loads (``ValueError`` / ``FileNotFoundError``
        for options that name none)."""
        from grounded_sam.pipeline.hub import models_needed

        kw = self.options.pipeline_kwargs()
        if segmenter_only:
            return models_needed(None, None, kw.get("segmenter"), kw.get("checkpoint"))
        return models_needed(kw.get("detector", DEFAULT_DETECTOR), kw.get("detector_model_id"), kw.get("segmenter"),
                             kw.get("checkpoint"))

    def _state(self, segmenter_only: bool) -> tuple[Any, ...]:
        """What a remembered failure depends on: the options and which models are cached."""
        try:
            cached = tuple(n.is_cached() for n in self._needs(segmenter_only))
        except (ValueError, FileNotFoundError):
            cached = ()
        return self.options, segmenter_only, cached

    def model_problem(self, segmenter_only: bool = False) -> str | None:
        """Why Detect's models (or, ``segmenter_only``, the click segmenter) cannot load here, as the page
        says it; ``None`` when they can (cached, or the hub answers). A failure is remembered until the
        models change: the answer then comes at once, without asking the hub again."""
        from grounded_sam.pipeline.hub import MissingModelsError, check_models, loading_error_message

        with self.lock:
            state = self._state(segmenter_only)
            if state in self._failures:
                return self._failures[state]
            try:
                check_models(self._needs(segmenter_only))
            except (MissingModelsError, ValueError, FileNotFoundError) as e:
                self._failures[state] = loading_error_message(e)
                return self._failures[state]
            return None

    def _remember(self, segmenter_only: bool, e: Exception) -> AppError:
        from grounded_sam.pipeline.hub import loading_error_message

        message = self._failures[self._state(segmenter_only)] = loading_error_message(e)
        return AppError(message)

    def status(self) -> ModelStatus:
        """The start-up line: whether Detect's models can load, and which they are (cached or not)."""
        problem = self.model_problem()
        if problem is not None:
            return ModelStatus(False, problem)
        needs = self._needs(False)
        names = ", ".join(f"{n.role} {n.source}" + ("" if n.is_cached() else " (NOT cached)") for n in needs)
        if all(n.is_cached() for n in needs):
            return ModelStatus(True, f"models ready: {names}")
        return ModelStatus(True, f"models: {names}; they are downloaded on the first Detect")

    # ------------------------------------------------------------------ loading
    def pipeline(self, captions: Mapping[str, str], tiled: bool = False) -> Any:
        """A ``GroundedSAM`` for ``captions`` (the models load on the first call); ``tiled``: with the
        ``tile`` options (the image view), else without (video)."""
        from grounded_sam.api import GroundedSAM
        from ontologies import CaptionOntology

        key = (tuple(captions.items()), tiled)
        with self.lock:
            if key in self._pipelines:
                return self._pipelines[key]
            try:
                ontology = CaptionOntology(dict(captions))
            except ValueError as e:
                raise AppError(f"captions: {e}") from None
            kwargs = self.options.pipeline_kwargs()
            if not tiled:
                kwargs.pop("tile", None), kwargs.pop("tile_overlap", None)
            if self._base is None and (problem := self.model_problem()) is not None:
                raise AppError(problem)
            try:
                if self._base is None:
                    if self._click is not None and "segmenter" in kwargs:  # already loaded for clicks
                        kwargs.update(segmenter=self._click, checkpoint=None, image_size=None)
                        kwargs = {k: v for k, v in kwargs.items() if v is not None}
                    pipe = self._base = GroundedSAM(ontology, **kwargs)
                else:
                    keep = {k: kwargs[k] for k in ("device", "box_threshold", "text_threshold", "nms_iou", "multimask",
                                                   "tile", "tile_overlap") if k in kwargs}
                    pipe = GroundedSAM(ontology, detector=self._base.detector, segmenter=self._base.predictor, **keep)
            except Exception as e:  # noqa: BLE001 - shown in the page, as the CLI shows it
                if self._base is not None:
                    from grounded_sam.pipeline.hub import loading_error_message

                    raise AppError(loading_error_message(e)) from None
                raise self._remember(False, e) from None  # not retried until the models change
            # one ontology at a time (tiled for images, untiled for video); models are shared
            self._pipelines = {k: v for k, v in self._pipelines.items() if k[0] == key[0]} | {key: pipe}
            return pipe

    def click_predictor(self) -> Any:
        """The :class:`segmenter.ImagePredictor` that clicks and drawn boxes run on."""
        with self.lock:
            if self._base is not None and self._base.predictor is not None:
                return self._base.predictor
            if self._click is None:
                from grounded_sam.pipeline.core import make_predictor
                from gsam_runtime.device import resolve_device

                if (problem := self.model_problem(segmenter_only=True)) is not None:
                    raise AppError(problem)
                kw = self.options.pipeline_kwargs()
                try:
                    self._click = make_predictor(kw.get("segmenter") or DEFAULT_SEGMENTER, kw.get("checkpoint"),
                                                 resolve_device(kw.get("device")), kw.get("image_size"))
                except Exception as e:  # noqa: BLE001
                    raise self._remember(True, e) from None
            return self._click

    def predict(self, captions: Mapping[str, str], key: str, image: np.ndarray,
                exemplars: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
        """``(pipeline, sv.Detections)`` for one image; ``exemplars``: ``{class: boxes}`` (``sam3``)."""
        pipe = self.pipeline(captions, tiled=True)
        with self.lock:
            self._embedded = None
            try:
                det = pipe.predict(image, exemplars=exemplars or None)
            except ValueError as e:
                raise AppError(str(e)) from None
            # the pipeline embedded this image (a batch of one); when tiled it may have embedded
            # windows of it instead (grounded_sam.pipeline.windows): the first click embeds the image
            if len(det) and pipe.predictor is not None and pipe.tiling is None:
                self.note_embedded(pipe.predictor, key)
        return pipe, det

    def note_embedded(self, predictor: Any, key: str) -> None:
        """Say that ``predictor`` now holds the embedding of the image ``key``."""
        self._embedded = (id(predictor), key)

    def embed(self, key: str, image: np.ndarray) -> Any:
        """The click predictor with ``image`` set (embedded only if it holds another image)."""
        with self.lock:
            predictor = self.click_predictor()
            if self._embedded != (id(predictor), key):
                predictor.set_image(image)
                self.note_embedded(predictor, key)
            return predictor

    def video_predictor(self) -> Any:
        """The :class:`segmenter.VideoPredictor` on the click segmenter (corrections in videos)."""
        from segmenter.video.predictor import VideoPredictor

        with self.lock:
            model = self.click_predictor().model
            if self._video is None or self._video.model is not model:
                if not getattr(model, "with_memory", False):
                    raise AppError("video corrections need a SAM 2 segmenter with memory modules; this one is image-only")
                self._video = VideoPredictor(model)
            return self._video

    @torch.inference_mode()
    def refine(self, key: str, image: np.ndarray, points: list[tuple[float, float]], labels: list[int],
               box: np.ndarray | None) -> tuple[np.ndarray, float]:
        """The mask of one object's prompts on the cached embedding: ``(mask (H, W) bool, IoU score)``.

        ``ImagePredictor.predict(point_coords, point_labels, box, multimask_output)`` with
        ``multimask_output`` only for a lone click (SAM's ambiguous case; the best-scored mask is kept).
        """
        if not points and box is None:
            raise AppError("an object needs a click or a box")
        with self.lock:
            predictor = self.embed(key, image)
            coords = np.asarray(points, dtype=np.float32).reshape(-1, 2) if points else None
            labs = np.asarray(labels, dtype=np.int32) if points else None
            multimask = box is None and len(points) == 1
            masks, scores, _ = predictor.predict_torch(
                coords, labs, None if box is None else np.asarray(box, np.float32), None, multimask_output=multimask
            )  # (1, C, H, W), (1, C)
            best = int(scores[0].argmax())
            return masks[0, best].cpu().numpy().astype(bool), float(scores[0, best])
