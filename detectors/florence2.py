"""``florence-2``: Florence-2 with the native transformers class (never ``trust_remote_code``).

Default hub id: ``florence-community/Florence-2-base`` (0.23B parameters, MIT), the converted
checkpoint the transformers docs use; ``florence-community/Florence-2-large`` (0.77B) is more
accurate. The ``microsoft/Florence-2-*`` repositories keep the old remote-code layout, which
the native class cannot load: they are refused with a pointer to the converted ids.

Each caption is one ``<OPEN_VOCABULARY_DETECTION>`` query. All the captions of a pass and all
the images of a batch go through **one** ``generate`` call (one row per image x caption), and
the vision tower runs once per image: its features are shared by the rows of that image. A
box is credited to the caption of the row that generated it, never to the text the model
echoes, so the mapping is exact.

Scores. Florence-2 gives none. Every detection carries the documented constant
:data:`FLORENCE2_CONFIDENCE` (1.0) as ``confidence``, and ``data["has_score"]`` is ``False``
to say it is not a score. Score thresholds (``box_threshold`` and the ontology's per-class
thresholds) are therefore not applied; NMS (in generation order) and negative captions are.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from detectors.ontology_ops import PromptTable, RawDetections
from detectors.transformers_base import TransformersDetector, load_pretrained

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage

__all__ = ["FLORENCE2_CONFIDENCE", "TASK", "Florence2Detector"]

logger = logging.getLogger(__name__)

TASK = "<OPEN_VOCABULARY_DETECTION>"
FLORENCE2_CONFIDENCE = 1.0
"""The constant ``confidence`` of every Florence-2 detection (not a score)."""


class Florence2Detector(TransformersDetector):
    """Florence-2 through ``Florence2ForConditionalGeneration``.

    Extra options: ``max_new_tokens`` (1024, as in the model's docs; about 4 location tokens
    plus the label per box), ``num_beams`` (1: greedy, the fast choice; the docs use 3).
    ``captions_per_pass`` defaults to 16 (rows per ``generate`` = images x captions).
    """

    name: ClassVar[str] = "florence-2"
    default_box_threshold: ClassVar[float] = 0.0  # unused: no scores
    default_batch_size: ClassVar[int] = 2
    has_scores: ClassVar[bool] = False
    constant_confidence: ClassVar[float] = FLORENCE2_CONFIDENCE
    settings_keys: ClassVar[tuple[str, ...]] = (*TransformersDetector.settings_keys, "max_new_tokens", "num_beams")

    def __init__(
        self,
        model_id: str | None = None,
        device: Any = None,
        *,
        max_new_tokens: int = 1024,
        num_beams: int = 1,
        captions_per_pass: int | None = 16,
        box_threshold: float | None = None,
        **options: Any,
    ) -> None:
        for value, what in ((max_new_tokens, "max_new_tokens"), (num_beams, "num_beams")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{what} must be a positive integer, got {value!r}")
        self.check_model_id(model_id)
        if box_threshold is not None:
            logger.warning("florence-2 gives no scores: box_threshold=%s is not applied", box_threshold)
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self._text_cache: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        super().__init__(model_id, device, captions_per_pass=captions_per_pass, **options)

    @staticmethod
    def check_model_id(model_id: str | None) -> None:
        """Refuse the ``microsoft/Florence-2-*`` ids (remote code), naming the converted checkpoint."""
        if model_id is not None and str(model_id).lower().startswith("microsoft/florence-2"):
            raise ValueError(
                f"{model_id!r} uses Florence-2's old remote-code layout, which needs "
                "trust_remote_code; use the converted checkpoint "
                f"'florence-community/{str(model_id).split('/', 1)[1]}' instead"
            )

    def _load(self, model_id: str) -> tuple[Any, Any]:
        from transformers import AutoConfig, AutoProcessor, Florence2ForConditionalGeneration

        config = load_pretrained(AutoConfig, model_id, "florence-2 config")
        if config.model_type != "florence2":
            raise ValueError(
                f"{model_id!r} is a {config.model_type!r} model, not 'florence2'; "
                "load it under its own detector name"
            )
        processor = load_pretrained(AutoProcessor, model_id, "florence-2 processor")
        model = load_pretrained(Florence2ForConditionalGeneration, model_id, "florence-2 model")
        return model, processor

    def _check_texts(self, table: PromptTable) -> None:
        if not np.isnan(table.class_thresholds).all():
            logger.warning("florence-2 gives no scores: the ontology's class thresholds are not applied")

    # ------------------------------------------------------------------ generation
    def _encode_texts(self, texts: list[str], image: PILImage.Image) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask of one row per caption (they do not depend on the image)."""
        key = tuple(texts)
        if key not in self._text_cache:
            enc = self.processor(
                images=[image] * len(texts),
                text=[TASK + t for t in texts],
                return_tensors="pt",
                padding="longest",
            )
            if len(self._text_cache) >= 32:
                self._text_cache.clear()
            self._text_cache[key] = (enc["input_ids"], enc["attention_mask"])
        return self._text_cache[key]

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        rows_per_image: int,
    ) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Encoder outputs of ``len(pixel_values) * rows_per_image`` rows, image features shared.

        Row ``i * rows_per_image + k`` is image ``i`` with text row ``k`` of ``input_ids``.
        Returns ``(encoder_outputs, row_input_ids, row_attention_mask)``.
        """
        model = self.model
        n_images = pixel_values.shape[0]
        feats = model.get_image_features(pixel_values)
        feats = getattr(feats, "pooler_output", feats)  # (n_images, tokens, dim)
        ids = input_ids.repeat(n_images, 1)
        mask = attention_mask.repeat(n_images, 1)
        embeds = model.get_input_embeddings()(ids)
        image_mask = (ids == model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
        feats = feats.repeat_interleave(rows_per_image, 0).to(embeds.dtype)
        if int(image_mask.sum()) != feats.numel():
            raise RuntimeError(
                f"florence-2: {int(image_mask.sum()) // embeds.shape[-1]} image tokens in the prompt "
                f"but {feats.shape[0] * feats.shape[1]} image features"
            )
        embeds = embeds.masked_scatter(image_mask, feats)
        return model.get_encoder()(inputs_embeds=embeds, attention_mask=mask), ids, mask

    def _forward(
        self, images: list[PILImage.Image], texts: list[str], min_score: float
    ) -> list[RawDetections]:
        input_ids, attention_mask = self._encode_texts(texts, images[0])
        pixel_values = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        pixel_values = pixel_values.to(self.device, self.model.dtype)
        encoder_outputs, ids, mask = self.encode(
            input_ids.to(self.device), attention_mask.to(self.device), pixel_values, len(texts)
        )
        generated = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            encoder_outputs=encoder_outputs,
            max_new_tokens=self.max_new_tokens,
            num_beams=self.num_beams,
            do_sample=False,
        )
        decoded = self.processor.batch_decode(generated, skip_special_tokens=False)
        results = []
        for i, image in enumerate(images):
            boxes: list[list[float]] = []
            prompt_ids: list[int] = []
            for k in range(len(texts)):
                parsed = self.processor.post_process_generation(
                    decoded[i * len(texts) + k], task=TASK, image_size=image.size
                )[TASK]
                boxes.extend(parsed.get("bboxes", []))
                prompt_ids.extend([k] * len(parsed.get("bboxes", [])))
            results.append(
                RawDetections(
                    np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                    np.full(len(boxes), FLORENCE2_CONFIDENCE, dtype=np.float32),
                    np.asarray(prompt_ids, dtype=np.int64),
                )
            )
        return results
