"""Ontology semantics shared by every detector, as pure functions over numpy arrays.

A detector family only has to produce :class:`RawDetections` per image: boxes in original
pixels, a score and the index of the *prompt* (one entry of a :class:`PromptTable`) that
produced each box. :func:`finalize_detections` then applies, in this order:

1. clip boxes to the image and drop boxes that are empty or not finite after clipping;
2. thresholds: the class's ``ontology.threshold(name)`` where set, else the detector's
   ``box_threshold`` (kept when ``score >= threshold``); skipped when the detector has no
   real scores (Florence-2);
3. negative captions: a detection of a negative caption of class ``c`` removes every
   positive detection of class ``c`` whose IoU with it is above ``negative_iou``; the
   negative detections themselves never reach the output;
4. class-wise NMS (IoU above ``nms_iou`` is a duplicate; ``torchvision.ops.batched_nms``): the
   captions of one class are merged, the highest score wins and its caption is reported;
5. output sorted by confidence (stable), as ``sv.Detections`` with ``class_id`` indexing
   ``ontology.classes()``, ``data["class_name"]``, ``data["caption"]`` and
   ``data["has_score"]`` (``False`` where the confidence is a constant, not a score).

:func:`split_passes` packs prompts into several forward passes when they exceed a text limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import supervision as sv

from ontologies import CaptionOntology

if TYPE_CHECKING:
    import torch

__all__ = [
    "DATA_KEYS",
    "PromptTable",
    "RawDetections",
    "box_iou",
    "classwise_nms",
    "clip_boxes",
    "empty_detections",
    "finalize_detections",
    "negative_suppression",
    "nms",
    "normalize_caption",
    "split_passes",
]

_DATA_DTYPES = {"class_name": str, "caption": str, "has_score": bool}
DATA_KEYS = tuple(_DATA_DTYPES)
"""Keys of ``Detections.data`` set by every detector (also on empty results)."""


# ----------------------------------------------------------------------------- captions
def normalize_caption(caption: str, *, strip_separators: bool = False) -> str:
    """Lower-case, trim and collapse whitespace.

    ``strip_separators=True`` (Grounding DINO) also replaces ``.`` and ``?`` by spaces: the
    model uses them as phrase separators, so ``"st. bernard"`` is sent as ``"st bernard"``.
    """
    text = caption
    if strip_separators:
        text = re.sub(r"[.?]", " ", text)
    text = re.sub(r"\s+", " ", text).strip().lower()
    if not text:
        raise ValueError(f"caption {caption!r} is empty once normalised for the detector")
    return text


@dataclass(frozen=True)
class PromptTable:
    """The texts a detector is given, and what each one means in the ontology.

    One entry per distinct normalised caption (positive or negative). ``captions`` holds the
    ontology's own spelling, which is what ``data["caption"]`` reports.
    """

    texts: tuple[str, ...]
    captions: tuple[str, ...]
    class_ids: np.ndarray  # (P,) int64, index into ontology.classes()
    class_names: tuple[str, ...]
    negative: np.ndarray  # (P,) bool
    class_thresholds: np.ndarray  # (P,) float64, NaN = use the detector's default

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def from_ontology(
        cls,
        ontology: CaptionOntology,
        normalize: Callable[[str], str] = normalize_caption,
    ) -> PromptTable:
        """Build from ``ontology.entries``; captions equal after ``normalize`` are merged.

        Two captions that normalise to the same text must mean the same thing (same class,
        both positive or both negative), else a ``ValueError`` names them.
        """
        texts: list[str] = []
        captions: list[str] = []
        class_ids: list[int] = []
        names: list[str] = []
        negative: list[bool] = []
        thresholds: list[float] = []
        seen: dict[str, int] = {}
        for class_id, entry in enumerate(ontology.entries):
            items = [(c, False) for c in entry.captions] + [(c, True) for c in entry.negative]
            for caption, is_neg in items:
                text = normalize(caption)
                if text in seen:
                    j = seen[text]
                    if class_ids[j] != class_id or negative[j] != is_neg:
                        raise ValueError(
                            f"captions {captions[j]!r} and {caption!r} read the same to the detector "
                            f"({text!r}) but mean different things (class {names[j]!r}"
                            f"{' negative' if negative[j] else ''} vs {entry.name!r}"
                            f"{' negative' if is_neg else ''})"
                        )
                    continue
                seen[text] = len(texts)
                texts.append(text)
                captions.append(caption)
                class_ids.append(class_id)
                names.append(entry.name)
                negative.append(is_neg)
                thresholds.append(np.nan if entry.threshold is None else float(entry.threshold))
        return cls(
            texts=tuple(texts),
            captions=tuple(captions),
            class_ids=np.asarray(class_ids, dtype=np.int64),
            class_names=tuple(names),
            negative=np.asarray(negative, dtype=bool),
            class_thresholds=np.asarray(thresholds, dtype=np.float64),
        )

    def thresholds(self, default: float) -> np.ndarray:
        """Per-prompt score threshold: the class's own, else ``default``."""
        return np.where(np.isnan(self.class_thresholds), float(default), self.class_thresholds)

    def groups(self) -> list[int]:
        """Class id of each prompt: the prompts of a class (and its negatives) form one group."""
        return [int(c) for c in self.class_ids]


