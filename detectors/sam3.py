"""``sam3``: SAM 3 ("Segment Anything with Concepts") as a detector that returns masks.

Default hub id: ``facebook/sam3`` (840M parameters, 1008 px; the weights are gated under the SAM
License: accept it on https://huggingface.co/facebook/sam3, ``hf auth login``, then
``hf download facebook/sam3``; or pass a local ``save_pretrained`` folder). It runs through
transformers' ``Sam3Model`` / ``Sam3Processor`` (transformers >= 5.0).

Every caption of the ontology is its own prompt. Per image the output holds masks
``(N, H, W)`` bool at the original size, ``xyxy`` (the model's boxes, original pixels, clipped)
and ``confidence`` = transformers' score ``sigmoid(query logit) * sigmoid(presence logit)``:
boxes, scores and masks equal ``Sam3Processor.post_process_instance_segmentation`` at the same
thresholds. The ontology semantics are those of the other families, on masks: a class's
captions merge by mask NMS, negative captions suppress by mask IoU (:mod:`detectors.mask_ops`).

Cost. The image side (the ViT and its FPN, ~450M parameters) runs once per image, whatever the
number of captions (``get_vision_features``). A caption's text features are computed once per
detector and cached. Everything after the ViT depends on the prompt (the DETR encoder fuses the
text into every image token), so each prompt is decoded against the image's features, expanded
without a copy along the batch of prompts: ``captions_per_pass`` prompts per forward, 8 on
CUDA / MPS; on a CPU 1 (measured at 1008 px, one thread: 8 captions decode in 55 s one at a time
against 64 s eight at a time, and the mask decoder is much slower batched; the numbers agree to
~1e-7 either way). Boxes and scores come first; the mask decoder runs only for prompts that
kept a query (:class:`_DeferredMaskHead`), ~25 % of a prompt's cost saved for a caption that
finds nothing. At 1008 px on a CPU a prompt costs ~6-8 % of the image side: 8 captions cost
~1.4x one caption (docs/benchmarks.md).

Exemplars. ``detect(images, ontology, exemplars={"dog": boxes}, negative_exemplars=...)``
(:mod:`detectors.exemplars` for the format and checks). With ``exemplar_text=True`` (default)
every positive caption of the class is prompted together with the class's boxes (SAM 3's joint
text + exemplar prompt: "dogs like these, not like those"), and its detections report that
caption; negative captions stay text-only. With ``exemplar_text=False`` one extra, purely
visual prompt per class (the text ``"visual"``, as transformers sends for box-only prompts)
finds every instance like the positive boxes, alongside the unchanged text captions; its
detections report the caption :data:`EXEMPLAR_CAPTION` and merge with the class's other
detections by mask NMS.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from detectors.exemplars import ClassExemplars, ExemplarsInput, resolve_exemplars
from detectors.images import ImagesInput, load_images
from detectors.mask_ops import RawMaskDetections, finalize_mask_detections
from detectors.ontology_ops import PromptTable, RawDetections
from detectors.transformers_base import TransformersDetector, as_ontology
from gsam_runtime.device import autocast

if TYPE_CHECKING:
    import supervision as sv
    import torch
    from PIL import Image as PILImage

    from ontologies import CaptionOntology

__all__ = [
    "EXEMPLAR_CAPTION",
    "Sam3Detector",
    "exemplar_boxes_cxcywh",
    "how_to_get_weights",
    "load_sam3_part",
    "sam3_classes",
    "transformers_classes",
]

logger = logging.getLogger(__name__)

EXEMPLAR_CAPTION = "<exemplar>"
"""``data["caption"]`` of detections found by a visual-only exemplar prompt."""

VISUAL_TEXT = "visual"  # the text transformers' processor sends with box-only prompts
TEXT_LENGTH = 32  # SAM 3's text context; the processor pads every prompt to it
_MODEL_TYPES = ("sam3", "sam3_video")  # facebook/sam3 is a sam3_video checkpoint holding the detector


def how_to_get_weights(model_id: str) -> str:
    """What to do when ``model_id`` does not load: the gated-weights steps, or the folder hint."""
    hub_id = model_id if re.fullmatch(r"[\w.-]+/[\w.-]+", model_id) else "facebook/sam3"
    folder = "" if hub_id == model_id else f" (there is no such folder as {model_id!r})"
    return (
        "SAM 3's weights are gated on the Hugging Face Hub: accept the licence on "
        f"https://huggingface.co/{hub_id}, log in with `hf auth login`, then download them with "
        f"`hf download {hub_id}` (later loads find them in the cache, offline too); or pass "
        f"model_id=<a local folder written by save_pretrained>{folder}."
    )


def transformers_classes(module: str, names: Sequence[str], what: str) -> tuple[Any, ...]:
    """Classes ``names`` of ``transformers.models.<module>``, or an ``ImportError`` saying that
    ``what`` needs transformers >= 5.0 (the first release with SAM 3)."""
    import importlib

    try:
        found = importlib.import_module(f"transformers.models.{module}")
        return tuple(getattr(found, name) for name in names)
    except (ImportError, AttributeError) as e:
        import transformers

        raise ImportError(
            f"{what} needs transformers>=5.0 ({', '.join(names)}); this environment has transformers "
            f"{transformers.__version__}: pip install -U 'transformers>=5.0'"
        ) from e


def sam3_classes() -> tuple[Any, Any]:
    """``(Sam3Model, Sam3Processor)``, or an ``ImportError`` naming the transformers version needed."""
    return transformers_classes("sam3", ("Sam3Model", "Sam3Processor"), "the 'sam3' detector")


def load_sam3_part(loader: Any, model_id: str, what: str) -> Any:
    """``loader.from_pretrained(model_id)``; gated or missing weights say how to get them."""
    try:
        return loader.from_pretrained(model_id)
    except OSError as e:
        raise OSError(f"could not load the SAM 3 {what} from {model_id!r}: {e}\n{how_to_get_weights(model_id)}") from e


def exemplar_boxes_cxcywh(boxes: np.ndarray, width: int, height: int) -> torch.Tensor:
    """``(K, 4)`` xyxy pixels -> ``(K, 4)`` float32 ``(cx, cy, w, h)`` normalised by the image size.

    The arithmetic of ``Sam3Processor`` (divide, then convert), so the numbers are identical.
    """
    import torch

    b = torch.tensor(np.asarray(boxes, dtype=np.float64), dtype=torch.float32).reshape(-1, 2, 2)
    b[..., 0] = b[..., 0] / width
    b[..., 1] = b[..., 1] / height
    x0, y0, x1, y1 = b.reshape(-1, 4).unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


@dataclass(frozen=True)
class _Group:
    """Prompts decoded together: same geometry (no boxes, or one class's exemplars on one image)."""

    prompt_ids: tuple[int, ...]
    exemplars: ClassExemplars | None = None


class _DeferredMaskHead:
    """Within ``with``, ``model``'s mask decoder only records its inputs; :meth:`masks` then runs
    it for the prompts (batch rows) that kept a query. Everything after SAM 3's ViT depends on
    the prompt, the mask decoder (pixel decoder at 4x the token grid) included: a caption that
    finds nothing in an image skips it (~25 % of a prompt's cost at 1008 px). Queries do not
    interact in the mask decoder, so a row's masks are those of the full call. A model that does
    not call ``mask_decoder`` (``inputs`` stays empty) made its masks itself."""

    def __init__(self, model: Any) -> None:
        self.model, self.decoder, self.inputs = model, model.mask_decoder, {}

    def __enter__(self) -> _DeferredMaskHead:
        import torch
        from transformers.models.sam3.modeling_sam3 import Sam3MaskDecoderOutput

        head = self

        class Recorder(torch.nn.Module):
            def forward(self, **inputs: Any) -> Any:
                head.inputs = inputs
                return Sam3MaskDecoderOutput()  # no masks yet

        self.model.mask_decoder = Recorder()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.model.mask_decoder = self.decoder

    def masks(self, rows: torch.Tensor) -> torch.Tensor:
        """``(len(rows), Q, h, w)`` mask logits of the recorded call's batch ``rows``."""
        if not len(rows):  # masks come at the finest FPN level's size
            queries, finest = self.inputs["decoder_queries"], self.inputs["backbone_features"][0]
            return queries.new_zeros((0, queries.shape[1], *finest.shape[-2:]))
        return self.decoder(**_rows(self.inputs, rows)).pred_masks


def _rows(inputs: Mapping[str, Any], rows: Any) -> dict[str, Any]:
    """The mask decoder's keyword inputs restricted to batch ``rows`` (tensors and lists of them)."""
    import torch

    def pick(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value[torch.as_tensor(rows, dtype=torch.long, device=value.device)]
        if isinstance(value, (list, tuple)):
            return type(value)(pick(v) for v in value)
        return value

    return {k: pick(v) for k, v in inputs.items()}


class Sam3Detector(TransformersDetector):
    """SAM 3 image model as a detector with masks (module docstring).

    Options beyond :class:`TransformersDetector`'s: ``mask_threshold`` (probability above which
    a pixel is in the mask, default 0.5). Defaults: ``box_threshold`` 0.5 (SAM 3's own),
    ``nms_iou``/``negative_iou`` 0.5 (mask IoU), ``batch_size`` 1 (images per ViT pass),
    ``captions_per_pass`` (prompts decoded per forward): 8 on CUDA / MPS, 1 on a CPU.
    """

    name: ClassVar[str] = "sam3"
    returns_masks: ClassVar[bool] = True
    supports_exemplars: ClassVar[bool] = True
    default_box_threshold: ClassVar[float] = 0.5
    default_batch_size: ClassVar[int] = 1
    default_captions_per_pass: ClassVar[int] = 8
    # each prompt is decoded on its own: the prompts per forward change only the speed
    settings_keys: ClassVar[tuple[str, ...]] = ("box_threshold", "nms_iou", "negative_iou", "mask_threshold")
    how_to_get_weights = staticmethod(how_to_get_weights)  # load_detector's advice when they are missing

    def __init__(
        self, model_id: str | None = None, device: Any = None, *, mask_threshold: float = 0.5, **options: Any
    ) -> None:
        if isinstance(mask_threshold, bool) or not isinstance(mask_threshold, (int, float)) or not (
            0 <= mask_threshold <= 1
        ):
            raise ValueError(f"mask_threshold must be a number in [0, 1], got {mask_threshold!r}")
        self.mask_threshold = float(mask_threshold)
        chosen = options.get("captions_per_pass") is not None
        super().__init__(model_id, device, **options)
        if not chosen:  # a CPU decodes prompts fastest one at a time (module docstring)
            self.captions_per_pass = 1 if self.device.type == "cpu" else self.default_captions_per_pass
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._text_cache_key: tuple[Any, ...] = ()

    # ------------------------------------------------------------------ family hooks
    def _load(self, model_id: str) -> tuple[Any, Any]:
        from transformers import AutoConfig

        model_cls, processor_cls = sam3_classes()
        config = load_sam3_part(AutoConfig, model_id, "config")
        if config.model_type not in _MODEL_TYPES:
            raise ValueError(
                f"{model_id!r} is a {config.model_type!r} model, not SAM 3; "
                "load it under its own detector name"
            )
        processor = load_sam3_part(processor_cls, model_id, "processor")
        return load_sam3_part(model_cls, model_id, "model"), processor

    def _check_texts(self, table: PromptTable) -> None:
        lengths = [len(ids) for ids in self.processor.tokenizer(list(table.texts))["input_ids"]]
        long = [c for c, n in zip(table.captions, lengths) if n > TEXT_LENGTH]
        if long:
            logger.warning("sam3: captions longer than %d tokens are truncated: %s", TEXT_LENGTH, long)

    def _forward(
        self, images: list[PILImage.Image], texts: list[str], min_score: float
    ) -> list[RawDetections]:
        """Boxes only, for the base class's path; :meth:`detect` is the full path, with masks."""
        vision = self.encode_images(images)
        return [
            self.decode_prompts(vision, j, texts, im.size, min_score).boxes for j, im in enumerate(images)
        ]

    # ------------------------------------------------------------------ features
    def encode_images(self, images: list[PILImage.Image]) -> Any:
        """The image side for a batch (``Sam3VisionEncoderOutput``: FPN levels ``(B, C, h, w)``)."""
        pixel_values = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return self.model.get_vision_features(pixel_values=pixel_values.to(self.device))

    def text_features(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected text features ``(P, 32, D)`` and attention mask ``(P, 32)``, cached per text.

        The cache is keyed on the text and emptied when the model, device or autocast setting
        changes; a caption's features are computed once per detector, not once per image.
        """
        import torch

        key = (id(self.model), str(self.device), self.use_autocast)
        if key != self._text_cache_key or len(self._text_cache) > 4096:
            self._text_cache, self._text_cache_key = {}, key
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if missing:
            enc = self.processor.tokenizer(
                missing, padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                feats = self.model.get_text_features(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
                )
            for i, text in enumerate(missing):
                self._text_cache[text] = (feats.pooler_output[i : i + 1], enc["attention_mask"][i : i + 1])
        pairs = [self._text_cache[t] for t in texts]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])

    # ------------------------------------------------------------------ decoding
    def decode_prompts(
        self,
        vision: Any,
        index: int,
        texts: Sequence[str],
        size: tuple[int, int],
        min_score: float = 0.0,
        *,
        prompt_ids: Sequence[int] | None = None,
        exemplars: ClassExemplars | None = None,
    ) -> RawMaskDetections:
        """Image ``index`` of ``vision`` (:meth:`encode_images`) against ``texts``, before any ontology logic.

        Each text is one prompt (with ``exemplars``' boxes when given), ``captions_per_pass`` per
        forward. Keeps queries with ``score >= min_score``; boxes in pixels of an image of
        ``size`` ``(W, H)``; ``prompt_ids[k]`` (default ``k``) is reported for ``texts[k]``.
        """
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        width, height = size
        prompt_ids = range(len(texts)) if prompt_ids is None else prompt_ids
        step = self.captions_per_pass or len(texts)
        parts = []
        for s in range(0, len(texts), step):
            ids = list(prompt_ids[s : s + step])
            rows = len(ids)
            feats, mask = self.text_features(texts[s : s + step])  # (R, T, D), (R, T)
            vis = type(vision)(  # this image's FPN levels (1, C, h, w) -> (R, C, h, w), a view
                fpn_hidden_states=tuple(
                    f[index : index + 1].expand(rows, -1, -1, -1) for f in vision.fpn_hidden_states
                ),
                fpn_position_encoding=tuple(
                    p[index : index + 1].expand(rows, -1, -1, -1) for p in vision.fpn_position_encoding
                ),
            )
            prompts: dict[str, Any] = {}
            if exemplars is not None:
                boxes = exemplar_boxes_cxcywh(exemplars.boxes, width, height).to(self.device)  # (K, 4)
                labels = torch.as_tensor(exemplars.labels, device=self.device)  # (K,)
                prompts = {
                    "input_boxes": boxes.expand(rows, -1, -1),  # (R, K, 4)
                    "input_boxes_labels": labels.expand(rows, -1),  # (R, K)
                }
            text = BaseModelOutputWithPooling(pooler_output=feats)
            with _DeferredMaskHead(self.model) as head:  # boxes and scores first, masks only where needed
                out = self.model(vision_embeds=vis, text_embeds=text, attention_mask=mask, **prompts)
            scores = out.pred_logits.float().sigmoid() * out.presence_logits.float().sigmoid()  # (R, Q)
            r, q = torch.nonzero(scores >= min_score, as_tuple=True)
            scale = torch.tensor([width, height, width, height], device=scores.device)
            boxes_px = out.pred_boxes.float()[r, q] * scale  # (N, 4) xyxy pixels
            pid = torch.as_tensor(ids, device=r.device)[r]
            raw = RawDetections(boxes_px.cpu().numpy(), scores[r, q].cpu().numpy(), pid.cpu().numpy())
            kept, row_of = torch.unique(r, return_inverse=True)  # prompts with a detection; N -> its row there
            masks = head.masks(kept) if head.inputs else out.pred_masks[kept]  # (R', Q, h, w)
            parts.append(RawMaskDetections(raw, masks[row_of, q].float().sigmoid()))  # (N, h, w)
        return RawMaskDetections.concat(parts)

    @staticmethod
    def _groups(
        table: PromptTable,
        passes: list[list[int]],
        exemplars: dict[int, ClassExemplars],
        visual: dict[int, int],
    ) -> list[_Group]:
        """Decode groups of one image: text-only prompts per pass, one group per exemplar class.

        ``visual`` (class id -> prompt index) is empty in joint mode (``exemplar_text=True``).
        """
        groups: list[_Group] = []
        for pass_ids in passes:
            joint = [] if visual else [
                i for i in pass_ids if not table.negative[i] and table.class_ids[i] in exemplars
            ]
            plain = tuple(i for i in pass_ids if i not in joint)
            if plain:
                groups.append(_Group(plain))
            for cid in sorted({int(table.class_ids[i]) for i in joint}):
                groups.append(_Group(tuple(i for i in joint if table.class_ids[i] == cid), exemplars[cid]))
        groups += [_Group((visual[cid],), ex) for cid, ex in exemplars.items() if visual and ex.has_positive]
        return groups

    # ------------------------------------------------------------------ public API
    def detect(
        self,
        images: ImagesInput,
        ontology: CaptionOntology | Mapping[str, Any],
        exemplars: ExemplarsInput = None,
        negative_exemplars: ExemplarsInput = None,
        *,
        exemplar_text: bool = True,
    ) -> list[sv.Detections]:
        """One ``sv.Detections`` with masks per image (module docstring for exemplars)."""
        import torch

        ontology = as_ontology(ontology)
        pil_images = load_images(images)
        table, passes = self.plan(ontology)
        per_image = resolve_exemplars(exemplars, negative_exemplars, ontology, [im.size for im in pil_images])
        visual: dict[int, int] = {}
        if not exemplar_text:
            table, visual = _with_visual_prompts(table, per_image)
        min_score = self._min_score(table)
        raws: list[RawMaskDetections] = []
        with torch.inference_mode():
            with autocast(self.device, enabled=self.use_autocast):
                for start in range(0, len(pil_images), self.batch_size):
                    batch = pil_images[start : start + self.batch_size]
                    vision = self.encode_images(batch)
                    for j, image in enumerate(batch):
                        groups = self._groups(table, passes, per_image[start + j], visual)
                        parts = [
                            self.decode_prompts(
                                vision, j, [table.texts[i] for i in g.prompt_ids], image.size, min_score,
                                prompt_ids=g.prompt_ids, exemplars=g.exemplars,
                            )
                            for g in groups
                        ]
                        raws.append(RawMaskDetections.concat(parts))
            return [
                finalize_mask_detections(
                    raw,
                    table,
                    image.size,
                    box_threshold=self.box_threshold,
                    mask_threshold=self.mask_threshold,
                    nms_iou=self.nms_iou,
                    negative_iou=self.negative_iou,
                )
                for raw, image in zip(raws, pil_images)
            ]


def _with_visual_prompts(
    table: PromptTable, per_image: list[dict[int, ClassExemplars]]
) -> tuple[PromptTable, dict[int, int]]:
    """``table`` plus one visual-only prompt per class with positive exemplars; class id -> its index."""
    classes: list[int] = []
    for exemplars in per_image:
        for cid, ex in exemplars.items():
            if not ex.has_positive:
                raise ValueError(
                    f"negative exemplars of class {table.class_names[list(table.class_ids).index(cid)]!r} "
                    "need positive exemplars when exemplar_text=False (a visual prompt needs something "
                    "to look for)"
                )
            if cid not in classes:
                classes.append(cid)
    first = {int(c): i for i, c in reversed(list(enumerate(table.class_ids)))}
    extra = [first[c] for c in classes]
    visual = {c: len(table) + k for k, c in enumerate(classes)}
    table = replace(
        table,
        texts=table.texts + (VISUAL_TEXT,) * len(extra),
        captions=table.captions + (EXEMPLAR_CAPTION,) * len(extra),
        class_ids=np.concatenate([table.class_ids, table.class_ids[extra]]),
        class_names=table.class_names + tuple(table.class_names[i] for i in extra),
        negative=np.concatenate([table.negative, np.zeros(len(extra), dtype=bool)]),
        class_thresholds=np.concatenate([table.class_thresholds, table.class_thresholds[extra]]),
    )
    return table, visual
