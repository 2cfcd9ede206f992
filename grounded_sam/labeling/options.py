"""What a labeling job is asked to do: :class:`LabelOptions`, and :class:`RayOptions` for a cluster.

One options object travels from the front ends (``GroundedSAM.label``, the CLI's ``label``)
through :func:`~grounded_sam.labeling.label_folder` / :func:`~grounded_sam.labeling.label_folder_ray`
to the job, instead of the same keywords being repeated at every layer. Both validate
themselves when built, so a bad value fails before anything is read or written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

__all__ = ["LabelOptions", "RayOptions", "ImagePrompts", "Format", "CopyMode", "Multipart", "FORMATS", "COPY_MODES",
           "split_options"]

Format = Literal["coco", "yolo", "jsonl"]
CopyMode = Literal["copy", "hardlink", "symlink", "none"]
Multipart = Literal["merge", "largest"]
FORMATS: tuple[Format, ...] = ("coco", "yolo", "jsonl")
COPY_MODES: tuple[CopyMode, ...] = ("copy", "hardlink", "symlink", "none")
MULTIPART: tuple[Multipart, ...] = ("merge", "largest")


@dataclass(frozen=True)
class ImagePrompts:
    """Keyword arguments for the predictor, per image (e.g. SAM 3's ``exemplars``).

    ``per_image`` maps an image's POSIX path relative to the input folder (its file name in a
    flat folder) to its keywords; every other image gets ``default``. Values must be JSON-able
    (they join the job's fingerprint and travel to Ray workers).
    """

    default: Mapping[str, Any] = field(default_factory=dict)
    per_image: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.default, Mapping):
            raise ValueError(f"default must be a mapping of keyword arguments, got {type(self.default).__name__}")
        for rel, kwargs in self.per_image.items():
            if not isinstance(kwargs, Mapping):
                raise ValueError(f"prompts for {rel!r} must be a mapping of keyword arguments, "
                                 f"got {type(kwargs).__name__}")

    def __bool__(self) -> bool:
        return bool(self.default) or any(self.per_image.values())

    def for_image(self, rel: str) -> Mapping[str, Any]:
        return self.per_image.get(rel, self.default)

    @classmethod
    def from_exemplars(cls, exemplars: Mapping[str, Any] | None = None,
                       negative_exemplars: Mapping[str, Any] | None = None,
                       image_exemplars: Mapping[str, Mapping[str, Any]] | None = None) -> ImagePrompts | None:
        """Visual prompts as predictor keywords (JSON-able boxes): ``exemplars`` /
        ``negative_exemplars`` ``{class: [[x1, y1, x2, y2], ...]}`` for every image and
        ``image_exemplars`` ``{relative path: {"exemplars": ..., "negative_exemplars": ...}}`` for
        single images; ``None`` when there are none."""
        import numpy as np

        def keywords(positive: Any, negative: Any) -> dict[str, Any]:
            return {k: {str(c): np.asarray(b, dtype=float).tolist() for c, b in v.items()}
                    for k, v in (("exemplars", positive), ("negative_exemplars", negative)) if v}

        per_image = {}
        for rel, value in (image_exemplars or {}).items():
            unknown = set(value) - {"exemplars", "negative_exemplars"} if isinstance(value, Mapping) else None
            if unknown is None or unknown:
                raise ValueError(f"image_exemplars[{rel!r}] must be a mapping with 'exemplars' and/or "
                                 f"'negative_exemplars', got {value!r}")
            per_image[str(rel)] = keywords(value.get("exemplars"), value.get("negative_exemplars"))
        prompts = cls(keywords(exemplars, negative_exemplars), per_image)
        return prompts if prompts else None

    def to_json(self) -> dict[str, Any]:
        return {"default": dict(self.default), "per_image": {k: dict(v) for k, v in sorted(self.per_image.items())}}


@dataclass(frozen=True)
class LabelOptions:
    """How to label a folder (see :mod:`grounded_sam.labeling` for what each choice writes).

    Attributes:
        extension: image extension(s) to pick up, case-insensitive (``None``: every image type).
        format: ``"coco"`` (``annotations.json``), ``"yolo"`` (``labels/`` + ``data.yaml``) or
            ``"jsonl"`` (``annotations.jsonl``).
        recursive: also label images in subfolders.
        batch_size: images per predictor call.
        progress: show progress bars.
        overwrite: relabel the folder (its settings may differ from the earlier run's); the images
            reviewed in the app are kept as they are.
        discard_reviewed: with ``overwrite``, relabel the reviewed images too (their fixes are lost).
        copy_images: put the sources under ``images/`` by ``"copy"``, ``"hardlink"``,
            ``"symlink"``, or not at all (``"none"``).
        polygons: COCO polygons instead of RLE.
        multipart: how YOLO-seg joins a multi-part mask: ``"merge"`` or keep the ``"largest"`` part.
        prompts: predictor keywords per image (:class:`ImagePrompts`), e.g. SAM 3 exemplar boxes.
    """

    extension: str | Sequence[str] | None = ".jpg"  # a sequence is kept as a tuple
    format: Format = "coco"
    recursive: bool = False
    batch_size: int = 1
    progress: bool = True
    overwrite: bool = False
    discard_reviewed: bool = False
    copy_images: CopyMode = "copy"
    polygons: bool = False
    multipart: Multipart = "merge"
    prompts: ImagePrompts | None = None

    def __post_init__(self) -> None:
        if self.prompts is not None and not isinstance(self.prompts, ImagePrompts):
            raise ValueError(f"prompts must be an ImagePrompts, got {type(self.prompts).__name__}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.copy_images not in COPY_MODES:
            raise ValueError(f"copy_images must be one of {COPY_MODES}, got {self.copy_images!r}")
        if self.multipart not in MULTIPART:
            raise ValueError(f"multipart must be one of {MULTIPART}, got {self.multipart!r}")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.discard_reviewed and not self.overwrite:
            raise ValueError("discard_reviewed=True relabels reviewed images in an overwrite; give overwrite=True too "
                             "(CLI: --overwrite --discard-reviewed)")
        if self.extension is not None and not isinstance(self.extension, str):
            object.__setattr__(self, "extension", tuple(self.extension))  # hashable, whatever sequence came

    def update(self, **changes: Any) -> LabelOptions:
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes) if changes else self


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray backend runs.

    Attributes:
        address: the cluster to start Ray with when it is not initialised yet (``"auto"``: the
            running cluster; ``None``: ``RAY_ADDRESS`` or a new local Ray).
        num_workers: Ray actors, each with its own predictor.
        num_gpus_per_worker: GPUs per actor (fractions share a GPU; 0: CPU actors).
        num_cpus_per_worker: CPUs per actor (``None``: Ray's 1).
        max_restarts: how often Ray restarts an actor whose process (or node) died (``-1``: always).
        max_task_retries: how often a chunk (or video) whose worker died is given to another
            worker before its inputs are reported failed.
        worker_timeout_s: how long the job waits with no live worker (all dead or restarting)
            before it reports the remaining inputs failed.
    """

    address: str | None = None
    num_workers: int = 1
    num_gpus_per_worker: float = 0
    num_cpus_per_worker: float | None = None
    max_restarts: int = 3
    max_task_retries: int = 3
    worker_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        n = self.num_workers
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"num_workers must be a positive integer, got {n!r}")
        gpus, cpus = self.num_gpus_per_worker, self.num_cpus_per_worker
        if not isinstance(gpus, (int, float)) or not gpus >= 0:
            raise ValueError(f"num_gpus_per_worker must be a number >= 0, got {gpus!r}")
        if cpus is not None and (not isinstance(cpus, (int, float)) or not cpus > 0):
            raise ValueError(f"num_cpus_per_worker must be a number > 0, got {cpus!r}")
        for name, low in (("max_restarts", -1), ("max_task_retries", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.worker_timeout_s, (int, float)) or not self.worker_timeout_s > 0:
            raise ValueError(f"worker_timeout_s must be a number > 0, got {self.worker_timeout_s!r}")

    def update(self, **changes: Any) -> RayOptions:
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes) if changes else self


def split_options(kwargs: Mapping[str, Any], *kinds: type) -> list[dict[str, Any]]:
    """Sort keyword arguments by the dataclass (of ``kinds``) that has a field of that name.

    Raises ``TypeError`` for a keyword that none of them has.
    """
    names: Sequence[set[str]] = [{f.name for f in fields(kind)} for kind in kinds]
    out: list[dict[str, Any]] = [{} for _ in kinds]
    for key, value in kwargs.items():
        k = next((i for i, n in enumerate(names) if key in n), None)
        if k is None:
            known = sorted(set().union(*names))
            raise TypeError(f"unexpected labeling option {key!r}; the options are {', '.join(known)}")
        out[k][key] = value
    return out
