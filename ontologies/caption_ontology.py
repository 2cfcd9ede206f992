"""Caption ontologies: which text prompts a detector is given and which class each one means."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CaptionOntology", "OntologyClass"]


def _check_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise ValueError(f"{what} is empty: {value!r}")
    return value


def _key(caption: str) -> str:
    """Identity of a caption as a detector sees it: case and runs of whitespace ignored."""
    return re.sub(r"\s+", " ", caption.strip().lower())


@dataclass(frozen=True)
class OntologyClass:
    """One output class: the captions that mean it, an optional score threshold and negatives."""

    name: str
    captions: tuple[str, ...]
    threshold: float | None = None
    negative: tuple[str, ...] = field(default_factory=tuple)


class CaptionOntology(Mapping[str, str]):
    """An ordered mapping ``caption -> class name``.

    Several captions may name one class; they share one class id. Class ids index
    :meth:`classes` (unique names, first-seen order). Each class may carry a score
    ``threshold`` in [0, 1] and ``negative`` captions: a detection whose best caption is a
    negative one is dropped by the detectors.

    Built from autodistill's plain dict ``{"a dog": "dog", "puppy": "dog"}`` or from the
    richer form ``{"classes": {"dog": {"captions": [...], "threshold": 0.3, "negative": [...]}}}``.
    Equality is order-sensitive because class ids depend on order. ``len()`` counts captions
    (the mapping's entries); :attr:`num_classes` counts classes.
    """

    def __init__(
        self,
        ontology: Mapping[str, str] | None = None,
        *,
        thresholds: Mapping[str, float] | None = None,
        negatives: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if ontology is None or not isinstance(ontology, Mapping):
            raise ValueError(
                "ontology must be a mapping {caption: class name}, got "
                f"{type(ontology).__name__}"
            )
        if len(ontology) == 0:
            raise ValueError("ontology is empty: give at least one {caption: class name} entry")
        grouped: dict[str, list[str]] = {}
        for caption, name in ontology.items():
            _check_text(caption, "caption")
            _check_text(name, f"class name for caption {caption!r}")
            grouped.setdefault(name, []).append(caption)
        thresholds = dict(thresholds or {})
        negatives = {k: list(v) for k, v in (negatives or {}).items()}
        for what, table in (("threshold", thresholds), ("negative captions", negatives)):
            for name in table:
                if name not in grouped:
                    raise ValueError(f"{what} given for unknown class {name!r}; classes: {list(grouped)}")
        classes = [
            OntologyClass(
                name=name,
                captions=tuple(captions),
                threshold=thresholds.get(name),
                negative=tuple(negatives.get(name, ())),
            )
            for name, captions in grouped.items()
        ]
        self._init_from_classes(classes)

    # ------------------------------------------------------------------ construction
    def _init_from_classes(self, classes: Sequence[OntologyClass]) -> None:
        if not classes:
            raise ValueError("ontology is empty: give at least one class")
        seen: dict[str, tuple[str, str, str]] = {}  # key -> (caption, class, kind)
        names: set[str] = set()
        for cls in classes:
            _check_text(cls.name, "class name")
            if cls.name in names:
                raise ValueError(f"class {cls.name!r} is listed twice")
            names.add(cls.name)
            if not cls.captions:
                raise ValueError(f"class {cls.name!r} has no captions")
            if cls.threshold is not None:
                t = cls.threshold
                if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= float(t) <= 1.0:
                    raise ValueError(
                        f"threshold of class {cls.name!r} must be a number in [0, 1], got {t!r}"
                    )
            for kind, texts in (("caption", cls.captions), ("negative caption", cls.negative)):
                for text in texts:
                    _check_text(text, f"{kind} of class {cls.name!r}")
                    k = _key(text)
                    if k in seen:
                        other_caption, other_class, other_kind = seen[k]
                        if other_class == cls.name and other_kind == kind:
                            raise ValueError(f"{kind} {text!r} is listed twice for class {cls.name!r}")
                        raise ValueError(
                            f"{kind} {text!r} of class {cls.name!r} is already used by class "
                            f"{other_class!r} (as {other_kind} {other_caption!r}); a caption must map "
                            "to one class and be either positive or negative"
                        )
                    seen[k] = (text, cls.name, kind)
        self._classes: tuple[OntologyClass, ...] = tuple(
            OntologyClass(
                c.name,
                tuple(c.captions),
                None if c.threshold is None else float(c.threshold),
                tuple(c.negative),
            )
            for c in classes
        )
        self._caption_to_class = {cap: c.name for c in self._classes for cap in c.captions}
        self._negative_to_class = {cap: c.name for c in self._classes for cap in c.negative}
        self._class_ids = {c.name: i for i, c in enumerate(self._classes)}
        self._by_key = {
            _key(cap): c.name for c in self._classes for cap in (*c.captions, *c.negative)
        }

    @classmethod
    def from_classes(cls, classes: Sequence[OntologyClass]) -> CaptionOntology:
        obj = cls.__new__(cls)
        obj._init_from_classes(list(classes))
        return obj

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaptionOntology:
        """Plain ``{caption: class}`` or rich ``{"classes": {name: {captions, threshold, negative}}}``."""
        if not isinstance(data, Mapping):
            raise ValueError(f"ontology must be a mapping, got {type(data).__name__}")
        if "classes" in data and isinstance(data["classes"], (Mapping, list)):
            extra = set(data) - {"classes"}
            if extra:
                raise ValueError(f"unknown top-level ontology keys {sorted(extra)}; expected only 'classes'")
            return cls.from_classes(_parse_rich(data["classes"]))
        return cls(dict(data))

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> CaptionOntology:
        """Load from a YAML file path (or YAML text) with ``yaml.safe_load``."""
        p = Path(path_or_text) if not isinstance(path_or_text, Path) else path_or_text
        is_file = isinstance(path_or_text, Path) or ("\n" not in str(path_or_text) and p.suffix in {".yaml", ".yml"})
        if is_file:
            if not p.is_file():
                raise FileNotFoundError(f"ontology file not found: {p}")
            text = p.read_text(encoding="utf-8")
        else:
            text = str(path_or_text)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"ontology YAML could not be parsed: {e}") from e
        if data is None:
            raise ValueError("ontology is empty: the YAML holds no entries")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The plain form when it says everything, else the rich form."""
        if all(c.threshold is None and not c.negative for c in self._classes):
            return dict(self._caption_to_class)
        out: dict[str, Any] = {}
        for c in self._classes:
            entry: dict[str, Any] = {"captions": list(c.captions)}
            if c.threshold is not None:
                entry["threshold"] = c.threshold
            if c.negative:
                entry["negative"] = list(c.negative)
            out[c.name] = entry
        return {"classes": out}

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    # ------------------------------------------------------------------ queries
    def classes(self) -> list[str]:
        """Unique class names in first-seen order; ``class_id`` indexes this list."""
        return [c.name for c in self._classes]

    def prompts(self) -> list[str]:
        """Positive captions in order (what autodistill calls prompts)."""
        return list(self._caption_to_class)

    def negative_prompts(self) -> list[str]:
        return list(self._negative_to_class)

    def all_prompts(self) -> list[str]:
        """Every caption a detector must be given: positives, then negatives."""
        return self.prompts() + self.negative_prompts()

    @property
    def num_classes(self) -> int:
        return len(self._classes)

    @property
    def entries(self) -> tuple[OntologyClass, ...]:
        return self._classes

    def class_id(self, name: str) -> int:
        try:
            return self._class_ids[name]
        except KeyError:
            raise KeyError(f"unknown class {name!r}; classes: {self.classes()}") from None

    def caption_class(self, caption: str) -> str:
        """Class of a positive or negative caption (case/whitespace-insensitive)."""
        try:
            return self._by_key[_key(caption)]
        except KeyError:
            raise KeyError(f"unknown caption {caption!r}; captions: {self.all_prompts()}") from None

    def caption_class_id(self, caption: str) -> int:
        return self._class_ids[self.caption_class(caption)]

    def is_negative(self, caption: str) -> bool:
        k = _key(caption)
        return any(_key(n) == k for n in self._negative_to_class)

    def threshold(self, name: str) -> float | None:
        return self._classes[self.class_id(name)].threshold

    def negatives(self, name: str) -> list[str]:
        return list(self._classes[self.class_id(name)].negative)

    def captions(self, name: str) -> list[str]:
        return list(self._classes[self.class_id(name)].captions)

    # autodistill compatibility --------------------------------------------------
    @property
    def promptMap(self) -> list[tuple[str, str]]:  # noqa: N802 (autodistill name)
        return list(self._caption_to_class.items())

    def promptToClass(self, prompt: str) -> str:  # noqa: N802
        return self._caption_to_class[prompt]

    def classToPrompt(self, name: str) -> str:  # noqa: N802
        return self.captions(name)[0]

    # Mapping protocol: caption -> class name ------------------------------------
    def __getitem__(self, caption: str) -> str:
        return self._caption_to_class[caption]

    def __iter__(self) -> Iterator[str]:
        return iter(self._caption_to_class)

    def __len__(self) -> int:
        return len(self._caption_to_class)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CaptionOntology):
            return self._classes == other._classes
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other) and list(self.to_dict()) == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._classes)

    def __repr__(self) -> str:
        return f"CaptionOntology({self.to_dict()!r})"


