"""The detector protocol and the registry behind :func:`load_detector`.

A detector is anything with ``detect(images, ontology) -> list[sv.Detections]``: one
``Detections`` per image, ``xyxy`` float32 in original pixels, ``confidence`` float32,
``class_id`` indexing ``ontology.classes()``, and ``data["class_name"]``, ``data["caption"]``,
``data["has_score"]`` as numpy arrays (present, empty, on images without detections).

Two optional kinds, declared as class attributes (absent means ``False``; read them with
:func:`returns_masks` / :func:`supports_exemplars`, never by checking the family's name):

- ``returns_masks = True``: every ``Detections`` also carries ``mask`` ``(N, H, W)`` bool at
  the original image size (``(0, H, W)`` when empty); the class-wise NMS and the negative
  captions of the ontology then compare masks (mask IoU), not boxes. ``sam3`` is one: the
  pipeline uses its masks and runs a segmenter only when asked to.
- ``supports_exemplars = True``: ``detect(images, ontology, exemplars=None,
  negative_exemplars=None)`` also takes visual exemplars, boxes ``{class name: [[x1, y1, x2,
  y2], ...]}`` in original pixels (see :mod:`detectors.exemplars`).
- ``how_to_get_weights(model_id) -> str``: what :func:`load_detector` says, beyond ``hf download``,
  when a built-in family's hub checkpoint is missing (``sam3``: the gated licence's steps).

Built-in names resolve lazily (``import detectors`` imports neither torch nor transformers).
A user plugs in their own detector with :func:`register_detector`::

    @register_detector("my-detector", default_model_id="org/checkpoint")
    class MyDetector:
        def __init__(self, model_id=None, device=None, **options): ...
        def detect(self, images, ontology): ...

    detector = load_detector("my-detector", device="cpu")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gsam_runtime.hub import HubModel, MissingModelsError, looks_like_hub_id, offline_mode, require_models

if TYPE_CHECKING:
    import supervision as sv
    import torch

    from detectors.images import ImagesInput
    from ontologies import CaptionOntology

__all__ = [
    "DEFAULT_MODEL_IDS",
    "Detector",
    "DetectorFactory",
    "DetectorSpec",
    "available_detectors",
    "default_model_id",
    "detector_factory",
    "detector_for_folder",
    "detector_returns_masks",
    "load_detector",
    "register_detector",
    "returns_masks",
    "supports_exemplars",
]


@runtime_checkable
class Detector(Protocol):
    """Turns a batch of images and a caption ontology into one ``sv.Detections`` per image."""

    def detect(
        self, images: ImagesInput, ontology: CaptionOntology | dict[str, str]
    ) -> list[sv.Detections]: ...


def returns_masks(detector: Any) -> bool:
    """Whether ``detector``'s results carry ``mask`` (its class sets ``returns_masks = True``)."""
    return bool(getattr(detector, "returns_masks", False))


def supports_exemplars(detector: Any) -> bool:
    """Whether ``detector.detect`` takes ``exemplars=`` / ``negative_exemplars=`` (visual prompts)."""
    return bool(getattr(detector, "supports_exemplars", False))


DetectorFactory = Callable[..., Detector]
"""Called as ``factory(model_id=..., device=..., **options)``; a detector class qualifies."""

DEFAULT_MODEL_IDS: dict[str, str] = {
    "grounding-dino": "iSEE-Laboratory/llmdet_tiny",
    "owlv2": "google/owlv2-base-patch16-ensemble",
    "owlvit": "google/owlvit-base-patch32",
    "florence-2": "florence-community/Florence-2-base",
    "omdet-turbo": "omlab/omdet-turbo-swin-tiny-hf",
    "sam3": "facebook/sam3",
}
"""Hub id used when ``load_detector`` gets no ``model_id`` (reasons in ``detectors/__init__``)."""

_BUILTINS: dict[str, str] = {
    "grounding-dino": "detectors.grounding_dino:GroundingDinoDetector",
    "owlv2": "detectors.owl:Owlv2Detector",
    "owlvit": "detectors.owl:OwlVitDetector",
    "florence-2": "detectors.florence2:Florence2Detector",
    "omdet-turbo": "detectors.omdet_turbo:OmDetTurboDetector",
    "sam3": "detectors.sam3:Sam3Detector",
}


