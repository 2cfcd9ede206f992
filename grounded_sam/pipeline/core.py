"""The pipeline's core, :class:`Pipeline`: captions -> detector boxes -> SAM masks, as ``sv.Detections``.

Everything above it builds on this class and nothing here imports them: tracking
(:mod:`grounded_sam.tracking`), dataset labeling (:mod:`grounded_sam.labeling`), the public
:class:`grounded_sam.GroundedSAM` (:mod:`grounded_sam.api`, which adds ``label`` and ``track``),
the app and the CLI.

One image is decoded once, encoded once by the segmenter, and all of its boxes are decoded by
the mask decoder in one batched call. A detector that returns masks itself (``sam3``; see
``detectors.returns_masks``) needs no segmenter: its masks are used as they are, unless a
segmenter is given explicitly, which then re-segments the detector's boxes.

With ``tile`` the detector sees overlapping tiles of each image (:mod:`grounded_sam.pipeline.tiling`).
With ``windows`` (by default for tiled images) an image larger than the segmenter's input is not
downscaled for SAM: each box is segmented in a window of the original pixels around it, every
window encoded once for all of its boxes (:mod:`grounded_sam.pipeline.windows`).

With ``compact`` the masks are an ``sv.CompactMask`` (crop + RLE, :mod:`grounded_sam.pipeline.masks`),
made one mask at a time so that at most one full-frame mask is alive (none with windows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
import torch

from detectors import (
    DetectorSpec, available_detectors, detector_for_folder, load_detector, returns_masks, supports_exemplars,
)
from detectors.ontology_ops import empty_detections
from grounded_sam.pipeline.defaults import DEFAULT_DETECTOR, DEFAULT_NMS_IOU, DEFAULT_SEGMENTER
from grounded_sam.pipeline.hub import pipeline_models
from grounded_sam.pipeline.masks import CompactMaskBuilder, check_compact, empty_compact, use_compact
from grounded_sam.pipeline.tiling import DEFAULT_TILE_OVERLAP, TileOptions, detect_tiled, tile_options
from grounded_sam.pipeline.windows import check_windows, context_pad, plan_windows, use_windows, windows_fingerprint
from ontologies import CaptionOntology
from gsam_runtime.device import resolve_device
from gsam_runtime.hub import MissingModelsError, offline_mode

__all__ = ["Pipeline", "empty_result", "make_predictor", "describe_detector"]


class Pipeline:
    """Text-prompted segmentation of images (the core of :class:`grounded_sam.GroundedSAM`).

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
        tile: detect on overlapping ``tile`` x ``tile`` windows of each image (pixels, >= 32), or
            ``"auto"``: the detector's input side, for images over twice as large; ``None``: off.
            Pieces of one object cut by tile borders are merged (:mod:`grounded_sam.pipeline.tiling`).
        tile_overlap: fraction of ``tile`` that neighbouring tiles share, in ``[0, 0.9)``.
        compact: masks as ``sv.CompactMask`` (crop + RLE) instead of a dense ``(N, H, W)`` array:
            ``True``, ``False`` (default) or ``"auto"`` (images over 16 MP); see
            :mod:`grounded_sam.pipeline.masks`. Equal to the dense masks pixel for pixel.
        windows: masks at native resolution for an image larger than the segmenter's input: each box
            is segmented in a window of the original pixels around it (:mod:`grounded_sam.pipeline.windows`)
            instead of on the whole image downscaled. ``True``, ``False`` or ``"auto"`` (default: for
            the images detected in several tiles).

    Models given by name or hub id are checked before any loads: one that is neither cached nor
    downloadable from here raises :class:`gsam_runtime.hub.MissingModelsError` at once, naming every
    model the pipeline needs and the commands that fetch them; cached models load without a
    connection (no retries) when the hub does not answer.
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
        tile: int | str | None = None,
        tile_overlap: float = DEFAULT_TILE_OVERLAP,
        compact: bool | str = False,
        windows: bool | str = "auto",
    ) -> None:
        self.ontology = ontology if isinstance(ontology, CaptionOntology) else CaptionOntology(dict(ontology))
        self._spec: dict[str, Any] = dict(  # what spec() hands to Ray workers
            ontology=self.ontology, detector=detector, segmenter=segmenter, device=device, box_threshold=box_threshold,
            text_threshold=text_threshold, nms_iou=nms_iou, multimask=multimask, detector_model_id=detector_model_id,
            checkpoint=checkpoint, image_size=image_size, min_hole_area=min_hole_area, min_island_area=min_island_area,
            smooth_kernel=smooth_kernel, detector_options=dict(detector_options) if detector_options else None,
            tile=tile, tile_overlap=tile_overlap, compact=compact, windows=windows,
        )
        self.compact, self.windows = check_compact(compact), check_windows(windows)
        self.tiling = tile_options(tile, tile_overlap)  # checked before any model loads
        self.device = resolve_device(device)
        self.multimask = bool(multimask)
        self.min_hole_area, self.min_island_area, self.smooth_kernel = min_hole_area, min_island_area, smooth_kernel
        threshold = box_threshold
        if text_threshold is not None:
            threshold = max(text_threshold, box_threshold if box_threshold is not None else 0.0)
        try:  # every model is checked before any loads: one message names them all when one is missing offline
            offline = pipeline_models(type(self).__name__, detector, detector_model_id, segmenter, checkpoint)
        except MissingModelsError as e:
            raise e.with_traceback(None) from None  # a notebook shows this line and the message, no more
        with offline_mode(offline):  # all cached, the hub out of reach: read the cache, no retries
            self.detector, self._detector_name = _make_detector(
                detector, detector_model_id, self.device, threshold, nms_iou, detector_options
            )
            self.score_threshold, self.nms_iou = threshold, nms_iou  # asked for (None: the detector's own)
            if segmenter is None and returns_masks(self.detector):
                if checkpoint is not None or image_size is not None:
                    raise ValueError("checkpoint / image_size apply to a segmenter; this detector segments by itself "
                                     "(give segmenter=... to re-segment its boxes)")
                self.predictor = None  # the detector's own masks
            else:
                self.predictor = make_predictor(segmenter or DEFAULT_SEGMENTER, checkpoint, self.device, image_size)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, path_or_name: str | Path, **overrides: Any) -> Pipeline:
        """Build from a YAML preset (a path, or a name in ``configs/pipelines``).

        Keys: ``ontology`` (mapping, or a path to an ontology YAML relative to the preset),
        ``detector`` (``{name, model_id, box_threshold, text_threshold, nms_iou, options}``),
        ``segmenter`` (``{name, checkpoint, image_size}``), ``device``, ``multimask``,
        ``postprocess`` (``{min_hole_area, min_island_area, smooth_kernel}``). Keyword
        ``overrides`` replace top-level constructor arguments (e.g. ``ontology=...``).
        """
        from grounded_sam.pipeline.presets import load_preset

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

    @property
    def detector_name(self) -> str | None:
        """The detector's registry name (``"grounding-dino"``, ``"sam3"``, ...); ``None`` for one built by hand."""
        return self._detector_name

    # ------------------------------------------------------------------ images
    @torch.inference_mode()
    def predict(
        self,
        image: Any,
        exemplars: Mapping[str, Any] | None = None,
        negative_exemplars: Mapping[str, Any] | None = None,
        *,
        tile: int | str | None = None,
        overlap: float | None = None,
        compact: bool | str | None = None,
        windows: bool | str | None = None,
    ) -> sv.Detections:
        """Detections with masks for one image (path, PIL image or RGB uint8 array).

        ``exemplars`` / ``negative_exemplars``: visual prompts ``{class name: [[x1, y1, x2, y2],
        ...]}`` in the image's pixels: find every instance like (unlike) the given boxes, with the
        class's captions. Only detectors that take visual prompts accept them (``sam3``).
        ``tile`` / ``overlap``: tiled detection for this call (as the constructor's ``tile`` /
        ``tile_overlap``, which apply when these are not given). ``compact`` / ``windows``: this call's
        (as the constructor's, which apply when ``None``).
        """
        return self.predict_batch([image], exemplars=exemplars, negative_exemplars=negative_exemplars,
                                  tile=tile, overlap=overlap, compact=compact, windows=windows)[0]

    @torch.inference_mode()
    def predict_batch(
        self,
        images: Sequence[Any],
        exemplars: Any = None,
        negative_exemplars: Any = None,
        *,
        tile: int | str | None = None,
        overlap: float | None = None,
        compact: bool | str | None = None,
        windows: bool | str | None = None,
    ) -> list[sv.Detections]:
        """:meth:`predict` for several images: one detector batch, one segmenter encoder batch.

        ``exemplars``: one mapping for every image, or a list with one mapping (or ``None``) per image.
        """
        from gsam_runtime.images import load_image

        if isinstance(images, (str, Path, np.ndarray)) or not isinstance(images, Sequence):
            raise ValueError("predict_batch expects a list of images; use predict for a single image")
        arrays = [load_image(im) for im in images]
        if not arrays:
            return []
        compact = self.compact if compact is None else check_compact(compact)
        windows = self.windows if windows is None else check_windows(windows)
        tiling = self._tiling_for(tile, overlap)
        found = self._detect(arrays, exemplars, negative_exemplars, tiling)
        small = [not use_compact(compact, img.shape[:2]) for img in arrays]  # dense masks for these
        if self.predictor is None:  # the detector's own masks
            return [self._finish_detector_masks(img, dets, dense) for img, dets, dense in zip(arrays, found, small)]
        tiled = [tiling is not None and tiling.cuts(img.shape[:2], self.detector) for img in arrays]
        windowed = [len(d) > 0 and use_windows(windows, img.shape[:2], self._segmenter_side(), t)
                    for img, d, t in zip(arrays, found, tiled)]
        whole = [i for i, w in enumerate(windowed) if not w]  # the others are encoded window by window
        if any(len(found[i]) for i in whole):
            self.predictor.set_image_batch([arrays[i] for i in whole])
        out = {i: self._segment(k, arrays[i], found[i], small[i]) if len(found[i]) else _empty(arrays[i].shape[:2],
               small[i]) for k, i in enumerate(whole)}  # before any window replaces the images set
        out.update({i: self._segment_windows(arrays[i], found[i], small[i]) for i in np.flatnonzero(windowed)})
        return [out[i] for i in range(len(arrays))]

    def _tiling_for(self, tile: int | str | None, overlap: float | None) -> TileOptions | None:
        """The tiling of one call: its ``tile`` / ``overlap`` over the pipeline's own."""
        if tile is None and overlap is None:
            return self.tiling
        base = self.tiling
        if tile is None and base is None:
            raise ValueError("overlap applies to tiled detection; give tile=... too (e.g. tile=1024, overlap=0.2)")
        if overlap is None:
            overlap = base.overlap if base is not None else DEFAULT_TILE_OVERLAP
        return tile_options(base.tile if tile is None and base is not None else tile, overlap)

    def _detect(self, arrays: list[np.ndarray], exemplars: Any, negative_exemplars: Any,
                tiling: TileOptions | None = None) -> list[sv.Detections]:
        if tiling is not None:
            if exemplars is not None or negative_exemplars is not None:
                raise ValueError("exemplars (visual prompts) do not work with tiled detection yet; leave tile unset")
            return detect_tiled(self.detector, arrays, self.ontology, tiling)
        if exemplars is None and negative_exemplars is None:
            return self.detector.detect(arrays, self.ontology)
        self.check_exemplars_supported()
        return self.detector.detect(arrays, self.ontology, exemplars=exemplars, negative_exemplars=negative_exemplars)

    def check_exemplars_supported(self) -> None:
        """Raise ``ValueError`` unless the detector takes visual prompts (exemplars)."""
        if not supports_exemplars(self.detector):
            raise ValueError(
                f"exemplars (visual prompts) need a detector that takes them, such as detector='sam3'; "
                f"{describe_detector(self.detector)} takes text only"
            )

    def _finish_detector_masks(self, image: np.ndarray, dets: sv.Detections, dense: bool = True) -> sv.Detections:
        """A masks-returning detector's result with the pipeline's keys: ``mask_score`` is the
        detector's own score (SAM 3 scores the mask), post-processing as for SAM masks."""
        if not len(dets):
            return _empty(image.shape[:2], dense)
        masks = self._postprocess(np.asarray(dets.mask).astype(bool, copy=False))
        return self._with_masks(dets, masks if dense else CompactMaskBuilder.from_dense(masks),
                                np.asarray(dets.confidence, dtype=np.float32))

    def _segment(self, img_idx: int, image: np.ndarray, dets: sv.Detections, dense: bool = True) -> sv.Detections:
        # a box found by several captions or classes (OWL scores one box per patch against every
        # caption) is segmented once: each box is its own prompt, so its mask is the same
        unique, inverse = np.unique(np.asarray(dets.xyxy, np.float32), axis=0, return_inverse=True)  # (U, 4), (N,)
        low, scores = self._decode_boxes(unique, img_idx)
        inverse = inverse.reshape(-1)
        mask_score = scores[inverse]
        if dense:
            masks = self.predictor.upscale_logits(low, img_idx)[:, 0] > self.predictor.mask_threshold  # (U, H, W)
            return self._with_masks(dets, self._postprocess(masks.cpu().numpy().astype(bool, copy=False))[inverse],
                                    mask_score)
        builder = CompactMaskBuilder(image.shape[:2])  # one full-frame mask at a time
        for u in range(len(low)):
            mask = self.predictor.upscale_logits(low[u : u + 1], img_idx)[:, 0] > self.predictor.mask_threshold
            builder.add(self._postprocess(mask.cpu().numpy().astype(bool, copy=False))[0])
        return self._with_masks(dets, builder.build()[inverse], mask_score)

    def _decode_boxes(self, boxes: np.ndarray, img_idx: int) -> tuple[torch.Tensor, np.ndarray]:
        """(U, 1, h, w) low-res logits of each (U, 4) box's mask (the best of 3 with ``multimask``,
        chosen before any full-size work) and its (U,) score, on image ``img_idx`` of the predictor."""
        low, scores = self.predictor.predict_low_res(
            boxes=torch.as_tensor(boxes, dtype=torch.float32), multimask_output=self.multimask, img_idx=img_idx
        )  # (U, M, h, w), (U, M)
        best = scores.argmax(-1)
        rows = torch.arange(len(best), device=best.device)
        return low[rows, best][:, None], scores[rows, best].float().cpu().numpy()

    def _segment_windows(self, image: np.ndarray, dets: sv.Detections, dense: bool = True) -> sv.Detections:
        """:meth:`_segment` at native resolution: boxes grouped into windows of the image
        (:func:`grounded_sam.pipeline.windows.plan_windows`), each window encoded once for all of its
        boxes, each mask made at its window's size and placed back at the window's offset (compact:
        encoded from the window's crop, no full-frame mask is made)."""
        hw = image.shape[:2]
        unique, inverse = np.unique(np.asarray(dets.xyxy, np.float32), axis=0, return_inverse=True)  # (U, 4), (N,)
        inverse, scores = inverse.reshape(-1), np.zeros(len(unique), np.float32)
        masks = np.zeros((len(inverse), *hw), bool) if dense else None  # (N, H, W), in the detections' order
        builder, order = CompactMaskBuilder(hw), []  # compact: masks in the order they are made
        for win in plan_windows(unique, hw, self._segmenter_side()):
            x0, y0, x1, y1 = win.xyxy
            self.predictor.set_image(image[y0:y1, x0:x1])  # one encoder call for all of the window's boxes
            low, scores[win.boxes] = self._decode_boxes(unique[win.boxes] - np.float32([x0, y0, x0, y0]), 0)
            for u, logits in zip(win.boxes, low):  # (1, h, w) each
                crop = self.predictor.upscale_logits(logits[None], 0)[0, 0] > self.predictor.mask_threshold
                crop, cx, cy = self._postprocess_crop(crop.cpu().numpy(), win.xyxy, hw)  # (h', w') at cx, cy
                if masks is not None:  # written in place: the untouched zero pages cost no memory
                    masks[inverse == u, cy : cy + crop.shape[0], cx : cx + crop.shape[1]] = crop
                else:
                    builder.add_crop(crop, cx, cy)
                    order.append(u)
        if masks is None:
            masks = builder.build()[np.argsort(np.array(order, int))][inverse]
        return self._with_masks(dets, masks, scores[inverse])

    def _postprocess_crop(self, crop: np.ndarray, window: tuple[int, int, int, int],
                          hw: tuple[int, int]) -> tuple[np.ndarray, int, int]:
        """A window's (h, w) bool mask after the post-processing, and the image pixel of its top-left
        corner. It is padded with background where the image goes on beyond the window, so that the
        window's edge is not taken for the image's (no hole is filled across it, no smoothing at it)."""
        if not (self.min_hole_area or self.min_island_area or self.smooth_kernel):
            return crop, window[0], window[1]
        pad = self.smooth_kernel + 1 + -(-self.min_hole_area // max(1, min(crop.shape)))  # a strip holds no hole
        left, top, right, bottom = context_pad(window, hw, pad)
        out = self._postprocess(np.pad(crop, ((top, bottom), (left, right)))[None])[0]
        return out, window[0] - left, window[1] - top

    def _segmenter_side(self) -> int:
        """The segmenter's input side in pixels (a window's side)."""
        side = getattr(self.predictor, "image_size", None)  # an ONNX Runtime predictor's
        return int(side if side is not None else self.predictor.model.image_size)

    def _postprocess(self, masks: np.ndarray) -> np.ndarray:
        """(N, H, W) bool masks after the pipeline's optional post-processing."""
        if self.min_hole_area or self.min_island_area or self.smooth_kernel:
            from segmenter.postprocess import postprocess_masks

            masks = postprocess_masks(masks, self.min_hole_area, self.min_island_area, self.smooth_kernel)
        return masks

    def _with_masks(self, dets: sv.Detections, masks: np.ndarray | sv.CompactMask,
                    mask_score: np.ndarray) -> sv.Detections:
        """``dets`` with its (N, H, W) bool (or compact) ``masks`` and ``data["mask_score"]``."""
        return sv.Detections(xyxy=dets.xyxy.astype(np.float32), mask=masks, confidence=dets.confidence,
                             class_id=dets.class_id, data={**dets.data, "mask_score": mask_score})

    # ------------------------------------------------------------------ what the labels depend on
    def fingerprint(self) -> dict[str, Any]:
        """Every setting that can change a label, as JSON (:mod:`grounded_sam.pipeline.fingerprint`): the
        ontology (per-class thresholds and negatives included), the detector's family, options in
        effect and weights by content, the segmenter's config, weights, input size, mask threshold
        and ``multimask``, the mask post-processing, the tiling and the windows (only when on). ``text_threshold``
        acts through the detector's effective ``box_threshold`` (the higher of the two). A ``label``
        rerun into a folder labeled with another fingerprint is refused."""
        from grounded_sam.pipeline.fingerprint import FINGERPRINT_VERSION, detector_fingerprint, segmenter_fingerprint

        return {
            "version": FINGERPRINT_VERSION,
            "ontology": self.ontology.to_dict(),
            "detector": detector_fingerprint(self.detector),
            "segmenter": None if self.predictor is None else segmenter_fingerprint(self.predictor, self.multimask),
            "postprocess": {"min_hole_area": self.min_hole_area, "min_island_area": self.min_island_area,
                            "smooth_kernel": self.smooth_kernel},
            # absent when untiled, so that jobs labeled before tiling existed still match
            **({"tiling": self.tiling.fingerprint()} if self.tiling is not None else {}),
            **windows_fingerprint(self.windows if self.predictor is not None else False, self.tiling is not None),
        }


def empty_result(hw: tuple[int, int], tracked: bool = False) -> sv.Detections:
    """A valid empty prediction of an ``(H, W)`` image: (0, H, W) masks and every data key the
    pipeline sets (the detector's and ``mask_score``), so that merging works; ``tracked`` adds
    an empty ``tracker_id``."""
    return empty_detections(hw, tracked=tracked, extra_data={"mask_score": np.float32})


def _empty(hw: tuple[int, int], dense: bool) -> sv.Detections:
    """:func:`empty_result`, its masks compact unless ``dense``."""
    result = empty_result(hw)
    if not dense:
        result.mask = empty_compact(hw)
    return result


def describe_detector(detector: Any) -> str:
    """``"<class>:<checkpoint>"`` for messages."""
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
    model or predictor (the ``segmenter`` argument of :class:`Pipeline`)."""
    from segmenter import ImagePredictor, ModelSpec, build_sam, from_pretrained, list_model_configs, load_model_config

    if isinstance(spec, ImagePredictor):
        return spec
    if isinstance(spec, ModelSpec):  # a recipe (from Pipeline.spec())
        return ImagePredictor(spec.build(device))
    if isinstance(spec, torch.nn.Module):
        return ImagePredictor(spec.to(device))
    from grounded_sam.pipeline.onnx_segmenter import onnx_segmenter

    if (onnx := onnx_segmenter(spec, device, image_size)) is not None:  # an exported ONNX folder or predictor
        if checkpoint is not None:
            raise ValueError("checkpoint does not apply to an exported ONNX segmenter (its weights are in its graphs)")
        return onnx
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
