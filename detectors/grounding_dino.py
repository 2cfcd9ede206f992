"""``grounding-dino``: Grounding DINO, MM-Grounding-DINO and LLMDet checkpoints.

Default hub id: ``iSEE-Laboratory/llmdet_tiny`` (LLMDet, Swin-T; MM-Grounding-DINO
architecture). It costs the same as ``IDEA-Research/grounding-dino-tiny`` (Swin-T + BERT +
deformable DETR, ~170M parameters) and is far more accurate zero-shot (LVIS minival AP 44.7
against 28.8), under Apache-2.0. The same code runs ``IDEA-Research/grounding-dino-{tiny,base}``,
``openmmlab-community/mm_grounding_dino_*`` and ``iSEE-Laboratory/llmdet_{base,large}``
(pass them as ``model_id``).

How detections are mapped to captions. The captions of one pass are sent as one prompt
``"a cat. remote control."`` (lower case, ``.`` and ``?`` inside a caption replaced by spaces:
they are the model's phrase separators). The character span of every caption in that prompt is
mapped to its tokens with the tokenizer's offsets, and each query's score for a caption is the
``max`` (or ``mean``, option ``phrase_score``) of its token probabilities over that span. A query
is credited to its best caption. The model's decoded ``text_labels`` are never used, so merged or
fragmentary phrases ("remote control [SEP]") cannot leak into the output.

Text limit. The prompt must fit ``config.max_text_len`` tokens (256 for real checkpoints,
[CLS] and [SEP] included); longer ontologies are split into several passes over the same
images (a class and its negatives are kept in one pass when they fit). ``batch_size``
defaults to 1: images of different sizes are padded in a batch, which changes the scores
slightly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from detectors.ontology_ops import RawDetections
from detectors.transformers_base import TransformersDetector, cxcywh_to_xyxy_pixels, load_pretrained

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage

__all__ = ["GroundingDinoDetector", "build_prompt", "phrase_scores", "token_spans"]

_MODEL_TYPES = ("grounding-dino", "mm-grounding-dino")


def build_prompt(texts: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """``"a cat. remote control."`` and the character span of each text in it."""
    spans: list[tuple[int, int]] = []
    parts: list[str] = []
    pos = 0
    for text in texts:
        spans.append((pos, pos + len(text)))
        parts.append(text)
        pos += len(text) + 2  # ". "
    return ". ".join(parts) + ".", spans


def token_spans(offsets: Sequence[tuple[int, int]], char_spans: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Token indices of each character span (special tokens, with empty offsets, excluded)."""
    out: list[list[int]] = []
    for start, end in char_spans:
        idx = [t for t, (s, e) in enumerate(offsets) if e > s >= start and e <= end]
        out.append(idx)
    return out


def phrase_scores(probs: torch.Tensor, spans: Sequence[Sequence[int]], reduce: str = "max") -> torch.Tensor:
    """Token probabilities ``(..., T)`` -> per-phrase scores ``(..., P)`` (max or mean over span)."""
    import torch

    cols = []
    for span in spans:
        if not span:
            raise RuntimeError("a caption has no tokens in the prompt (was it truncated?)")
        sub = probs[..., list(span)]
        cols.append(sub.amax(-1) if reduce == "max" else sub.mean(-1))
    return torch.stack(cols, -1)


class GroundingDinoDetector(TransformersDetector):
    """Grounding DINO family through ``AutoModelForZeroShotObjectDetection``.

    Default ``box_threshold`` 0.35 (the Grounded-SAM / autodistill default), ``batch_size`` 1.
    Extra option: ``phrase_score`` (``"max"``, the default, as in the original Grounded-SAM
    thresholds; or ``"mean"``, as in the mmdet evaluation of MM-GDINO/LLMDet).
    """

    name: ClassVar[str] = "grounding-dino"
    default_box_threshold: ClassVar[float] = 0.35
    default_batch_size: ClassVar[int] = 1
    strip_separators: ClassVar[bool] = True
    settings_keys: ClassVar[tuple[str, ...]] = (*TransformersDetector.settings_keys, "phrase_score")

    def __init__(
        self, model_id: str | None = None, device: Any = None, *, phrase_score: str = "max", **options: Any
    ):
        if phrase_score not in ("max", "mean"):
            raise ValueError(f"phrase_score must be 'max' or 'mean', got {phrase_score!r}")
        self.phrase_score = phrase_score
        super().__init__(model_id, device, **options)
        self.tokenizer = self.processor.tokenizer

    def _load(self, model_id: str) -> tuple[Any, Any]:
        from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoProcessor

        config = load_pretrained(AutoConfig, model_id, "grounding-dino config")
        if config.model_type not in _MODEL_TYPES:
            raise ValueError(
                f"{model_id!r} is a {config.model_type!r} model, not Grounding DINO / MM-GDINO / "
                "LLMDet; load it under its own detector name"
            )
        processor = load_pretrained(AutoProcessor, model_id, "grounding-dino processor")
        model = load_pretrained(AutoModelForZeroShotObjectDetection, model_id, "grounding-dino model")
        return model, processor

    def _text_limit(self) -> tuple[int | None, int]:
        return int(self.model.config.max_text_len), 2  # [CLS] ... [SEP]

    def _text_cost(self, texts: Sequence[str]) -> list[int]:
        ids = self.processor.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(i) + 1 for i in ids]  # + the "." that ends each phrase

    def _forward(
        self, images: list[PILImage.Image], texts: list[str], min_score: float
    ) -> list[RawDetections]:
        prompt, char_spans = build_prompt(texts)
        enc = self.tokenizer(prompt, return_offsets_mapping=True)
        spans = token_spans(enc["offset_mapping"], char_spans)
        inputs = self.processor(images=images, text=[prompt] * len(images), return_tensors="pt")
        if inputs["input_ids"][0].tolist() != list(enc["input_ids"]):
            raise RuntimeError("the processor tokenised the prompt differently from the tokenizer")
        outputs = self.model(**inputs.to(self.device))
        probs = outputs.logits.float().sigmoid()  # (B, Q, max_text_len); -inf padding -> 0
        per_phrase = phrase_scores(probs, spans, self.phrase_score)  # (B, Q, P)
        best, best_id = per_phrase.max(-1)
        boxes = outputs.pred_boxes.float()
        results = []
        for b, image in enumerate(images):
            keep = (best[b] >= min_score).cpu().numpy()
            xyxy = cxcywh_to_xyxy_pixels(boxes[b].cpu().numpy()[keep], *image.size)
            results.append(RawDetections(xyxy, best[b].cpu().numpy()[keep], best_id[b].cpu().numpy()[keep]))
        return results
