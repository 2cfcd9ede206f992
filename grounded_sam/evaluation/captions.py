"""Caption search: which of a class's candidate captions to prompt, from one pass of the models.

``--candidates "car=a car|automobile|vehicle"`` gives a class candidate captions; its current
captions are candidates too, so keeping them as they are is always one of the choices. The
pass prompts every candidate at once (:func:`search_ontology`) with the class-wise NMS off, so
each detection keeps the caption that found it. A set of captions ``S`` then gets, offline, the
detections the pipeline would give with ``S`` as the class's captions
(:func:`detections_of`): the detections of ``S``'s captions, merged by the detector's own NMS
(``nms_iou``, the same function the detector runs). Score thresholds commute with that NMS (a
box is only ever suppressed by a higher-scoring one), so each set is then swept for its
threshold like a single caption. Every non-empty set of up to :data:`MAX_CAPTIONS` captions is tried.

What one pass cannot see: a joint-prompt detector (Grounding DINO, OWL) scores a caption with
the others in its prompt, so a set's scores in the pass differ a little from a pass that prompts
that set alone; ``eval`` with the tuned ontology measures it as it runs.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from grounded_sam.evaluation.data import EvalInputError, EvalInstance, EvalSet

__all__ = ["MAX_CAPTIONS", "parse_candidates", "search_ontology", "caption_sets", "detections_of"]

MAX_CAPTIONS = 8
"""Captions per class a search tries every set of (2^8 - 1 = 255 sets)."""


def parse_candidates(specs: str | Sequence[str] | Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    """``"car=a car|automobile|vehicle"`` (several separated by ``;`` or given as a list), or
    ``{"car": ["a car", "automobile"]}`` -> ``{class: [captions]}``."""
    if not specs:
        return {}
    if isinstance(specs, Mapping):
        items = [(str(k), list(v) if not isinstance(v, str) else v.split("|")) for k, v in specs.items()]
    else:
        parts = [p for spec in ([specs] if isinstance(specs, str) else specs) for p in str(spec).split(";")]
        items = []
        for part in (p.strip() for p in parts):
            if not part:
                continue
            name, sep, captions = part.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"candidates must read 'class=caption|caption|...', got {part!r}")
            items.append((name.strip(), captions.split("|")))
    out: dict[str, list[str]] = {}
    for name, captions in items:
        clean = [c.strip() for c in captions if c.strip()]
        if not clean:
            raise ValueError(f"no candidate captions given for class {name!r}")
        out.setdefault(name, []).extend(clean)
    return out


def search_ontology(ontology: Any, candidates: Mapping[str, Sequence[str]],
                    normalize: Callable[[str], str] | None = None) -> tuple[Any, dict[str, list[str]]]:
    """The ontology the search pass prompts (each class's current captions, then its candidates;
    no per-class thresholds; negatives kept) and each class's captions in it. Captions that read
    the same to the detector (``normalize``) count once."""
    from ontologies import CaptionOntology, OntologyClass

    unknown = [name for name in candidates if name not in ontology.classes()]
    if unknown:
        raise EvalInputError(f"candidates for unknown class(es) {unknown}; the ontology's classes: {ontology.classes()}")
    for name, texts in candidates.items():
        for text in texts:
            try:
                owner = ontology.caption_class(text)
            except KeyError:
                continue
            if owner != name or ontology.is_negative(text):
                raise EvalInputError(f"candidate {text!r} for class {name!r} is already a "
                                     f"{'negative ' if ontology.is_negative(text) else ''}caption of class {owner!r}")
    key = normalize or (lambda c: " ".join(c.lower().split()))
    entries, captions = [], {}
    for entry in ontology.entries:
        seen: dict[str, str] = {}
        for caption in (*entry.captions, *candidates.get(entry.name, ())):
            seen.setdefault(key(caption), caption)
        if len(seen) > MAX_CAPTIONS:
            raise EvalInputError(f"class {entry.name!r} has {len(seen)} captions to search; at most {MAX_CAPTIONS} "
                                 "(every set of them is tried): shortlist its candidates")
        captions[entry.name] = list(seen.values())
        entries.append(OntologyClass(entry.name, tuple(seen.values()), None, entry.negative))
    try:
        return CaptionOntology.from_classes(entries), captions
    except ValueError as e:
        raise EvalInputError(f"candidate captions: {e}") from None


def caption_sets(captions: Sequence[str], current: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty set of ``captions``, the ``current`` one first, then by size (smaller sets
    win ties, being cheaper to prompt) in the captions' order."""
    everything = [tuple(s) for n in range(1, len(captions) + 1) for s in itertools.combinations(captions, n)]
    first = tuple(c for c in captions if c in set(current))
    return [first, *(s for s in everything if s != first)] if first else everything


def detections_of(found: EvalSet, name: str, captions: Sequence[str] | None = None,
                  nms_iou: float | None = None) -> list[EvalInstance]:
    """The detections of class ``name`` the pipeline would give with ``captions`` as the class's
    captions (module docs; ``None``: every detection of the class), per image highest score first."""
    from detectors.ontology_ops import nms

    chosen = None if captions is None else set(captions)
    per_image: dict[str, list[EvalInstance]] = defaultdict(list)
    for inst in found.instances:
        if inst.category == name and (chosen is None or inst.caption in chosen):
            per_image[inst.image].append(inst)
    out: list[EvalInstance] = []
    for image in sorted(per_image):
        items = per_image[image]
        if nms_iou is None:
            out += sorted(items, key=lambda i: -i.score)
            continue
        xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (i.bbox for i in items)], dtype=np.float64)
        out += [items[k] for k in nms(xyxy, np.array([i.score for i in items]), nms_iou)]
    return out
