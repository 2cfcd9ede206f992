"""``GroundedSAM``: captions -> detector boxes -> SAM masks, as ``sv.Detections``.

One image is decoded once, encoded once by the segmenter, and all of its boxes are decoded by
the mask decoder in one batched call. A detector that returns masks itself (``sam3``; see
``detectors.returns_masks``) needs no segmenter: its masks are used as they are, unless a
segmenter is given explicitly, which then re-segments the detector's boxes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import supervision as sv
import torch

from detectors import (
    DetectorSpec, available_detectors, detector_for_folder, load_detector, returns_masks, supports_exemplars,
)
from detectors.ontology_ops import empty_detections
from grounded_sam.defaults import DEFAULT_DETECTOR, DEFAULT_NMS_IOU, DEFAULT_REDETECT_EVERY, DEFAULT_SEGMENTER
from ontologies import CaptionOntology
from runtime.device import resolve_device

if TYPE_CHECKING:
    from grounded_sam.labeling import LabelReport
    from grounded_sam.labeling.options import Format, ImagePrompts

__all__ = ["GroundedSAM", "GroundedSAM2", "empty_result", "make_predictor"]

Tracker = Literal["auto", "sam2", "sam3"]


class GroundedSAM:
    """Text-prompted segmentation.

    Args:
        ontology: ``CaptionOntology`` or a ``{caption: class}`` dict.
        detector: a detector name (``"grounding-dino"``, ``"owlv2"``, ``"owlvit"``,
            ``"florence-2"``, ``"omdet-turbo"``, ``"sam3"``), a local ``save_pretrained``
            directory, or an object with ``detect(images, ontology)``.
        segmenter: a config name (``"sam2.1_hiera_tiny"``: Meta's weights from the hub, or
            ``checkpoint``), a hub id or local checkpoint, a model from
            :func:`segmenter.build_sam`, or an :class:`segmenter.ImagePredictor`. ``None``
            (default): ``"sam2.1_hiera_tiny"``, or no segmenter at all when the detector returns
            masks itself (``sam3``).
        device: ``None`` = CUDA, then MPS, then CPU; used by both models.
        box_threshold: detector score threshold (per-class thresholds of the ontology win).
        text_threshold: Grounding-DINO-style text threshold; a detection's credited caption must
            score at least this much. Detections are scored by their best caption, so the
            effective threshold is ``max(box_threshold, text_threshold)``.
        nms_iou: IoU of the class-wise NMS that merges captions of one class (``None`` = off).
        multimask: decode 3 masks per box and keep the one with the best predicted IoU.
        detector_model_id: hub id / directory for a detector given by name.
        checkpoint: segmenter weights for a segmenter given by config name.
        image_size: segmenter input resolution (default: the config's, 1024).
        min_hole_area, min_island_area, smooth_kernel: optional mask post-processing in pixels.
        detector_options: extra options for :func:`detectors.load_detector`.
    """

    def __init__(
        self,
        ontology: CaptionOntology | Mapping[str, str],
        detector: Any = DEFAULT_DETECTOR,
        segmenter: Any = None,
        device: str | torch.device | None = None,
        box_threshold: float | None = None,
        text_threshold: float | None = None,
        nms_iou: float | None = DEFAULT_NMS_IOU,
        multimask: bool = False,
        *,
        detector_model_id: str | None = None,
        checkpoint: str | Path | None = None,
        image_size: int | None = None,
        min_hole_area: int = 0,
        min_island_area: int = 0,
        smooth_kernel: int = 0,
        detector_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.ontology = ontology if isinstance(ontology, CaptionOntology) else CaptionOntology(dict(ontology))
        self._spec: dict[str, Any] = dict(  # what spec() hands to Ray workers
            ontology=self.ontology, detector=detector, segmenter=segmenter, device=device, box_threshold=box_threshold,
            text_threshold=text_threshold, nms_iou=nms_iou, multimask=multimask, detector_model_id=detector_model_id,
            checkpoint=checkpoint, image_size=image_size, min_hole_area=min_hole_area, min_island_area=min_island_area,
            smooth_kernel=smooth_kernel, detector_options=dict(detector_options) if detector_options else None,
        )
        self.device = resolve_device(device)
        self.multimask = bool(multimask)
        self.min_hole_area, self.min_island_area, self.smooth_kernel = min_hole_area, min_island_area, smooth_kernel
        threshold = box_threshold
        if text_threshold is not None:
            threshold = max(text_threshold, box_threshold if box_threshold is not None else 0.0)
        self.detector, self._detector_name = _make_detector(
            detector, detector_model_id, self.device, threshold, nms_iou, detector_options
        )
        self._threshold, self._nms_iou = threshold, nms_iou
        if segmenter is None and returns_masks(self.detector):
            if checkpoint is not None or image_size is not None:
                raise ValueError("checkpoint / image_size apply to a segmenter; this detector segments by itself "
                                 "(give segmenter=... to re-segment its boxes)")
            self.predictor = None  # the detector's own masks
        else:
            self.predictor = make_predictor(segmenter or DEFAULT_SEGMENTER, checkpoint, self.device, image_size)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, path_or_name: str | Path, **overrides: Any) -> GroundedSAM:
        """Build from a YAML preset (a path, or a name in ``configs/pipelines``).

        Keys: ``ontology`` (mapping, or a path to an ontology YAML relative to the preset),
        ``detector`` (``{name, model_id, box_threshold, text_threshold, nms_iou, options}``),
        ``segmenter`` (``{name, checkpoint, image_size}``), ``device``, ``multimask``,
        ``postprocess`` (``{min_hole_area, min_island_area, smooth_kernel}``). Keyword
        ``overrides`` replace top-level constructor arguments (e.g. ``ontology=...``).
        """
        from grounded_sam.presets import load_preset

        return cls(**{**load_preset(path_or_name), **overrides})

    def spec(self) -> dict[str, Any]:
        """Constructor kwargs that rebuild this pipeline in another process (e.g. a Ray worker).

        Local paths are made absolute. A detector from :func:`detectors.load_detector` or a model
        from :func:`segmenter.build_sam` / :func:`segmenter.from_pretrained` is replaced by the
        recipe it remembers (its ``build_spec``). Raises ``ValueError`` for objects built by hand
        (and for an ``ImagePredictor``: give its model): they cannot be rebuilt elsewhere.
        """
        from segmenter.build import ModelSpec

        spec = dict(self._spec)
        for key in ("detector", "segmenter"):
            value = spec[key]
            if isinstance(value, (str, Path, DetectorSpec, ModelSpec)) or (key == "segmenter" and value is None):
                continue
            recipe = getattr(value, "build_spec", None) if isinstance(value, torch.nn.Module) or key == "detector" else None
            if not isinstance(recipe, (DetectorSpec, ModelSpec)):
                raise ValueError(f"this pipeline's {key} was given as a {type(value).__name__} object built by hand; to "
                                 f"rebuild it in other processes (backend='ray') give the {key} by name, hub id or path, "
                                 f"or build it with {'load_detector' if key == 'detector' else 'build_sam / from_pretrained'}")
            spec[key] = recipe
        from segmenter import list_model_configs

        names = {"detector": set(available_detectors()), "segmenter": set(list_model_configs())}  # names win over paths
        for key in ("detector", "segmenter", "checkpoint", "detector_model_id"):
            value = spec[key]
            if isinstance(value, (str, Path)) and str(value) not in names.get(key, ()) and Path(value).exists():
                spec[key] = str(Path(value).resolve())
        return spec

    @property
    def classes(self) -> list[str]:
        return self.ontology.classes()

    # ------------------------------------------------------------------ images
    @torch.inference_mode()
    def predict(
        self,
        image: Any,
        exemplars: Mapping[str, Any] | None = None,
        negative_exemplars: Mapping[str, Any] | None = None,
    ) -> sv.Detections:
        """Detections with masks for one image (path, PIL image or RGB uint8 array).

        ``exemplars`` / ``negative_exemplars``: visual prompts ``{class name: [[x1, y1, x2, y2],
        ...]}`` in the image's pixels: find every instance like (unlike) the given boxes, with the
        class's captions. Only detectors that take visual prompts accept them (``sam3``).
        """
        return self.predict_batch([image], exemplars=exemplars, negative_exemplars=negative_exemplars)[0]

    @torch.inference_mode()
    def predict_batch(
        self,
        images: Sequence[Any],
        exemplars: Any = None,
        negative_exemplars: Any = None,
    ) -> list[sv.Detections]:
        """:meth:`predict` for several images: one detector batch, one segmenter encoder batch.

        ``exemplars``: one mapping for every image, or a list with one mapping (or ``None``) per image.
        """
        from runtime.images import load_image

        if isinstance(images, (str, Path, np.ndarray)) or not isinstance(images, Sequence):
            raise ValueError("predict_batch expects a list of images; use predict for a single image")
        arrays = [load_image(im) for im in images]
        if not arrays:
            return []
        found = self._detect(arrays, exemplars, negative_exemplars)
        if self.predictor is None:  # the detector's own masks
            return [self._finish_detector_masks(img, dets) for img, dets in zip(arrays, found)]
        if any(len(d) for d in found):
            self.predictor.set_image_batch(arrays)
        return [
            self._segment(i, img, dets) if len(dets) else empty_result(img.shape[:2])
            for i, (img, dets) in enumerate(zip(arrays, found))
        ]

    def _detect(self, arrays: list[np.ndarray], exemplars: Any, negative_exemplars: Any) -> list[sv.Detections]:
        if exemplars is None and negative_exemplars is None:
            return self.detector.detect(arrays, self.ontology)
        self._require_exemplar_detector()
        return self.detector.detect(arrays, self.ontology, exemplars=exemplars, negative_exemplars=negative_exemplars)

    def _require_exemplar_detector(self) -> None:
        if not supports_exemplars(self.detector):
            raise ValueError(
                f"exemplars (visual prompts) need a detector that takes them, such as detector='sam3'; "
                f"{_describe(self.detector)} takes text only"
            )

    def _finish_detector_masks(self, image: np.ndarray, dets: sv.Detections) -> sv.Detections:
        """A masks-returning detector's result with the pipeline's keys: ``mask_score`` is the
        detector's own score (SAM 3 scores the mask), post-processing as for SAM masks."""
        if not len(dets):
            return empty_result(image.shape[:2])
        return self._with_masks(dets, dets.mask.astype(bool, copy=False), np.asarray(dets.confidence, dtype=np.float32))

    def _segment(self, img_idx: int, image: np.ndarray, dets: sv.Detections) -> sv.Detections:
        boxes = torch.as_tensor(dets.xyxy, dtype=torch.float32)
        low, scores = self.predictor.predict_low_res(
            boxes=boxes, multimask_output=self.multimask, img_idx=img_idx
        )  # (N, M, h, w), (N, M)
        best = scores.argmax(-1)  # the best of 3 with multimask, else the only one
        rows = torch.arange(len(best), device=best.device)
        low, scores = low[rows, best][:, None], scores[rows, best]  # chosen before any full-size work
        masks = self.predictor.upscale_logits(low, img_idx)[:, 0] > self.predictor.mask_threshold  # (N, H, W)
        return self._with_masks(dets, masks.cpu().numpy().astype(bool, copy=False), scores.float().cpu().numpy())

    def _with_masks(self, dets: sv.Detections, masks: np.ndarray, mask_score: np.ndarray) -> sv.Detections:
        """``dets`` with its (N, H, W) bool ``masks`` post-processed and ``data["mask_score"]``."""
        if self.min_hole_area or self.min_island_area or self.smooth_kernel:
            from segmenter.postprocess import postprocess_masks

            masks = postprocess_masks(masks, self.min_hole_area, self.min_island_area, self.smooth_kernel)
        return sv.Detections(xyxy=dets.xyxy.astype(np.float32), mask=masks, confidence=dets.confidence,
                             class_id=dets.class_id, data={**dets.data, "mask_score": mask_score})

    # ------------------------------------------------------------------ datasets
    def label(
        self,
        input_folder: str | Path,
        extension: str | Sequence[str] | None = ".jpg",
        output_folder: str | Path | None = None,
        format: Format = "coco",  # noqa: A002 (the public name)
        *,
        backend: Literal["local", "ray"] = "local",
        ray_address: str | None = None,
        exemplars: Mapping[str, Any] | None = None,
        negative_exemplars: Mapping[str, Any] | None = None,
        image_exemplars: Mapping[str, Mapping[str, Any]] | None = None,
        videos: bool = False,
        tracker: Tracker = "auto",
        redetect_every: int | None = None,
        memory: str | None = None,
        **options: Any,
    ) -> LabelReport:
        """Label a folder of images into a dataset (resumable; see :mod:`grounded_sam.labeling`).

        ``options``: the other fields of :class:`~grounded_sam.labeling.LabelOptions`
        (``recursive``, ``batch_size``, ``progress``, ``overwrite``, ``copy_images``,
        ``polygons``, ``multipart``) and, for ``backend="ray"``, of
        :class:`~grounded_sam.labeling.RayOptions` (``num_workers``, ``num_gpus_per_worker``,
        ``num_cpus_per_worker``). ``output_folder`` defaults to ``<input_folder>_labeled``.

        ``backend="ray"``: ``num_workers`` Ray actors each rebuild this pipeline from :meth:`spec`
        (on CUDA when ``num_gpus_per_worker > 0``, else on CPU) and predict batches of
        ``batch_size`` images; the records and dataset files are the local backend's
        (:mod:`grounded_sam.labeling.ray_backend`). ``input_folder`` may then also be a pyarrow URI
        (``s3://...``; give ``output_folder``). ``ray_address``: used only when Ray is not
        initialised (``"auto"`` = the running cluster; the same as ``address`` of ``RayOptions``).

        Visual prompts (detectors that take them, ``sam3``): ``exemplars`` / ``negative_exemplars``
        (``{class: [[x1, y1, x2, y2], ...]}``, as in :meth:`predict`) for every image, and
        ``image_exemplars`` ``{relative path: {"exemplars": ..., "negative_exemplars": ...}}`` for
        single images (replacing the former there). They join the job's fingerprint: a rerun with
        other boxes is refused unless ``overwrite=True``. A box that does not fit its image fails
        that image alone.

        ``videos=True``: ``input_folder`` holds videos (``extension`` by default: every video type);
        each is tracked (``tracker``, ``redetect_every``, ``memory`` as in :meth:`track`) into its own video
        COCO file plus an ``index.json`` (:mod:`grounded_sam.labeling.videos`); with
        ``backend="ray"`` each video is one task on the cluster.
        """
        from grounded_sam.labeling import LabelOptions, RayOptions, label_folder, label_folder_ray
        from grounded_sam.labeling.options import split_options

        if backend not in ("local", "ray"):
            raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
        label_changes, ray_changes = split_options(options, LabelOptions, RayOptions)
        prompts = self._label_prompts(exemplars, negative_exemplars, image_exemplars)
        opts = LabelOptions(extension=extension, format=format, prompts=prompts, **label_changes)
        fingerprint = self.fingerprint() if prompts is None else {**self.fingerprint(), "prompts": prompts.to_json()}
        remote = isinstance(input_folder, str) and "://" in input_folder
        if output_folder is None:
            if remote:
                raise ValueError(f"give output_folder for the remote input {input_folder!r}")
            output_folder = Path(input_folder).with_name(Path(input_folder).name + "_labeled")
        if videos:
            from grounded_sam.labeling.videos import TrackOptions, label_videos, label_videos_ray

            track = TrackOptions(tracker, redetect_every, memory).resolved(self)
            opts = opts.update(extension=None if extension == ".jpg" else extension)
        elif memory is not None:
            raise ValueError("memory applies to video labeling (videos=True)")
        if backend == "ray":
            from grounded_sam.labeling import PipelineFactory

            cluster = RayOptions(**{"address": ray_address, **ray_changes})
            worker = PipelineFactory({**self.spec(), "device": "cuda" if cluster.num_gpus_per_worker > 0 else "cpu"})
            if videos:
                return label_videos_ray(worker, input_folder, output_folder, self.classes, opts, cluster, track,
                                        fingerprint=fingerprint)
            return label_folder_ray(worker, input_folder, output_folder, self.classes, opts, cluster,
                                    fingerprint=fingerprint)
        if remote:
            raise ValueError(f"the local backend reads local folders; give a path, "
                             f"or backend='ray' for {input_folder!r}")
        if videos:
            return label_videos(self, input_folder, output_folder, opts, track, fingerprint=fingerprint)
        return label_folder(self.predict, Path(input_folder), output_folder, self.classes, opts,
                            predict_batch_fn=self.predict_batch, fingerprint=fingerprint)

    def _label_prompts(self, exemplars: Any, negative_exemplars: Any, image_exemplars: Any) -> ImagePrompts | None:
        """``label``'s visual prompts as the job's per-image predictor keywords (JSON-able boxes)."""
        from grounded_sam.labeling.options import ImagePrompts

        def keywords(positive: Any, negative: Any) -> dict[str, Any]:
            return {k: {str(c): np.asarray(b, dtype=float).tolist() for c, b in v.items()}
                    for k, v in (("exemplars", positive), ("negative_exemplars", negative)) if v}

        per_image = {}
        for rel, value in (image_exemplars or {}).items():
            unknown = set(value) - {"exemplars", "negative_exemplars"} if isinstance(value, Mapping) else None
            if unknown is None or unknown:
                raise ValueError(f"image_exemplars[{rel!r}] must be a mapping with 'exemplars' and/or "
                                 f"'negative_exemplars', got {value!r}")
            per_image[str(rel)] = keywords(value.get("exemplars"), value.get("negative_exemplars"))
        prompts = ImagePrompts(keywords(exemplars, negative_exemplars), per_image)
        if not prompts:
            return None
        self._require_exemplar_detector()  # before any image is read
        return prompts

    def fingerprint(self) -> dict[str, Any]:
        """Every setting that can change a label, as JSON (:mod:`grounded_sam.fingerprint`): the
        ontology (per-class thresholds and negatives included), the detector's family, options in
        effect and weights by content, the segmenter's config, weights, input size, mask threshold
        and ``multimask``, and the mask post-processing. ``text_threshold`` acts through the
        detector's effective ``box_threshold`` (the higher of the two). A ``label`` rerun into a
        folder labeled with another fingerprint is refused."""
        from grounded_sam.fingerprint import FINGERPRINT_VERSION, detector_fingerprint, segmenter_fingerprint

        return {
            "version": FINGERPRINT_VERSION,
            "ontology": self.ontology.to_dict(),
            "detector": detector_fingerprint(self.detector),
            "segmenter": None if self.predictor is None else segmenter_fingerprint(self.predictor, self.multimask),
            "postprocess": {"min_hole_area": self.min_hole_area, "min_island_area": self.min_island_area,
                            "smooth_kernel": self.smooth_kernel},
        }

    # ------------------------------------------------------------------ video
    def track(
        self,
        video: Any,
        redetect_every: int | None = None,
        tracker: Tracker = "auto",
        memory: str | None = None,
        **kwargs: Any,
    ) -> Iterator[tuple[int, sv.Detections]]:
        """Track the ontology's objects through a video: ``(frame_index, sv.Detections)`` per frame.

        ``tracker``: ``"sam2"`` detects every ``redetect_every`` frames (default 15) and tracks with
        the segmenter's memory (:class:`grounded_sam.tracking.GroundedTracker`); ``"sam3"`` runs
        SAM 3's concept tracker with every caption in one session
        (:class:`grounded_sam.sam3_tracking.Sam3ConceptTracker`); ``"auto"`` is ``"sam3"`` for the
        ``sam3`` detector and ``"sam2"`` otherwise. ``memory`` (``"sam2"`` only): each track's memory
        policy, ``"fifo"`` (SAM 2's, the default), ``"quality"``, ``"samurai"`` or ``"distractor"``
        (:mod:`segmenter.video.policies`). ``kwargs`` go to the tracker.
        """
        if memory is not None:
            kwargs["memory"] = memory
        for t, _, det in self.make_tracker(tracker, redetect_every=redetect_every, **kwargs).frames(video):
            yield t, det

    def make_tracker(self, tracker: Tracker = "auto", redetect_every: int | None = None, **options: Any) -> Any:
        """The video tracker :meth:`track` runs (its ``frames(video)`` also yields each RGB frame)."""
        kind = self.tracker_kind(tracker)
        if kind == "sam3":
            from grounded_sam.sam3_tracking import DEFAULT_MODEL_ID, Sam3ConceptTracker

            if redetect_every is not None:
                raise ValueError("SAM 3's concept tracker detects on every frame; redetect_every applies to tracker='sam2'")
            if options.get("memory") is not None:
                raise ValueError("memory policies apply to tracker='sam2' (SAM 3's concept tracker has its own memory)")
            options.pop("memory", None)
            model_id = getattr(self.detector, "model_id", None) if self._detector_name == "sam3" else None
            options.setdefault("score_threshold", self._threshold)
            options.setdefault("nms_iou", self._nms_iou)
            return Sam3ConceptTracker(self.ontology, options.pop("model_id", model_id or DEFAULT_MODEL_ID),
                                      device=self.device, **options)
        if kind == "sam2":
            from grounded_sam.tracking import GroundedTracker

            if self.predictor is None:
                raise ValueError("tracker='sam2' tracks with a SAM 2 segmenter, and this pipeline has none (its detector "
                                 "segments by itself): give segmenter='sam2.1_hiera_tiny' or use tracker='sam3'")
            every = DEFAULT_REDETECT_EVERY if redetect_every is None else redetect_every
            return GroundedTracker(self, redetect_every=every, **options)
        raise ValueError(f"tracker must be 'auto', 'sam2' or 'sam3', got {tracker!r}")

    def tracker_kind(self, tracker: Tracker = "auto") -> str:
        """The tracker ``tracker`` stands for: ``"auto"`` is ``"sam3"`` for the ``sam3`` detector, else ``"sam2"``."""
        if tracker == "auto":
            return "sam3" if self._detector_name == "sam3" else "sam2"
        return tracker


GroundedSAM2 = GroundedSAM  # autodistill users change one import


def empty_result(hw: tuple[int, int], tracked: bool = False) -> sv.Detections:
    """A valid empty prediction of an ``(H, W)`` image: (0, H, W) masks and every data key the
    pipeline sets (the detector's and ``mask_score``), so that merging works; ``tracked`` adds
    an empty ``tracker_id``."""
    return empty_detections(hw, tracked=tracked, extra_data={"mask_score": np.float32})


def _describe(detector: Any) -> str:
    model = getattr(detector, "model", None)
    name = getattr(getattr(model, "config", None), "_name_or_path", None)
    return f"{type(detector).__name__}:{name}" if name else type(detector).__name__


def _make_detector(
    spec: Any,
    model_id: str | None,
    device: torch.device,
    threshold: float | None,
    nms_iou: float | None,
    extra: Mapping[str, Any] | None,
) -> tuple[Any, str | None]:
    """The detector and its registry name (``None`` for a detector built by hand)."""
    if isinstance(spec, DetectorSpec):  # a recipe (from spec()): the detector it describes, as it was built
        return spec.build(device), spec.name
    if not isinstance(spec, (str, Path)):
        if model_id is not None or extra:
            raise ValueError("detector_model_id / detector_options only apply to a detector given by name")
        recipe = getattr(spec, "build_spec", None)
        return load_detector(spec), (recipe.name if isinstance(recipe, DetectorSpec) else None)
    name = str(spec)
    if name not in available_detectors() and Path(name).is_dir():  # a local save_pretrained folder
        model_id, name = name, detector_for_folder(name)
    options: dict[str, Any] = dict(extra or {})
    if threshold is not None:
        options["box_threshold"] = threshold
    options.setdefault("nms_iou", nms_iou)
    return load_detector(name, model_id=model_id, device=device, **options), name


def make_predictor(spec: Any, checkpoint: str | Path | None, device: torch.device, image_size: int | None) -> Any:
    """An :class:`segmenter.ImagePredictor` from a config name (+ ``checkpoint``), hub id, path,
    model or predictor (the ``segmenter`` argument of :class:`GroundedSAM`)."""
    from segmenter import ImagePredictor, ModelSpec, build_sam, from_pretrained, list_model_configs, load_model_config

    if isinstance(spec, ImagePredictor):
        return spec
    if isinstance(spec, ModelSpec):  # a recipe (from GroundedSAM.spec())
        return ImagePredictor(spec.build(device))
    if isinstance(spec, torch.nn.Module):
        return ImagePredictor(spec.to(device))
    if not isinstance(spec, (str, Path)):
        raise ValueError(f"segmenter must be a config name, hub id, path, model or ImagePredictor, got {type(spec).__name__}")
    name = str(spec)
    if name in list_model_configs():
        if checkpoint is None:
            ids = load_model_config(name).hf_ids
            checkpoint = ids[0] if ids else None
            if checkpoint is None:
                raise ValueError(f"config {name!r} names no hub checkpoint; pass checkpoint=<path>")
        return ImagePredictor(build_sam(name, checkpoint=checkpoint, device=device, image_size=image_size))
    if checkpoint is not None:
        raise ValueError("checkpoint only applies to a segmenter given by config name")
    return ImagePredictor(from_pretrained(name, device=device, image_size=image_size))