_BUILTIN_RETURNS_MASKS = frozenset({"sam3"})
"""Built-ins whose class sets ``returns_masks = True`` (known without importing them; a test checks)."""


def detector_returns_masks(name: str) -> bool:
    """Whether the detector registered as ``name`` returns masks, without loading a model (for a
    built-in, without importing its module: a command line asks this before torch loads)."""
    key = _key(name)
    entry = _lookup(key)
    if entry.factory == _BUILTINS.get(key):
        return key in _BUILTIN_RETURNS_MASKS
    return returns_masks(_resolve(entry))


MODEL_TYPES: dict[str, str] = {
    "grounding-dino": "grounding-dino",
    "mm-grounding-dino": "grounding-dino",
    "owlv2": "owlv2",
    "owlvit": "owlvit",
    "florence2": "florence-2",
    "omdet-turbo": "omdet-turbo",
    "sam3": "sam3",
    "sam3_video": "sam3",  # facebook/sam3 holds the video model, detector included
}
"""transformers ``model_type`` of a ``save_pretrained`` checkpoint -> the built-in detector that loads it."""


def detector_for_folder(folder: str | Path) -> str:
    """The detector name for a local ``save_pretrained`` folder, from its ``config.json`` (no model loads)."""
    import json

    cfg = Path(folder) / "config.json"
    if not cfg.is_file():
        raise ValueError(f"detector folder {folder} has no config.json (expected a transformers save_pretrained folder)")
    model_type = json.loads(cfg.read_text(encoding="utf-8")).get("model_type")
    try:
        return MODEL_TYPES[model_type]
    except KeyError:
        raise ValueError(f"detector folder {folder} holds a {model_type!r} model; supported: {sorted(MODEL_TYPES)}") from None


def detector_factory(name: str) -> DetectorFactory:
    """The class (or factory) registered as ``name``, imported on first use; its class attributes
    say what it does (``returns_masks``, ``default_box_threshold`` of the built-ins)."""
    return _resolve(_lookup(name))


@dataclass(frozen=True)
class DetectorSpec:
    """How :func:`load_detector` built a detector: enough to build it again in another process.

    Set as ``detector.build_spec`` on every detector that :func:`load_detector` builds from a
    name (a local ``model_id`` is recorded as an absolute path); a detector built by hand has
    none. ``build(device)`` loads the same checkpoint with the same options on ``device``
    (weights changed in memory after loading are not part of the recipe).
    """

    name: str
    model_id: str | None
    options: tuple[tuple[str, Any], ...] = ()

    def build(self, device: str | torch.device | None = None) -> Detector:
        return load_detector(self.name, model_id=self.model_id, device=device, **dict(self.options))


@dataclass(frozen=True)
class _Entry:
    factory: DetectorFactory | str  # a callable, or "module:attr" resolved on first use
    default_model_id: str | None


_REGISTRY: dict[str, _Entry] = {
    name: _Entry(target, DEFAULT_MODEL_IDS.get(name)) for name, target in _BUILTINS.items()
}


def _key(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"detector name must be a non-empty string, got {name!r}")
    return name.strip().lower().replace("_", "-")


def register_detector(
    name: str,
    factory: DetectorFactory | None = None,
    *,
    default_model_id: str | None = None,
    overwrite: bool = False,
) -> Any:
    """Register ``factory`` under ``name`` (case-insensitive, ``_`` == ``-``).

    Usable directly (``register_detector("x", MyDetector)``) or as a decorator
    (``@register_detector("x")``). Re-registering an existing name needs ``overwrite=True``.
    Returns the factory (so the decorated class stays usable).
    """
    key = _key(name)

    def add(f: DetectorFactory) -> DetectorFactory:
        if not callable(f):
            raise TypeError(f"detector factory for {name!r} must be callable, got {f!r}")
        if key in _REGISTRY and not overwrite:
            raise ValueError(f"detector {key!r} is already registered; pass overwrite=True to replace it")
        _REGISTRY[key] = _Entry(f, default_model_id)
        return f

    return add if factory is None else add(factory)


