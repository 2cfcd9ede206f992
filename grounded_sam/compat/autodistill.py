"""autodistill's ``GroundedSAM2`` and ``plot`` over grounded-sam, for code written against them.

``from grounded_sam.compat.autodistill import GroundedSAM2, plot`` in place of
``from autodistill_grounded_sam_2 import GroundedSAM2`` / ``from autodistill.utils import plot``:

- ``GroundedSAM2(ontology=CaptionOntology({...}))`` takes autodistill's ``CaptionOntology`` (or
  ours, or a ``{caption: class}`` dict) and autodistill_grounded_sam_2's ``model`` ("Florence 2",
  its default, or "Grounding DINO"; any grounded-sam detector name works too) and Grounding DINO
  thresholds; other keywords go to :class:`~grounded_sam.GroundedSAM`.
- ``predict(image)`` -> ``sv.Detections``; an array is read as OpenCV's BGR, as autodistill's
  ``load_image(..., return_format="cv2")`` hands it to the model (paths and PIL images as usual).
- ``label(input_folder, extension=".jpg", output_folder=None)`` -> ``sv.DetectionDataset`` and,
  in ``output_folder`` (default ``<input_folder>_labeled``), autodistill's YOLO layout: ``train/``
  and ``valid/`` (``images/`` + ``labels/`` each, an 80/20 split, as autodistill's ``split_data``
  makes them) and ``data.yaml`` (``train``, ``val``, ``nc``, ``names``), beside ``images/`` +
  ``labels/`` with every image (the split holds hard links to them where the file system allows).
  The labeling itself is grounded-sam's (resumable: a rerun labels only what is missing); the
  split is seeded, so a rerun gives the same one.
- ``plot(image, detections, classes, raw=False)`` annotates a BGR array and returns it BGR.

The native API (:class:`grounded_sam.GroundedSAM`, its ``label`` report and COCO default) is unchanged.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
import yaml

from ontologies import CaptionOntology

__all__ = ["GroundedSAM2", "plot", "split_train_valid"]

MODELS = {"Florence 2": "florence-2", "Grounding DINO": "grounding-dino"}  # autodistill_grounded_sam_2's names
SPLIT_RATIO, SPLIT_SEED = 0.8, 0


def _captions(ontology: Any) -> CaptionOntology:
    """Our ontology from autodistill's ``CaptionOntology`` (``promptMap``), ours, or a dict."""
    if isinstance(ontology, CaptionOntology):
        return ontology
    if isinstance(ontology, Mapping):
        return CaptionOntology(dict(ontology))
    pairs = getattr(ontology, "promptMap", None)
    if pairs is None and hasattr(ontology, "prompts") and hasattr(ontology, "classes"):
        pairs = list(zip(ontology.prompts(), ontology.classes()))
    if pairs is None:
        raise ValueError(f"ontology must be a CaptionOntology (autodistill's or ours) or a {{caption: class}} dict, "
                         f"got {type(ontology).__name__}")
    return CaptionOntology({str(caption): str(name) for caption, name in pairs})


class GroundedSAM2:
    """autodistill_grounded_sam_2's ``GroundedSAM2`` (module docs), running grounded-sam's pipeline."""

    def __init__(
        self,
        ontology: Any,
        model: str = "Florence 2",
        grounding_dino_box_threshold: float = 0.35,
        grounding_dino_text_threshold: float = 0.25,
        **options: Any,
    ) -> None:
        from grounded_sam.api import GroundedSAM

        self.ontology = ontology  # the caller's object, as autodistill keeps it
        detector = MODELS.get(model, model)
        if detector == "grounding-dino":
            options.setdefault("box_threshold", grounding_dino_box_threshold)
            options.setdefault("text_threshold", grounding_dino_text_threshold)
        self.pipeline = GroundedSAM(_captions(ontology), detector=detector, **options)

    def predict(self, input: Any) -> sv.Detections:  # noqa: A002 (autodistill's name)
        """Detections with masks; an ndarray is BGR (OpenCV's order), as autodistill passes it."""
        if isinstance(input, np.ndarray):
            input = np.ascontiguousarray(input[..., ::-1]) if input.ndim == 3 else input
        return self.pipeline.predict(input)

    def label(
        self,
        input_folder: str | os.PathLike,
        extension: str = ".jpg",
        output_folder: str | os.PathLike | None = None,
        **options: Any,
    ) -> sv.DetectionDataset:
        """Label ``input_folder`` into autodistill's YOLO layout (module docs); the dataset it holds.

        ``options`` go to :meth:`grounded_sam.GroundedSAM.label` (``recursive``, ``batch_size``,
        ``progress``, ``overwrite``, ...). Images that fail to load are reported on stderr and left out.
        """
        out = Path(output_folder) if output_folder is not None else Path(str(input_folder) + "_labeled")
        report = self.pipeline.label(input_folder, extension=extension, output_folder=out, format="yolo",
                                     copy_images="copy", **options)
        for name, why in report.failed.items():
            print(f"grounded-sam: {name}: {why}")
        split_train_valid(out)
        return sv.DetectionDataset.from_yolo(str(out / "images"), str(out / "labels"), str(out / "data.yaml"),
                                             force_masks=True)


def split_train_valid(out: Path, ratio: float = SPLIT_RATIO, seed: int = SPLIT_SEED) -> tuple[int, int]:
    """autodistill's split of ``out/images`` + ``out/labels`` into ``train/`` and ``valid/`` (``images/`` and
    ``labels/`` each), and its ``data.yaml``; seeded, rebuilt from scratch on every call. Returns the sizes."""
    labels = out / "labels"
    images = sorted(p for p in (out / "images").rglob("*") if p.is_file() and (labels / f"{p.stem}.txt").is_file())
    order = list(images)
    random.Random(seed).shuffle(order)
    cut = int(len(order) * ratio)
    for split, part in (("train", order[:cut]), ("valid", order[cut:])):
        shutil.rmtree(out / split, ignore_errors=True)
        for image in part:
            _link(image, out / split / "images" / image.name)
            _link(labels / f"{image.stem}.txt", out / split / "labels" / f"{image.stem}.txt")
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "labels").mkdir(parents=True, exist_ok=True)
    names = yaml.safe_load((out / "data.yaml").read_text(encoding="utf-8"))["names"]
    names = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    data = {"train": str((out / "train" / "images").resolve()), "val": str((out / "valid" / "images").resolve()),
            "nc": len(names), "names": names}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    return cut, len(order) - cut


def _link(src: Path, dst: Path) -> None:
    """A hard link where the file system allows it (no second copy of the bytes), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def plot(image: np.ndarray, detections: sv.Detections, classes: list[str], raw: bool = False) -> np.ndarray | None:
    """autodistill's ``plot``: annotate a BGR array (OpenCV's order); ``raw=True`` returns the BGR result,
    else shows it."""
    from grounded_sam.export.annotate import annotate_image

    annotated = annotate_image(np.ascontiguousarray(image[..., ::-1]), detections, classes)[..., ::-1]
    if raw:
        return np.ascontiguousarray(annotated)
    sv.plot_image(np.ascontiguousarray(annotated), size=(8, 8))
    return None
