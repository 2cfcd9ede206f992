"""What a labeling job is asked to do: :class:`LabelOptions`, and :class:`RayOptions` for a cluster.

One options object travels from the front ends (``GroundedSAM.label``, the CLI's ``label``)
through :func:`~grounded_sam.labeling.label_folder` / :func:`~grounded_sam.labeling.label_folder_ray`
to the job, instead of the same keywords being repeated at every layer. Both validate
themselves when built, so a bad value fails before anything is read or written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

__all__ = ["LabelOptions", "RayOptions", "Format", "CopyMode", "Multipart", "FORMATS", "COPY_MODES",
           "split_options"]

Format = Literal["coco", "yolo", "jsonl"]
CopyMode = Literal["copy", "hardlink", "symlink", "none"]
Multipart = Literal["merge", "largest"]
FORMATS: tuple[Format, ...] = ("coco", "yolo", "jsonl")
COPY_MODES: tuple[CopyMode, ...] = ("copy", "hardlink", "symlink", "none")
MULTIPART: tuple[Multipart, ...] = ("merge", "largest")


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
        overwrite: relabel everything when the output folder was labeled with other settings.
        copy_images: put the sources under ``images/`` by ``"copy"``, ``"hardlink"``,
            ``"symlink"``, or not at all (``"none"``).
        polygons: COCO polygons instead of RLE.
        multipart: how YOLO-seg joins a multi-part mask: ``"merge"`` or keep the ``"largest"`` part.
    """

    extension: str | Sequence[str] | None = ".jpg"  # a sequence is kept as a tuple
    format: Format = "coco"
    recursive: bool = False
    batch_size: int = 1
    progress: bool = True
    overwrite: bool = False
    copy_images: CopyMode = "copy"
    polygons: bool = False
    multipart: Multipart = "merge"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.copy_images not in COPY_MODES:
            raise ValueError(f"copy_images must be one of {COPY_MODES}, got {self.copy_images!r}")
        if self.multipart not in MULTIPART:
            raise ValueError(f"multipart must be one of {MULTIPART}, got {self.multipart!r}")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
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
    """

    address: str | None = None
    num_workers: int = 1
    num_gpus_per_worker: float = 0
    num_cpus_per_worker: float | None = None

    def __post_init__(self) -> None:
        n = self.num_workers
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"num_workers must be a positive integer, got {n!r}")
        gpus, cpus = self.num_gpus_per_worker, self.num_cpus_per_worker
        if not isinstance(gpus, (int, float)) or not gpus >= 0:
            raise ValueError(f"num_gpus_per_worker must be a number >= 0, got {gpus!r}")
        if cpus is not None and (not isinstance(cpus, (int, float)) or not cpus > 0):
            raise ValueError(f"num_cpus_per_worker must be a number > 0, got {cpus!r}")

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