# ----------------------------------------------------------------------------- passes
def split_passes(
    costs: Sequence[int],
    limit: int | None = None,
    *,
    fixed_cost: int = 0,
    max_items: int | None = None,
    groups: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
) -> list[list[int]]:
    """Pack items (prompts) into passes whose ``fixed_cost + sum(costs)`` stays within ``limit``.

    Order is kept. Items sharing a group id (a class's captions and negatives, so that they
    compete in one forward pass) stay together whenever the group fits in one pass; a group
    too large for one pass is split. ``max_items`` caps the number of items per pass. An item
    that cannot fit even alone raises ``ValueError`` naming it (``names[i]`` when given).
    """
    n = len(costs)
    if n == 0:
        return []
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    budget = None if limit is None else int(limit) - int(fixed_cost)
    for i, c in enumerate(costs):
        if budget is not None and c > budget:
            what = repr(names[i]) if names is not None else f"item {i}"
            raise ValueError(
                f"caption {what} needs {c} tokens but a pass holds at most {budget} "
                f"({limit} minus {fixed_cost} for special tokens); shorten it"
            )
    group_ids = list(groups) if groups is not None else list(range(n))
    ordered: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids):
        ordered.setdefault(g, []).append(i)

    passes: list[list[int]] = []
    cur: list[int] = []
    cur_cost = 0

    def fits(extra_items: int, extra_cost: int) -> bool:
        if max_items is not None and len(cur) + extra_items > max_items:
            return False
        return budget is None or cur_cost + extra_cost <= budget

    for members in ordered.values():
        g_cost = sum(int(costs[i]) for i in members)
        if not fits(len(members), g_cost) and cur:
            whole_fits_alone = (max_items is None or len(members) <= max_items) and (
                budget is None or g_cost <= budget
            )
            if whole_fits_alone:
                passes.append(cur)
                cur, cur_cost = [], 0
        for i in members:
            if not fits(1, int(costs[i])):
                passes.append(cur)
                cur, cur_cost = [], 0
            cur.append(i)
            cur_cost += int(costs[i])
    if cur:
        passes.append(cur)
    return passes


