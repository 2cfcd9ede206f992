"""``owlv2`` and ``owlvit``: OWLv2 and OWL-ViT (v1) open-vocabulary detectors.

Default hub ids:

- ``owlv2``: ``google/owlv2-base-patch16-ensemble``. The ensemble (self-trained + fine-tuned
  weights averaged) is the best OWLv2 checkpoint at base size (~155M parameters, one ViT-B/16
  pass at 960x960); ``google/owlv2-large-patch14-ensemble`` is more accurate and ~3x the cost.
- ``owlvit``: ``google/owlvit-base-patch32``, the cheapest OWL-ViT (768x768, B/32) and the
  reference checkpoint of the transformers docs; ``-base-patch16``/``-large-patch14`` trade
  speed for accuracy.

Every caption is one text query; the model scores every image patch box against every query,
and a box is credited to its best query (positive or negative caption). ``labels`` returned by
the processor are query indices, so the caption mapping is exact. OWL's text encoder holds 16
tokens: longer captions are truncated, with a warning naming them. Box scaling (OWLv2 pads to a
square, OWL-ViT stretches) is the processor's own ``post_process_grounded_object_detection``.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

from detectors.ontology_ops import PromptTable, RawDetections
from detectors.transformers_base import TransformersDetector, load_pretrained

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["OwlDetector", "OwlVitDetector", "Owlv2Detector"]

logger = logging.getLogger(__name__)


class OwlDetector(TransformersDetector):
    """Shared OWL code; use :class:`Owlv2Detector` or :class:`OwlVitDetector`.

    Default ``box_threshold`` 0.1 (the transformers default for OWL), ``batch_size`` 4.
    """

    default_box_threshold: ClassVar[float] = 0.1
    default_batch_size: ClassVar[int] = 4
    model_type: ClassVar[str] = ""
    # each caption is its own query (no joint prompt): the captions per pass change only the speed
    settings_keys: ClassVar[tuple[str, ...]] = ("box_threshold", "nms_iou", "negative_iou")

    def _load(self, model_id: str) -> tuple[Any, Any]:
        from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoProcessor

        config = load_pretrained(AutoConfig, model_id, f"{self.name} config")
        if config.model_type != self.model_type:
            raise ValueError(
                f"{model_id!r} is a {config.model_type!r} model, not {self.model_type!r}; "
                "load it under its own detector name"
            )
        processor = load_pretrained(AutoProcessor, model_id, f"{self.name} processor")
        model = load_pretrained(AutoModelForZeroShotObjectDetection, model_id, f"{self.name} model")
        return model, processor

    def _max_query_tokens(self) -> int:
        return int(self.processor.tokenizer.model_max_length)

    def _check_texts(self, table: PromptTable) -> None:
        limit = self._max_query_tokens()
        lengths = [len(ids) for ids in self.processor.tokenizer(list(table.texts))["input_ids"]]
        long = [c for c, n in zip(table.captions, lengths) if n > limit]
        if long:
            logger.warning(
                "%s: captions longer than the text encoder's %d tokens are truncated: %s",
                self.name,
                limit,
                long,
            )

    def _forward(
        self, images: list[PILImage.Image], texts: list[str], min_score: float
    ) -> list[RawDetections]:
        inputs = self.processor(
            images=images, text=[list(texts)] * len(images), return_tensors="pt", truncation=True
        )
        outputs = self.model(**inputs.to(self.device))
        outputs = SimpleNamespace(logits=outputs.logits.float(), pred_boxes=outputs.pred_boxes.float())
        sizes = [(im.height, im.width) for im in images]
        results = self.processor.post_process_grounded_object_detection(
            outputs, threshold=-1.0, target_sizes=sizes
        )
        out = []
        for res in results:
            scores = res["scores"].cpu().numpy()
            keep = scores >= min_score
            out.append(
                RawDetections(
                    res["boxes"].cpu().numpy()[keep], scores[keep], res["labels"].cpu().numpy()[keep]
                )
            )
        return out


class Owlv2Detector(OwlDetector):
    """OWLv2 (default ``google/owlv2-base-patch16-ensemble``)."""

    name: ClassVar[str] = "owlv2"
    model_type: ClassVar[str] = "owlv2"


class OwlVitDetector(OwlDetector):
    """OWL-ViT v1 (default ``google/owlvit-base-patch32``)."""

    name: ClassVar[str] = "owlvit"
    model_type: ClassVar[str] = "owlvit"
