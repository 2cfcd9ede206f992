"""Visual exemplars: boxes that show a detector what a class looks like (SAM 3's box prompts).

``exemplars={"dog": [[x1, y1, x2, y2], ...]}`` (positive) and ``negative_exemplars={...}``
(instances that must *not* be found) are boxes in original pixels, ``xyxy``, keyed by class
name of the ontology. For a batch, one mapping applies to every image; a list of mappings (one
per image, ``None`` or ``{}`` for an image without exemplars) gives each image its own.

Every box is checked against its image: four finite numbers, ``x1 < x2`` and ``y1 < y2``, inside
``[0, W] x [0, H]``; a bad box raises ``ValueError`` naming it (``exemplars[1]['dog'][0]``), as
does a class the ontology does not have.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from ontologies import CaptionOntology

__all__ = ["ClassExemplars", "ExemplarBoxes", "ExemplarsInput", "resolve_exemplars"]

ExemplarBoxes = Mapping[str, Any]
"""Class name -> boxes ``[[x1, y1, x2, y2], ...]`` (list, ``(K, 4)`` array or tensor), pixels."""

ExemplarsInput = Union[ExemplarBoxes, Sequence[Union[ExemplarBoxes, None]], None]
"""One mapping for every image of a batch, or a list with one mapping (or ``None``) per image."""


@dataclass(frozen=True)
class ClassExemplars:
    """One class's exemplars on one image."""

    boxes: np.ndarray  # (K, 4) float64 xyxy original pixels, positives first
    labels: np.ndarray  # (K,) int64: 1 positive, 0 negative

    @property
    def has_positive(self) -> bool:
        return bool((self.labels == 1).any())


def _per_image(value: ExemplarsInput, n_images: int, what: str) -> list[tuple[ExemplarBoxes, str]]:
    if value is None:
        return [({}, what)] * n_images
    if isinstance(value, Mapping):
        return [(value, what)] * n_images
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n_images:
            raise ValueError(
                f"{what} is a list of {len(value)} mappings but there are {n_images} images; give one "
                "mapping per image, or a single mapping {class: boxes} for every image"
            )
        out = []
        for i, item in enumerate(value):
            if item is not None and not isinstance(item, Mapping):
                raise ValueError(
                    f"{what}[{i}] must be a mapping {{class: boxes}} or None, got {type(item).__name__}"
                )
            out.append((item or {}, f"{what}[{i}]"))
        return out
    raise ValueError(
        f"{what} must be a mapping {{class: boxes}} or a list of them, got {type(value).__name__}"
    )


def _box_list(boxes: Any, where: str) -> list[Any]:
    """``[[x1, y1, x2, y2], ...]``; a single flat box ``[x1, y1, x2, y2]`` is one box."""
    items = boxes.tolist() if hasattr(boxes, "tolist") else boxes
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"{where} must be a list of boxes [[x1, y1, x2, y2], ...], got {boxes!r}")
    if len(items) == 4 and all(isinstance(v, (int, float, np.number)) for v in items):
        return [list(items)]
    return list(items)


def _check_box(box: Any, where: str, image: str, width: int, height: int) -> list[float]:
    try:
        values = [float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where} = {box!r} is not four finite numbers [x1, y1, x2, y2]")
    x1, y1, x2, y2 = values
    if not (x1 < x2 and y1 < y2):
        raise ValueError(f"{where} = {values} is inverted or empty: need x1 < x2 and y1 < y2 (xyxy pixels)")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise ValueError(f"{where} = {values} lies outside {image} ({width}x{height} pixels)")
    return values


def resolve_exemplars(
    exemplars: ExemplarsInput,
    negative_exemplars: ExemplarsInput,
    ontology: CaptionOntology,
    image_sizes: Sequence[tuple[int, int]],
) -> list[dict[int, ClassExemplars]]:
    """Per image (``image_sizes`` are ``(W, H)``): class id -> its checked exemplars (positives first)."""
    n = len(image_sizes)
    classes = ontology.classes()
    out: list[dict[int, ClassExemplars]] = []
    positives = _per_image(exemplars, n, "exemplars")
    pairs = zip(positives, _per_image(negative_exemplars, n, "negative_exemplars"))
    for i, (pos, neg) in enumerate(pairs):
        width, height = image_sizes[i]
        image = f"images[{i}]" if n > 1 else "the image"
        found: dict[int, tuple[list[list[float]], list[int]]] = {}
        for (mapping, what), label in ((pos, 1), (neg, 0)):
            for name, boxes in mapping.items():
                if name not in classes:
                    raise ValueError(
                        f"{what} names class {name!r}, which the ontology does not have; classes: {classes}"
                    )
                entry = found.setdefault(classes.index(name), ([], []))
                for k, box in enumerate(_box_list(boxes, f"{what}[{name!r}]")):
                    entry[0].append(_check_box(box, f"{what}[{name!r}][{k}]", image, width, height))
                    entry[1].append(label)
        out.append(
            {
                cid: ClassExemplars(np.asarray(b, np.float64).reshape(-1, 4), np.asarray(lab, np.int64))
                for cid, (b, lab) in sorted(found.items())
                if b
            }
        )
    return out
