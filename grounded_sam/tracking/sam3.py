"""Text-prompted video tracking with SAM 3 alone: ``Sam3ConceptTracker``.

SAM 3 finds, segments and tracks every instance of a noun phrase ("concept") by itself:
per frame its detector runs on every prompt, its SAM 2-style tracker propagates the known
objects, and detections that match no track become new objects (transformers'
``Sam3VideoModel``). This module streams a video through it, one frame at a time:

- frames are decoded lazily by :func:`segmenter.video.frames.open_video` (files, folders,
  frame lists, iterators) and preprocessed one by one; the video is never held whole;
- all captions of the ontology go into **one** session (``Sam3VideoProcessor.add_text_prompt``),
  so the image side of SAM 3 runs once per frame whatever the number of captions;
- the session's memory is pruned after every frame (:mod:`grounded_sam.tracking.sam3_memory`): memory
  stays flat over the video's length and the outputs are bit-identical to transformers'
  streaming loop (``model(session, frame=...)`` + ``processor.postprocess_outputs``).

Each frame gives an ``sv.Detections``: ``mask`` (N, H, W) bool at the video's size, ``xyxy``
float32 (the mask's box), ``confidence`` (SAM 3's score of the detection that started the
track: sigmoid(query logit) x sigmoid(presence logit)), ``tracker_id`` (ours: 1, 2, ... in order
of first output, never reused), ``class_id`` (index into ``ontology.classes()``, from the
caption whose prompt found the object: many captions may name one class),
``data["class_name"]``, ``data["caption"]`` and ``data["has_score"]`` (True). A frame without
objects gives an empty ``Detections`` with the same fields.

Ontology semantics (as the ``sam3`` image detector, per frame):

- per-class thresholds: an object is reported when its score is at least its class's
  ``threshold``, else ``score_threshold`` (``None``: SAM 3's own thresholds only:
  ``score_threshold_detection`` 0.5 to detect, ``new_det_thresh`` 0.7 to start a track);
- negative captions: SAM 3's video model has no negative prompts. Each negative caption is
  prompted like a positive one and its objects are tracked but never reported; on each frame
  a positive object of class ``c`` whose mask IoU with a negative object of class ``c`` is
  above ``negative_iou`` is not reported on that frame (``negative_iou=None``: negative
  captions are ignored and cost nothing);
- several captions of one class: SAM 3 tracks each caption's objects on their own (the masks
  of one caption never overlap; those of two captions may), so on each frame a class's objects
  go through mask NMS (``nms_iou``): of two objects of one class whose masks overlap by more
  than ``nms_iou``, the lower-scoring one is not reported on that frame (``None``: off).

Streaming differs from transformers' offline ``propagate_in_video_iterator`` in one way, as in
transformers itself: there is no "hotstart" (holding outputs 15 frames to drop tracks that do
not last), since that needs future frames. Without the ``kernels`` package (and network to
fetch its ``cv-utils`` kernel) transformers also skips the detector's mask NMS and hole filling.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv
import torch

from detectors.mask_ops import classwise_mask_nms, negative_mask_suppression
from detectors.ontology_ops import PromptTable, empty_detections, normalize_caption
from detectors.sam3 import TEXT_LENGTH, load_sam3_part, transformers_classes
from detectors.transformers_base import as_ontology
from grounded_sam.tracking.sam3_memory import FrameWindow, MemoryWindow, prune_session
from ontologies import CaptionOntology
from gsam_runtime.device import autocast, resolve_device

__all__ = ["DEFAULT_MODEL_ID", "Sam3ConceptTracker", "Sam3TrackOptions", "load_sam3_video", "sam3_video_classes"]

DEFAULT_MODEL_ID = "facebook/sam3"


def sam3_video_classes() -> tuple[Any, Any]:
    """``(Sam3VideoModel, Sam3VideoProcessor)``, or an ``ImportError`` naming the version needed."""
    return transformers_classes("sam3_video", ("Sam3VideoModel", "Sam3VideoProcessor"), "SAM 3 video tracking")


def load_sam3_video(model_id: str = DEFAULT_MODEL_ID) -> tuple[Any, Any]:
    """``(Sam3VideoModel, Sam3VideoProcessor)`` from a hub id or a ``save_pretrained`` folder.

    Gated or missing weights raise ``OSError`` saying how to get them; a checkpoint of another
    kind (e.g. SAM 3's image-only ``sam3``) raises ``ValueError``.
    """
    from transformers import AutoConfig

    model_cls, processor_cls = sam3_video_classes()
    config = load_sam3_part(AutoConfig, model_id, "config")
    if config.model_type != "sam3_video":
        raise ValueError(
            f"{model_id!r} is a {config.model_type!r} checkpoint; SAM 3 concept tracking needs a "
            f"'sam3_video' one (the full SAM 3 release, {DEFAULT_MODEL_ID!r}, is one)"
        )
    processor = load_sam3_part(processor_cls, model_id, "processor")
    return load_sam3_part(model_cls, model_id, "model"), processor


@dataclass(frozen=True)
class Sam3TrackOptions:
    """Options of :class:`Sam3ConceptTracker` (see the module docstring)."""

    score_threshold: float | None = None  # report objects scoring at least this (class thresholds win)
    negative_iou: float | None = 0.5  # mask IoU with a same-class negative object that hides a positive
    nms_iou: float | None = 0.5  # mask IoU above which the lower-scoring of two same-class objects is hidden
    bounded_memory: bool = True  # prune the session after every frame (identical outputs)
    use_autocast: bool = True  # bf16 autocast on CUDA; fp32 elsewhere

    def __post_init__(self) -> None:
        for name in ("score_threshold", "negative_iou", "nms_iou"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be None or a number in [0, 1], got {value!r}")


class Sam3ConceptTracker:
    """Tracks every instance of an ontology's captions through a video with SAM 3.

    Args:
        ontology: ``CaptionOntology`` or a ``{caption: class}`` / rich dict.
        model_id: a hub id (default ``facebook/sam3``, gated), a local ``save_pretrained``
            folder of a ``Sam3VideoModel`` and its processor, or a ``(model, processor)`` pair.
        device: ``None`` = CUDA, then MPS, then CPU.
        score_threshold, negative_iou, nms_iou, bounded_memory, use_autocast: :class:`Sam3TrackOptions`.

    Thresholds only hide objects: SAM 3 detects and starts tracks by its own config
    (``model.config.score_threshold_detection``, ``new_det_thresh``). One video at a time per
    tracker: :attr:`session` is transformers' ``Sam3VideoInferenceSession`` of the video being
    tracked (``None`` between videos). Weights stay fp32; CUDA runs them under bf16 autocast.
    """

    def __init__(
        self,
        ontology: CaptionOntology | Mapping[str, Any],
        model_id: str | tuple[Any, Any] = DEFAULT_MODEL_ID,
        device: str | torch.device | None = None,
        score_threshold: float | None = None,
        *,
        negative_iou: float | None = 0.5,
        nms_iou: float | None = 0.5,
        bounded_memory: bool = True,
        use_autocast: bool = True,
    ) -> None:
        self.ontology = as_ontology(ontology)
        self.options = Sam3TrackOptions(
            score_threshold, negative_iou, nms_iou, bool(bounded_memory), bool(use_autocast)
        )
        self.device = resolve_device(device)
        if isinstance(model_id, tuple):
            model, processor = model_id
        elif isinstance(model_id, str):
            model, processor = load_sam3_video(model_id)
        else:
            raise ValueError(
                f"model_id must be a hub id, a folder or a (model, processor) pair, got {type(model_id).__name__}"
            )
        self.model = model.to(self.device).eval()
        self.processor = processor
        table = PromptTable.from_ontology(self.ontology, normalize=normalize_caption)
        if self.options.negative_iou is None:
            table = _positives_only(table)
        self.table = table
        self._check_lengths()
        self._prompt_index = {text: i for i, text in enumerate(table.texts)}
        self._thresholds = table.thresholds(self.options.score_threshold or 0.0)  # (P,)
        self.window = MemoryWindow.of(self.model)
        self.session: Any = None  # the current transformers session, while a video is tracked

    # ------------------------------------------------------------------ public API
    def track(self, video: Any) -> Iterator[tuple[int, sv.Detections]]:
        """``(frame_index, sv.Detections)`` for every frame of ``video`` (opened now: a missing
        file raises ``FileNotFoundError`` here, not on the first frame)."""
        stream = self.frames(video)
        return ((t, det) for t, _, det in stream)

    def frames(self, video: Any) -> Iterator[tuple[int, np.ndarray, sv.Detections]]:
        """Like :meth:`track`, also yielding each RGB frame ``(H, W, 3)`` uint8 (for drawing)."""
        from segmenter.video.frames import open_video

        return self._stream(open_video(video))

    # ------------------------------------------------------------------ steps
    def _check_lengths(self) -> None:
        tokenizer = self.processor.tokenizer
        for text, caption in zip(self.table.texts, self.table.captions):
            n = len(tokenizer(text)["input_ids"])
            if n > TEXT_LENGTH:
                raise ValueError(
                    f"caption {caption!r} is {n} tokens long; SAM 3 reads at most {TEXT_LENGTH} "
                    "(start and end tokens included): shorten it"
                )

    def _new_session(self) -> Any:
        session = self.processor.init_video_session(inference_device=self.device, dtype=torch.float32)
        if self.options.bounded_memory:
            session.processed_frames = FrameWindow()
        self.processor.add_text_prompt(session, list(self.table.texts))
        return session

    def _stream(self, source: Any) -> Iterator[tuple[int, np.ndarray, sv.Detections]]:
        ids: dict[int, int] = {}  # SAM 3 object id -> our tracker id
        try:
            with self._context():
                self.session = self._new_session()
            t = 0
            while True:
                try:
                    frame = source.get(t)
                except IndexError:
                    return
                with self._context():  # entered per frame: the caller's code between frames runs outside it
                    det = self._step(t, frame, ids)
                yield t, frame, det
                t += 1
        finally:
            source.close()
            self.session = None

    def _context(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(autocast(self.device, enabled=self.options.use_autocast))
        return stack

    def _step(self, t: int, frame: np.ndarray, ids: dict[int, int]) -> sv.Detections:
        session = self.session
        inputs = self.processor(images=frame, device=self.device, return_tensors="pt")
        out = self.model(inference_session=session, frame=inputs.pixel_values[0])
        post = self.processor.postprocess_outputs(session, out, original_sizes=inputs.original_sizes)
        if self.options.bounded_memory:
            prune_session(session, t, self.window)
        return self._detections(post, frame.shape[:2], ids)

    def _detections(self, post: dict[str, Any], hw: tuple[int, int], ids: dict[int, int]) -> sv.Detections:
        obj_ids = post["object_ids"].tolist()
        if not obj_ids:
            return empty_detections(hw, tracked=True)
        text_of = {o: text for text, objs in post["prompt_to_obj_ids"].items() for o in objs}
        pid = np.array([self._prompt_index[text_of[o]] for o in obj_ids], dtype=np.int64)  # (N,)
        masks = post["masks"].cpu().numpy()  # (N, H, W) bool
        scores = post["scores"].float().cpu().numpy()  # (N,)
        class_ids = self.table.class_ids[pid]
        keep = negative_mask_suppression(masks, class_ids, self.table.negative[pid], self.options.negative_iou)
        keep &= scores >= self._thresholds[pid]
        idx = np.flatnonzero(keep)
        idx = np.sort(idx[classwise_mask_nms(masks[idx], scores[idx], class_ids[idx], self.options.nms_iou)])
        if len(idx) == 0:
            return empty_detections(hw, tracked=True)
        for o in (obj_ids[i] for i in idx):
            ids.setdefault(o, len(ids) + 1)
        pid = pid[idx]
        return sv.Detections(
            xyxy=post["boxes"].float().cpu().numpy()[idx].astype(np.float32),  # (N, 4)
            mask=masks[idx],
            confidence=scores[idx].astype(np.float32),
            class_id=class_ids[idx].astype(int),
            tracker_id=np.array([ids[obj_ids[i]] for i in idx], dtype=int),
            data={
                "class_name": np.array([self.table.class_names[i] for i in pid], dtype=str),
                "caption": np.array([self.table.captions[i] for i in pid], dtype=str),
                "has_score": np.ones(len(idx), dtype=bool),
            },
        )


def _positives_only(table: PromptTable) -> PromptTable:
    keep = np.flatnonzero(~table.negative)
    return PromptTable(
        texts=tuple(table.texts[i] for i in keep),
        captions=tuple(table.captions[i] for i in keep),
        class_ids=table.class_ids[keep],
        class_names=tuple(table.class_names[i] for i in keep),
        negative=table.negative[keep],
        class_thresholds=table.class_thresholds[keep],
    )
