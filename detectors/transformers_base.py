"""Shared machinery of the transformers-backed detectors: loading, batching, passes, output.

A family subclasses :class:`TransformersDetector` and implements ``_load`` (model and
processor from a hub id or a ``save_pretrained`` directory) and ``_forward`` (one batch of
images against the texts of one pass -> :class:`RawDetections` per image, in pixels of the
original images, prompt indices local to the pass). Families with a text-length limit
override ``_text_cost``/``_text_limit`` and long ontologies are split into several passes.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from detectors.base import DEFAULT_MODEL_IDS
from detectors.images import ImagesInput, load_images
from detectors.ontology_ops import (
    PromptTable,
    RawDetections,
    finalize_detections,
    normalize_caption,
    split_passes,
)
from gsam_runtime.device import autocast, resolve_device
from ontologies import CaptionOntology

if TYPE_CHECKING:
    import supervision as sv
    import torch
    from PIL import Image as PILImage

__all__ = ["TransformersDetector", "as_ontology", "cxcywh_to_xyxy_pixels", "load_pretrained"]

logger = logging.getLogger(__name__)


def as_ontology(ontology: CaptionOntology | Mapping[str, Any]) -> CaptionOntology:
    """A ``CaptionOntology`` as is; a plain or rich dict through ``CaptionOntology.from_dict``."""
    if isinstance(ontology, CaptionOntology):
        return ontology
    if isinstance(ontology, Mapping):
        return CaptionOntology.from_dict(ontology)
    raise ValueError(
        f"ontology must be a CaptionOntology or a dict {{caption: class}}, got {type(ontology).__name__}"
    )


def load_pretrained(loader: Any, model_id: str, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(model_id)`` with an error that says what to do when it fails.

    ``trust_remote_code`` is never passed: only native transformers classes are used.
    """
    try:
        return loader.from_pretrained(model_id, **kwargs)
    except OSError as e:
        raise OSError(
            f"could not load the {what} from {model_id!r}: {e}\nA hub id needs network access "
            "or a copy in the Hugging Face cache; a local directory must hold files written "
            "by save_pretrained."
        ) from e


def _check_fraction(value: float | None, what: str, allow_none: bool = True) -> float | None:
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{what} must be a number in [0, 1], got None")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_count(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


