"""Ground truth and predictions in one form, :class:`EvalSet`, from the files a user has.

An :class:`EvalSet` is a list of images (a key, width, height) and instances (image key, class
name, compressed COCO RLE mask when there is one, ``[x, y, w, h]`` box, ``iscrowd``, score).
Readers:

- :func:`read_coco` — a COCO instances JSON (polygons, RLE either way, ``iscrowd`` kept; boxes
  only where an annotation has no ``segmentation``);
- :func:`read_label_folder` — a ``grounded-sam label`` output folder, from its record store;
  ``reviewed_only=True`` keeps the images reviewed in the app (ground truth made by a person);
- :func:`read_coco_results` — a COCO results list (``image_id``, ``category_id``, ``score``,
  ``segmentation`` / ``bbox``) against the ground truth it was made for;
- :func:`from_detections` — ``{image key: sv.Detections}`` in memory.

Image keys are file names relative to the dataset (``a.jpg``, ``sub/b.jpg``); the ``images/``
prefix of a ``label`` folder's COCO file is not part of them. Bad input raises
:class:`EvalInputError` naming the file and what is wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EvalInputError", "EvalImage", "EvalInstance", "EvalSet", "read_coco", "read_coco_results",
           "read_label_folder", "from_detections", "read_ground_truth", "read_predictions"]


class EvalInputError(ValueError):
    """Ground truth or predictions that cannot be evaluated (the message says which and why)."""


@dataclass(frozen=True)
class EvalImage:
    key: str  # file name relative to the dataset, without a label folder's "images/" prefix
    width: int
    height: int
    file_name: str = ""  # as the source names it (where the image file is); "" = key

    @property
    def path(self) -> str:
        return self.file_name or self.key


@dataclass(frozen=True, eq=False)
class EvalInstance:
    image: str  # EvalImage.key
    category: str  # class name
    bbox: tuple[float, float, float, float]  # x, y, w, h
    rle: dict[str, Any] | None = None  # compressed COCO RLE ({"size": [h, w], "counts": str}); None: a box only
    iscrowd: bool = False
    score: float = 1.0
    area: float | None = None  # a COCO file's own "area" (COCOeval's area ranges use it); None: from the mask / box
    caption: str = ""  # the caption that found a prediction, where known (caption search uses it)


@dataclass
class EvalSet:
    """Images and instances (module docs); ``classes`` in first-seen (or declared) order."""

    images: dict[str, EvalImage] = field(default_factory=dict)
    instances: list[EvalInstance] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    source: str = ""  # where it was read from, for messages

    @property
    def has_masks(self) -> bool:
        """Every instance has a mask (mask IoU can be computed)."""
        return all(inst.rle is not None for inst in self.instances)

    def rename(self, class_map: Mapping[str, str]) -> EvalSet:
        """A copy with class names mapped (names not in ``class_map`` kept)."""
        instances = [replace(i, category=class_map.get(i.category, i.category)) for i in self.instances]
        classes = list(dict.fromkeys(class_map.get(c, c) for c in self.classes))
        return EvalSet(dict(self.images), instances, classes, self.source)


def _rle(segmentation: Any, h: int, w: int, where: str) -> dict[str, Any] | None:
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) as compressed RLE."""
    from pycocotools import mask as mask_utils

    if segmentation is None or segmentation == []:
        return None
    try:
        if isinstance(segmentation, list):  # polygons
            polygons = [p for p in segmentation if len(p) >= 6]
            if not polygons or any(len(p) % 2 for p in polygons):
                raise ValueError("polygons need an even number (>= 6) of coordinates")
            rle = mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in polygons], h, w))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segmentation, h, w)
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
            if list(segmentation.get("size", [])) != [h, w]:
                raise ValueError(f"its RLE size {segmentation.get('size')} is not the image's [{h}, {w}]")
            rle = dict(segmentation)
        else:
            raise ValueError(f"unknown segmentation of type {type(segmentation).__name__}")
    except (ValueError, TypeError, KeyError) as e:
        raise EvalInputError(f"{where}: malformed segmentation: {e}") from None
    counts = rle["counts"]
    return {"size": [int(h), int(w)], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalInputError(f"{what} not found: {str(path)!r}") from None
    except (OSError, ValueError) as e:
        raise EvalInputError(f"{what} {str(path)!r} is not valid JSON: {e}") from None


def _strip_images_dir(name: str) -> str:
    return name[len("images/"):] if name.startswith("images/") else name


def _coco_index(data: Any, where: str) -> tuple[dict[int, str], dict[int, EvalImage]]:
    """A COCO file's categories and images by id."""
    try:
        cats = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        images = {int(im["id"]): EvalImage(_strip_images_dir(str(im["file_name"])), int(im["width"]),
                                           int(im["height"]), str(im["file_name"])) for im in data["images"]}
    except (KeyError, TypeError, ValueError) as e:
        raise EvalInputError(f"{where}: malformed image or category entry ({type(e).__name__}: {e})") from None
    return cats, images


def _geometry(entry: Mapping[str, Any], image: EvalImage, at: str) -> tuple[tuple[float, float, float, float],
                                                                              dict[str, Any] | None]:
    """An annotation's or result's ``[x, y, w, h]`` box (from its mask where it gives none) and mask."""
    rle = _rle(entry.get("segmentation"), image.height, image.width, at)
    box = entry.get("bbox")
    if not box and rle is not None:
        from pycocotools import mask as mask_utils

        box = mask_utils.toBbox(rle).tolist()
    if not (isinstance(box, Sequence) and len(box) == 4):
        raise EvalInputError(f"{at} has neither a segmentation nor a [x, y, w, h] bbox")
    return tuple(float(v) for v in box), rle


def read_coco(path: str | os.PathLike) -> EvalSet:
    """A COCO instances file as an :class:`EvalSet` (module docs)."""
    data = _load_json(Path(path), "ground truth")
    where = str(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
            data.get("annotations"), list) or not isinstance(data.get("categories"), list):
        raise EvalInputError(f"{where} is not a COCO instances file (it needs 'images', 'annotations', 'categories')")
    cats, by_id = _coco_index(data, where)
    out = EvalSet(source=where, classes=list(dict.fromkeys(cats.values())))
    for image in by_id.values():
        if image.key in out.images:
            raise EvalInputError(f"{where}: the file name {image.key!r} appears twice in 'images'")
        out.images[image.key] = image
    for k, ann in enumerate(data["annotations"]):
        at = f"{where}: annotation {ann.get('id', k) if isinstance(ann, dict) else k}"
        try:
            image = by_id[int(ann["image_id"])]
            category = cats[int(ann["category_id"])]
        except (KeyError, TypeError, ValueError):
            raise EvalInputError(f"{at} names an image or category that the file does not have") from None
        box, rle = _geometry(ann, image, at)
        area = ann.get("area")
        out.instances.append(EvalInstance(image.key, category, box, rle, bool(ann.get("iscrowd", 0)),
                                          float(ann.get("score", 1.0)),
                                          float(area) if isinstance(area, (int, float)) else None))
    return out


def read_coco_results(path_or_list: str | os.PathLike | list[dict[str, Any]], ground_truth_file: str | os.PathLike
                      ) -> EvalSet:
    """A COCO results list as predictions; image and category ids are those of ``ground_truth_file``."""
    results = path_or_list if isinstance(path_or_list, list) else _load_json(Path(path_or_list), "predictions")
    where = "predictions" if isinstance(path_or_list, list) else str(path_or_list)
    gt = _load_json(Path(ground_truth_file), "ground truth")
    if not isinstance(results, list):
        raise EvalInputError(f"{where} is not a COCO results list")
    cats, images = _coco_index(gt, str(ground_truth_file))
    out = EvalSet(images={im.key: im for im in images.values()}, classes=list(dict.fromkeys(cats.values())),
                  source=where)
    for k, res in enumerate(results):
        at = f"{where}: result {k}"
        try:
            image, category, score = images[int(res["image_id"])], cats[int(res["category_id"])], float(res["score"])
        except (KeyError, TypeError, ValueError):
            raise EvalInputError(f"{at} needs an image_id and category_id of the ground truth and a score") from None
        box, rle = _geometry(res, image, at)
        out.instances.append(EvalInstance(image.key, category, box, rle, False, score))
    return out


def read_label_folder(folder: str | os.PathLike, reviewed_only: bool = False) -> EvalSet:
    """A ``grounded-sam label`` output folder's images and instances, from its record store.

    Predictions use the detector's box (``xyxy``) and score; for an image reviewed in the app they
    are the model's own instances, kept beside the review. ``reviewed_only`` keeps the reviewed
    images, with the reviewed instances: ground truth made by a person."""
    from grounded_sam.labeling.store import REVIEWED, STORE_DIR, RecordStore

    root = Path(folder)
    manifest = root / STORE_DIR / "manifest.json"
    data = _load_json(manifest, f"{root} is not a `grounded-sam label` output folder:")
    try:
        fingerprint = data["fingerprint"]
        classes = [str(c) for c in fingerprint["classes"]]
    except (KeyError, TypeError):
        raise EvalInputError(f"{manifest} is not a labeling manifest") from None
    store = RecordStore.open(root, fingerprint)  # the same fingerprint: nothing is written
    out = EvalSet(classes=classes, source=str(root))
    for stored in store.stored():
        record = stored.record
        if reviewed_only and not record.get(REVIEWED):
            continue
        key = str(stored.rel)
        out.images[key] = EvalImage(key, int(record["width"]), int(record["height"]), f"images/{key}")
        instances = record["instances"] if reviewed_only or stored.model is None else stored.model
        for inst in instances:
            x1, y1, x2, y2 = (inst.get("xyxy") or [None] * 4)
            box = (x1, y1, x2 - x1, y2 - y1) if None not in (x1, y1, x2, y2) else tuple(inst["bbox"])
            name = inst.get("class_name") or classes[int(inst["class_id"])]
            out.instances.append(EvalInstance(key, name, tuple(float(v) for v in box), inst.get("segmentation"),
                                              False, float(inst.get("score", 1.0))))
    if reviewed_only and not out.images:
        raise EvalInputError(f"{root} has no reviewed images yet: review some in `grounded-sam app --review {root}`")
    return out


def from_detections(detections: Mapping[str, Any], classes: Sequence[str], sizes: Mapping[str, tuple[int, int]] | None
                    = None) -> EvalSet:
    """``{image key: sv.Detections}`` (``class_id`` indexing ``classes``) as predictions; an image's
    size is its masks' or ``sizes[key]`` = ``(height, width)``."""
    from gsam_runtime.rle import encode_masks

    out = EvalSet(classes=list(classes), source="predictions in memory")
    for key, dets in detections.items():
        if dets.mask is not None:
            h, w = dets.mask.shape[1:]
        elif sizes and key in sizes:
            h, w = sizes[key]
        else:
            raise EvalInputError(f"predictions for {key!r} have no masks; give its size in sizes")
        out.images[str(key)] = EvalImage(str(key), int(w), int(h))
        rles = encode_masks(dets.mask) if dets.mask is not None else [None] * len(dets)
        scores = dets.confidence if dets.confidence is not None else np.ones(len(dets))
        captions = (dets.data or {}).get("caption", [""] * len(dets))
        for box, cid, score, rle, caption in zip(dets.xyxy, dets.class_id, scores, rles, captions):
            x1, y1, x2, y2 = (float(v) for v in box)
            out.instances.append(EvalInstance(str(key), classes[int(cid)], (x1, y1, x2 - x1, y2 - y1),
                                              dict(rle) if rle is not None else None, False, float(score),
                                              caption=str(caption)))
    return out


def read_ground_truth(source: Any) -> EvalSet:
    """An :class:`EvalSet` as is; a COCO JSON file; a ``label`` folder's reviewed images."""
    if isinstance(source, EvalSet):
        return source
    path = Path(source)
    if path.is_dir():
        return read_label_folder(path, reviewed_only=True)
    return read_coco(path)


def read_predictions(source: Any, ground_truth: Any = None, classes: Sequence[str] | None = None) -> EvalSet:
    """An :class:`EvalSet` as is; a ``label`` folder; a COCO results file (needs the ground truth's
    COCO file); ``{image: sv.Detections}`` (needs ``classes``)."""
    if isinstance(source, EvalSet):
        return source
    if isinstance(source, Mapping):
        if classes is None:
            raise EvalInputError("predictions as {image: sv.Detections} need the class names (classes=...)")
        return from_detections(source, classes)
    path = Path(source) if not isinstance(source, list) else None
    if path is not None and path.is_dir():
        return read_label_folder(path)
    if ground_truth is None or Path(str(ground_truth)).is_dir():
        raise EvalInputError("a COCO results file refers to the ids of a COCO ground-truth file; give that file")
    return read_coco_results(source if path is None else path, ground_truth)