def available_detectors() -> list[str]:
    """Registered detector names, sorted."""
    return sorted(_REGISTRY)


def default_model_id(name: str) -> str | None:
    """The model id ``load_detector(name)`` uses when given none."""
    return _lookup(name).default_model_id


def _lookup(name: str) -> _Entry:
    key = _key(name)
    try:
        return _REGISTRY[key]
    except KeyError:
        raise ValueError(
            f"unknown detector {name!r}; available: {', '.join(available_detectors())}"
        ) from None


def _require_model(key: str, entry: _Entry, factory: DetectorFactory, model_id: str | None,
                   prebuilt: bool = False) -> bool:
    """For a built-in family and a hub id: :class:`gsam_runtime.hub.MissingModelsError` at once when the
    checkpoint is neither cached nor downloadable; whether to load it offline (cached, hub out of reach).
    ``prebuilt``: the model object is given, nothing loads. A family's own check of the id
    (``check_model_id``) comes first."""
    if prebuilt or entry.factory != _BUILTINS.get(key) or model_id is None or not looks_like_hub_id(model_id):
        return False
    if Path(model_id).expanduser().exists():
        return False
    check = getattr(factory, "check_model_id", None)
    if check is not None:
        check(model_id)
    advice = getattr(factory, "how_to_get_weights", None)  # a family's own steps (gated weights)
    return require_models([HubModel("detector", key, model_id)], headline=(
        f"the {key} checkpoint is not on this machine, and "), local=advice(model_id) if advice else (
        f"Or load a local copy: load_detector({key!r}, model_id='path/to/save_pretrained_folder')."))


def _resolve(entry: _Entry) -> DetectorFactory:
    if callable(entry.factory):
        return entry.factory
    module, attr = entry.factory.split(":")
    return getattr(importlib.import_module(module), attr)


def load_detector(
    name: str | Detector,
    model_id: str | None = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> Detector:
    """Build the detector registered as ``name``.

    ``model_id`` is a hub id or a local ``save_pretrained`` directory (default: the name's
    entry in :data:`DEFAULT_MODEL_IDS`); ``device=None`` picks CUDA, then MPS, then CPU.
    ``options`` go to the detector (built-ins: ``box_threshold``, ``nms_iou``,
    ``negative_iou``, ``batch_size``, ``captions_per_pass``, ``use_autocast`` and
    family-specific ones); an unknown option is a ``TypeError``. An object that already
    has a ``detect`` method is returned as is (with no other argument allowed).

    The detector remembers how it was built: ``detector.build_spec`` (:class:`DetectorSpec`), which
    lets a pipeline holding it rebuild it in Ray workers. A built-in family's hub checkpoint that is
    neither cached nor downloadable from here raises :class:`gsam_runtime.hub.MissingModelsError` at
    once (no connection retries), saying how to fetch it.
    """
    if not isinstance(name, str):
        if isinstance(name, Detector):
            if model_id is not None or device is not None or options:
                raise ValueError(
                    "load_detector got a detector instance; model_id, device and options "
                    "only apply when it is given a name"
                )
            return name
        raise ValueError(
            f"detector must be a name ({', '.join(available_detectors())}) or an object with "
            f"a detect(images, ontology) method, got {type(name).__name__}"
        )
    entry = _lookup(name)
    factory = _resolve(entry)
    model_id = model_id or entry.default_model_id
    try:
        offline = _require_model(_key(name), entry, factory, model_id, prebuilt=options.get("model") is not None)
    except MissingModelsError as e:
        raise e.with_traceback(None) from None  # the message says it all: no frames of ours
    with offline_mode(offline):  # cached, the hub out of reach: read the cache, no retries
        detector = factory(model_id=model_id, device=device, **options)
    if not isinstance(detector, Detector):
        raise TypeError(
            f"the factory registered as {name!r} returned {type(detector).__name__}, "
            "which has no detect(images, ontology) method"
        )
    if model_id is not None and Path(model_id).exists():
        model_id = str(Path(model_id).resolve())
    try:
        detector.build_spec = DetectorSpec(_key(name), model_id, tuple(sorted(options.items())))
    except AttributeError:  # a factory's object that takes no new attributes (__slots__)
        pass
    return detector