class TransformersDetector(ABC):
    """Base class of the built-in detectors (see the module docstring).

    Options shared by every family:

    - ``box_threshold``: default score threshold, for classes without their own
      ``ontology.threshold(name)`` (family default when ``None``);
    - ``nms_iou``: IoU above which two boxes of one class are duplicates (``None``: no NMS);
    - ``negative_iou``: IoU above which a negative caption's box removes a positive box of
      its class (``None``: negatives are only dropped, never suppress);
    - ``batch_size``: images per forward pass (family default when ``None``);
    - ``captions_per_pass``: cap on captions per forward pass (``None``: as many as the
      model's text limit allows);
    - ``use_autocast``: bf16 autocast on CUDA (a no-op elsewhere);
    - ``model``/``processor``: already-built objects, instead of loading ``model_id``.
    """

    name: ClassVar[str] = ""
    default_box_threshold: ClassVar[float] = 0.3
    default_batch_size: ClassVar[int] = 4
    has_scores: ClassVar[bool] = True
    constant_confidence: ClassVar[float] = 1.0  # confidence reported when has_scores is False
    strip_separators: ClassVar[bool] = False
    settings_keys: ClassVar[tuple[str, ...]] = ("box_threshold", "nms_iou", "negative_iou", "captions_per_pass")
    """The options that change what this family finds (see :meth:`settings`); captions that share
    a joint prompt see each other, so the captions per pass count for a joint-prompt family."""

    def __init__(
        self,
        model_id: str | None = None,
        device: str | torch.device | None = None,
        *,
        box_threshold: float | None = None,
        nms_iou: float | None = 0.5,
        negative_iou: float | None = 0.5,
        batch_size: int | None = None,
        captions_per_pass: int | None = None,
        use_autocast: bool = True,
        model: Any = None,
        processor: Any = None,
    ) -> None:
        self.box_threshold = _check_fraction(
            self.default_box_threshold if box_threshold is None else box_threshold,
            "box_threshold",
            allow_none=False,
        )
        self.nms_iou = _check_fraction(nms_iou, "nms_iou")
        self.negative_iou = _check_fraction(negative_iou, "negative_iou")
        self.batch_size = _check_count(batch_size, "batch_size") or self.default_batch_size
        self.captions_per_pass = _check_count(captions_per_pass, "captions_per_pass")
        self.use_autocast = bool(use_autocast)
        self.device = resolve_device(device)
        if model_id is None and model is not None:
            model_id = getattr(model, "name_or_path", None) or None
        self.model_id = model_id or DEFAULT_MODEL_IDS.get(self.name)
        if (model is None) != (processor is None):
            raise ValueError("pass both model and processor, or neither")
        if model is None:
            if not self.model_id:
                raise ValueError(f"{self.name}: no model_id given and no default is registered")
            model, processor = self._load(self.model_id)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self._plans: dict[tuple[CaptionOntology, int | None], tuple[PromptTable, list[list[int]]]] = {}

    def settings(self) -> dict[str, Any]:
        """The options that change this detector's output for given weights, images and ontology
        (effective values, defaults filled in): a labeling job records them in its fingerprint.
        Speed-only options (``batch_size``, autocast) are not among them."""
        return {"family": self.name, **{key: getattr(self, key) for key in self.settings_keys}}

    # ------------------------------------------------------------------ family hooks
    @abstractmethod
    def _load(self, model_id: str) -> tuple[Any, Any]:
        """The family's (model, processor) for a hub id or a local folder."""

    @abstractmethod
    def _forward(
        self, images: list[PILImage.Image], texts: list[str], min_score: float
    ) -> list[RawDetections]:
        """One batch against one pass; boxes in original pixels; keep ``score >= min_score``."""

    def _text_cost(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes in a joint prompt (families without a joint prompt: 1)."""
        return [1] * len(texts)

    def _text_limit(self) -> tuple[int | None, int]:
        """``(limit, fixed_cost)`` of a joint prompt; ``(None, 0)`` when there is none."""
        return None, 0

    def _check_texts(self, table: PromptTable) -> None:
        """Family-specific checks of the prompt texts (e.g. per-query length limits)."""

    # ------------------------------------------------------------------ planning
    def normalize(self, caption: str) -> str:
        return normalize_caption(caption, strip_separators=self.strip_separators)

    def plan(self, ontology: CaptionOntology | Mapping[str, Any]) -> tuple[PromptTable, list[list[int]]]:
        """The prompt table of ``ontology`` and its split into passes (cached per ontology)."""
        ontology = as_ontology(ontology)
        key = (ontology, self.captions_per_pass)
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        table = PromptTable.from_ontology(ontology, self.normalize)
        self._check_texts(table)
        limit, fixed = self._text_limit()
        passes = split_passes(
            self._text_cost(table.texts),
            limit,
            fixed_cost=fixed,
            max_items=self.captions_per_pass,
            groups=table.groups(),
            names=table.captions,
        )
        if len(passes) > 1:
            logger.info("%s: %d captions split into %d passes", self.name, len(table), len(passes))
        if len(self._plans) >= 16:
            self._plans.clear()
        self._plans[key] = (table, passes)
        return table, passes

    def _min_score(self, table: PromptTable) -> float:
        if not self.has_scores:
            return -math.inf
        return float(table.thresholds(self.box_threshold).min())

    # ------------------------------------------------------------------ public API
    def detect(
        self, images: ImagesInput, ontology: CaptionOntology | Mapping[str, Any]
    ) -> list[sv.Detections]:
        """One ``sv.Detections`` per image (see :mod:`detectors.ontology_ops` for semantics)."""
        import torch

        ontology = as_ontology(ontology)
        pil_images = load_images(images)
        table, passes = self.plan(ontology)
        min_score = self._min_score(table)
        raws: list[list[RawDetections]] = [[] for _ in pil_images]
        with torch.inference_mode(), autocast(self.device, enabled=self.use_autocast):
            for start in range(0, len(pil_images), self.batch_size):
                batch = pil_images[start : start + self.batch_size]
                for pass_ids in passes:
                    texts = [table.texts[i] for i in pass_ids]
                    out = self._forward(batch, texts, min_score)
                    if len(out) != len(batch):
                        raise RuntimeError(
                            f"{self.name}: got {len(out)} results for a batch of {len(batch)} images"
                        )
                    for j, raw in enumerate(out):
                        raws[start + j].append(raw.remap(pass_ids))
        return [
            finalize_detections(
                RawDetections.concat(r),
                table,
                im.size,
                box_threshold=self.box_threshold,
                nms_iou=self.nms_iou,
                negative_iou=self.negative_iou,
                has_scores=self.has_scores,
                constant_confidence=self.constant_confidence,
            )
            for r, im in zip(raws, pil_images)
        ]

    def __call__(
        self, images: ImagesInput, ontology: CaptionOntology | Mapping[str, Any]
    ) -> list[sv.Detections]:
        return self.detect(images, ontology)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r}, device={str(self.device)!r})"


def cxcywh_to_xyxy_pixels(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised ``(cx, cy, w, h)`` -> ``xyxy`` pixels of a ``width x height`` image."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    cx, cy, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    return np.stack(
        [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height],
        axis=1,
    ).astype(np.float32)