def _parse_rich(classes: Any) -> list[OntologyClass]:
    if isinstance(classes, list):  # [{"name": ..., "captions": [...]}, ...]
        items = []
        for i, entry in enumerate(classes):
            if not isinstance(entry, Mapping) or "name" not in entry:
                raise ValueError(f"classes[{i}] must be a mapping with a 'name', got {entry!r}")
            body = dict(entry)
            items.append((body.pop("name"), body))
    else:
        items = list(classes.items())
    if not items:
        raise ValueError("ontology is empty: 'classes' has no entries")
    out = []
    for name, body in items:
        _check_text(name, "class name")
        if body is None:
            body = {}
        if isinstance(body, (str, list)):
            body = {"captions": body}
        if not isinstance(body, Mapping):
            raise ValueError(f"class {name!r}: expected a mapping, got {body!r}")
        unknown = set(body) - {"captions", "threshold", "negative"}
        if unknown:
            raise ValueError(
                f"class {name!r}: unknown keys {sorted(unknown)}; allowed: captions, threshold, negative"
            )
        captions = body.get("captions", [name])
        if isinstance(captions, str):
            captions = [captions]
        negative = body.get("negative", []) or []
        if isinstance(negative, str):
            negative = [negative]
        if not isinstance(captions, list) or not isinstance(negative, list):
            raise ValueError(f"class {name!r}: captions and negative must be lists of strings")
        out.append(OntologyClass(name, tuple(captions), body.get("threshold"), tuple(negative)))
    return out