# ----------------------------------------------------------------------------- raw output
@dataclass
class RawDetections:
    """Detections of one image before ontology semantics: pixels, scores, prompt indices."""

    xyxy: np.ndarray  # (N, 4) float32, original-image pixels
    scores: np.ndarray  # (N,) float32
    prompt_ids: np.ndarray  # (N,) int64, index into the PromptTable (or the pass, see remap)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.prompt_ids = np.asarray(self.prompt_ids, dtype=np.int64).reshape(-1)
        if not (len(self.xyxy) == len(self.scores) == len(self.prompt_ids)):
            raise ValueError(
                f"RawDetections fields differ in length: xyxy {len(self.xyxy)}, "
                f"scores {len(self.scores)}, prompt_ids {len(self.prompt_ids)}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> RawDetections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def remap(self, pass_prompt_ids: Sequence[int]) -> RawDetections:
        """Pass-local prompt indices (position in the pass) -> PromptTable indices."""
        table = np.asarray(pass_prompt_ids, dtype=np.int64)
        return RawDetections(self.xyxy, self.scores, table[self.prompt_ids])

    @classmethod
    def concat(cls, items: Sequence[RawDetections]) -> RawDetections:
        if not items:
            return cls.empty()
        return cls(
            np.concatenate([r.xyxy for r in items]),
            np.concatenate([r.scores for r in items]),
            np.concatenate([r.prompt_ids for r in items]),
        )


# ----------------------------------------------------------------------------- geometry
def clip_boxes(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    out = np.asarray(xyxy, dtype=np.float32).copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


def _boxes(xyxy: np.ndarray) -> torch.Tensor:
    """(N, 4) xyxy boxes as a float64 CPU tensor (float32 detector boxes convert exactly)."""
    import torch

    return torch.as_tensor(np.asarray(xyxy, dtype=np.float64).reshape(-1, 4))


def _score_order(scores: np.ndarray) -> np.ndarray:
    """(N,) indices by decreasing score, ties in input order."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable").astype(np.int64)


def _ranks(n: int) -> torch.Tensor:
    """(n,) strictly decreasing scores: boxes handed over in score order leave torchvision's sort
    no ties to break, so the greedy pass visits them in exactly that order."""
    import torch

    return torch.arange(n, 0, -1, dtype=torch.float64)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of ``xyxy`` boxes (``torchvision.ops.box_iou`` in float64;
    0 where a union is empty)."""
    from torchvision.ops import box_iou as tv_box_iou

    return tv_box_iou(_boxes(a), _boxes(b)).nan_to_num_(nan=0.0).numpy()


def nms(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS (``torchvision.ops.nms``); returns kept indices, highest score first (ties keep input order)."""
    order = _score_order(scores)  # (N,)
    if len(order) == 0:
        return order
    import torch
    from torchvision.ops import nms as tv_nms

    kept = tv_nms(_boxes(xyxy)[torch.from_numpy(order)], _ranks(len(order)), float(iou_threshold))  # positions in ``order``
    return order[np.sort(kept.numpy())]


def classwise_nms(
    xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float | None
) -> np.ndarray:
    """NMS within each class (captions of one class merge; ``torchvision.ops.batched_nms``); kept
    indices by score, ties in input order."""
    order = _score_order(scores)  # (N,)
    if iou_threshold is None or len(order) == 0:
        return order
    import torch
    from torchvision.ops import batched_nms

    classes = torch.from_numpy(np.asarray(class_ids, dtype=np.int64)[order])
    kept = batched_nms(_boxes(xyxy)[torch.from_numpy(order)], _ranks(len(order)), classes, float(iou_threshold))
    return order[np.sort(kept.numpy())]


def negative_suppression(
    xyxy: np.ndarray,
    class_ids: np.ndarray,
    negative: np.ndarray,
    iou_threshold: float | None,
) -> np.ndarray:
    """Mask of positive detections that survive the negatives of their own class.

    Negative detections are always ``False`` in the mask (they never reach the output).
    """
    negative = np.asarray(negative, dtype=bool)
    keep = ~negative
    if iou_threshold is None or not negative.any() or not keep.any():
        return keep
    pos = np.flatnonzero(keep)
    neg = np.flatnonzero(negative)
    iou = box_iou(xyxy[pos], xyxy[neg])
    same_class = class_ids[pos][:, None] == class_ids[neg][None, :]
    hit = ((iou > iou_threshold) & same_class).any(axis=1)
    keep[pos[hit]] = False
    return keep


# ----------------------------------------------------------------------------- output
def empty_detections(
    mask_hw: tuple[int, int] | None = None,
    *,
    tracked: bool = False,
    extra_data: Mapping[str, npt.DTypeLike] | None = None,
) -> sv.Detections:
    """``sv.Detections.empty()`` with every :data:`DATA_KEYS` column present (so merging works).

    ``mask_hw``: also ``(0, H, W)`` masks; ``tracked``: also an empty ``tracker_id``;
    ``extra_data``: more empty ``data`` columns, name -> dtype (the pipeline's ``mask_score``).
    This is the one builder of empty results; the pipeline and the tracker use it too.
    """
    det = sv.Detections.empty()
    columns = {**_DATA_DTYPES, **(extra_data or {})}
    det.data = {key: np.array([], dtype=dtype) for key, dtype in columns.items()}
    if mask_hw is not None:
        det.mask = np.zeros((0, *mask_hw), dtype=bool)
    if tracked:
        det.tracker_id = np.zeros(0, dtype=int)
    return det


def finalize_detections(
    raw: RawDetections,
    table: PromptTable,
    image_wh: tuple[int, int],
    *,
    box_threshold: float,
    nms_iou: float | None = 0.5,
    negative_iou: float | None = 0.5,
    has_scores: bool = True,
    constant_confidence: float = 1.0,
) -> sv.Detections:
    """Apply the ontology semantics (module docstring) to one image's raw detections."""
    width, height = image_wh
    if len(raw) == 0:
        return empty_detections()
    if raw.prompt_ids.min() < 0 or raw.prompt_ids.max() >= len(table):
        raise ValueError(f"prompt ids out of range for a table of {len(table)} prompts")
    xyxy = clip_boxes(raw.xyxy, width, height)
    scores = raw.scores.astype(np.float32)
    if not has_scores:
        scores = np.full(len(raw), constant_confidence, dtype=np.float32)
    pid = raw.prompt_ids

    valid = np.isfinite(xyxy).all(axis=1) & (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    if has_scores:
        valid &= scores >= table.thresholds(box_threshold)[pid]
    xyxy, scores, pid = xyxy[valid], scores[valid], pid[valid]

    class_ids = table.class_ids[pid]
    keep = negative_suppression(xyxy, class_ids, table.negative[pid], negative_iou)
    xyxy, scores, pid, class_ids = xyxy[keep], scores[keep], pid[keep], class_ids[keep]

    order = classwise_nms(xyxy, scores, class_ids, nms_iou)
    if len(order) == 0:
        return empty_detections()
    xyxy, scores, pid, class_ids = xyxy[order], scores[order], pid[order], class_ids[order]
    return sv.Detections(
        xyxy=xyxy.astype(np.float32),
        confidence=scores.astype(np.float32),
        class_id=class_ids.astype(int),
        data={
            "class_name": np.array([table.class_names[i] for i in pid], dtype=str),
            "caption": np.array([table.captions[i] for i in pid], dtype=str),
            "has_score": np.full(len(pid), has_scores, dtype=bool),
        },
    )
