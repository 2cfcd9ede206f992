"""What the user is editing on one image, without a browser: objects, selection, clicks, boxes.

An :class:`ImageSession` holds the image, its objects (:class:`EditableObject`: a mask, a class,
the prompts that made it) and the selection. The views turn page events into its methods:

- :meth:`ImageSession.select_at` picks the smallest object under a pixel (or none);
- :meth:`ImageSession.add_click` / :meth:`ImageSession.set_box` add a prompt to the selected
  object, or start a new object of the current class when none is selected; the caller then
  computes the mask (:meth:`grounded_sam.app.models.AppModels.refine`) and stores it with
  :meth:`ImageSession.set_mask`;
- :meth:`ImageSession.delete_selected`, :meth:`ImageSession.relabel_selected`;
- :meth:`ImageSession.to_detections` / :meth:`ImageSession.summary` for export and display.

A box drawn with two clicks (``corner``) is kept in :attr:`ImageSession.corner` until the
second click. Exemplar boxes (visual prompts for ``sam3``) are kept per class.

Objects and sessions hold numpy arrays, so they compare by identity (``eq=False``): two objects
of one class with the same prompts are still two objects, and ``==``, ``in`` or ``list.index``
on them never compare masks (which raises "truth value of an array ... is ambiguous").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import supervision as sv

__all__ = ["EditableObject", "ImageSession", "MANUAL"]

MANUAL = "manual"  # the caption of an object made by clicks or a drawn box


@dataclass(eq=False)
class EditableObject:
    """One object: its mask and class, and the prompts that made it (compared by identity)."""

    class_id: int
    mask: np.ndarray  # (H, W) bool
    xyxy: np.ndarray  # (4,) the detector's box, the drawn box, or the mask's box
    score: float = 1.0  # the detector's confidence (1.0 for an object made by hand)
    mask_score: float | None = None
    caption: str = MANUAL
    box: np.ndarray | None = None  # (4,) the box prompt (a detection's box, or one drawn)
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # 1 = foreground, 0 = background
    track_id: int | None = None

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass(eq=False)
class ImageSession:
    """One image being edited (module docs; compared by identity)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    classes: list[str]
    objects: list[EditableObject] = field(default_factory=list)
    selected: int | None = None
    current_class: int = 0  # the class of new objects
    corner: tuple[float, float] | None = None  # the first corner of a box being drawn
    exemplars: dict[str, list[list[float]]] = field(default_factory=dict)  # class -> boxes (sam3)
    name: str = "image.png"
    key: str = field(default_factory=lambda: uuid.uuid4().hex)  # which image a predictor holds

    # ------------------------------------------------------------------ building
    @classmethod
    def from_detections(cls, image: np.ndarray, det: sv.Detections, classes: list[str], **kwargs: Any) -> ImageSession:
        """A session whose objects are ``det``'s (masks, boxes, classes, scores, captions, track ids)."""
        session = cls(np.ascontiguousarray(image), list(classes), **kwargs)
        h, w = image.shape[:2]
        data = det.data or {}
        for i in range(len(det)):
            xyxy = np.asarray(det.xyxy[i], dtype=np.float32)
            mask = det.mask[i].astype(bool) if det.mask is not None else _box_mask(xyxy, h, w)
            session.objects.append(EditableObject(
                class_id=int(det.class_id[i]) if det.class_id is not None else 0,
                mask=mask,
                xyxy=xyxy,
                score=float(det.confidence[i]) if det.confidence is not None else 1.0,
                mask_score=float(data["mask_score"][i]) if "mask_score" in data else None,
                caption=str(data["caption"][i]) if "caption" in data else MANUAL,
                box=xyxy.copy(),
                track_id=int(det.tracker_id[i]) if det.tracker_id is not None else None,
            ))
        return session

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    # ------------------------------------------------------------------ selection and prompts
    def _check_xy(self, x: float, y: float) -> tuple[float, float]:
        h, w = self.hw
        if not (0 <= x < w and 0 <= y < h):
            raise ValueError(f"point ({x}, {y}) is outside the {w}x{h} image")
        return float(x), float(y)

    def select_at(self, x: float, y: float) -> int | None:
        """Select the smallest object whose mask covers pixel (x, y); ``None`` (nothing) if none does."""
        x, y = self._check_xy(x, y)
        hits = [i for i, o in enumerate(self.objects) if o.mask[int(y), int(x)]]
        self.selected = min(hits, key=lambda i: self.objects[i].area) if hits else None
        self.corner = None
        return self.selected

    def _target(self) -> EditableObject:
        """The selected object, or a new (empty) one of the current class, selected."""
        if self.selected is None:
            h, w = self.hw
            self._check_class(self.current_class)
            self.objects.append(EditableObject(self.current_class, np.zeros((h, w), bool), np.zeros(4, np.float32),
                                               track_id=self.next_track_id()))
            self.selected = len(self.objects) - 1
        return self.objects[self.selected]

    def index_of(self, obj: EditableObject) -> int:
        """The position of ``obj`` (this very object) in :attr:`objects`; ``ValueError`` if it is not there."""
        for i, o in enumerate(self.objects):
            if o is obj:
                return i
        raise ValueError("the object is not in this session (deleted?)")

    def next_track_id(self) -> int | None:
        ids = [o.track_id for o in self.objects if o.track_id is not None]
        return max(ids) + 1 if ids else None

    def add_click(self, x: float, y: float, positive: bool) -> EditableObject:
        """Add a foreground (``positive``) or background click to the selected (or a new) object."""
        x, y = self._check_xy(x, y)
        if self.selected is None and not positive:
            raise ValueError("select an object before a background click (a new object starts with a foreground click)")
        obj = self._target()
        obj.points.append((x, y))
        obj.labels.append(1 if positive else 0)
        return obj

    def add_corner(self, x: float, y: float) -> np.ndarray | None:
        """One corner of a drawn box: the first is remembered, the second returns the box xyxy."""
        x, y = self._check_xy(x, y)
        if self.corner is None:
            self.corner = (x, y)
            return None
        (x0, y0), self.corner = self.corner, None
        return np.array([min(x0, x), min(y0, y), max(x0, x), max(y0, y)], dtype=np.float32)

    def set_box(self, box: np.ndarray) -> EditableObject:
        """Make ``box`` the box prompt of the selected (or a new) object."""
        obj = self._target()
        obj.box = np.asarray(box, dtype=np.float32)
        return obj

    def set_mask(self, obj: EditableObject, mask: np.ndarray, mask_score: float | None) -> None:
        """Store a prompt's mask; the object's box is its box prompt, else the mask's box."""
        obj.mask = np.asarray(mask, dtype=bool)
        obj.mask_score = mask_score
        if obj.box is not None:
            obj.xyxy = obj.box.astype(np.float32)
        elif obj.mask.any():
            obj.xyxy = sv.mask_to_xyxy(obj.mask[None])[0].astype(np.float32)

    def clear_prompts(self) -> None:
        """Forget the selected object's clicks (its box prompt stays)."""
        if self.selected is not None:
            obj = self.objects[self.selected]
            obj.points.clear()
            obj.labels.clear()
        self.corner = None

    def add_exemplar(self, box: np.ndarray) -> None:
        """A visual prompt of the current class (``sam3``): find things like this box."""
        self._check_class(self.current_class)
        self.exemplars.setdefault(self.classes[self.current_class], []).append([float(v) for v in box])

    # ------------------------------------------------------------------ editing
    def _check_class(self, class_id: int) -> None:
        if not 0 <= class_id < len(self.classes):
            raise ValueError(f"class {class_id} is not one of {self.classes}")

    def delete_selected(self) -> None:
        if self.selected is None:
            raise ValueError("nothing is selected")
        del self.objects[self.selected]
        self.selected = None

    def relabel_selected(self, class_id: int) -> None:
        if self.selected is None:
            raise ValueError("nothing is selected")
        self._check_class(class_id)
        self.objects[self.selected].class_id = int(class_id)

    def drop_empty(self) -> None:
        """Remove objects whose mask is empty (a new object whose prompt found nothing)."""
        keep = [i for i, o in enumerate(self.objects) if o.mask.any()]
        if self.selected is not None:
            self.selected = keep.index(self.selected) if self.selected in keep else None
        self.objects = [self.objects[i] for i in keep]

    # ------------------------------------------------------------------ output
    def to_detections(self) -> sv.Detections:
        """The objects as ``sv.Detections`` (the pipeline's keys; ``tracker_id`` when all have one)."""
        from grounded_sam.pipeline.core import empty_result

        objs = [o for o in self.objects if o.mask.any()]
        if not objs:
            return empty_result(self.hw)
        tracks = [o.track_id for o in objs]
        return sv.Detections(
            xyxy=np.stack([o.xyxy for o in objs]).astype(np.float32),
            mask=np.stack([o.mask for o in objs]),
            confidence=np.array([o.score for o in objs], dtype=np.float32),
            class_id=np.array([o.class_id for o in objs], dtype=int),
            tracker_id=np.array(tracks, dtype=int) if all(t is not None for t in tracks) else None,
            data={
                "class_name": np.array([self.classes[o.class_id] for o in objs]),
                "caption": np.array([o.caption for o in objs]),
                "mask_score": np.array([np.nan if o.mask_score is None else o.mask_score for o in objs], np.float32),
            },
        )

    def summary(self) -> dict[str, Any]:
        """What the page shows as the state: one entry per object, the selection, the exemplars."""
        objects = []
        for i, o in enumerate(self.objects):
            ys, xs = np.nonzero(o.mask)
            entry: dict[str, Any] = {
                "index": i, "class": self.classes[o.class_id], "score": round(o.score, 4), "area": o.area,
                "mask_box": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())] if len(xs) else None,
                "clicks": [[round(x, 1), round(y, 1), lab] for (x, y), lab in zip(o.points, o.labels)],
                "caption": o.caption,
            }
            if o.track_id is not None:
                entry["track_id"] = o.track_id
            objects.append(entry)
        return {"image": {"name": self.name, "width": self.hw[1], "height": self.hw[0]}, "selected": self.selected,
                "objects": objects, "exemplars": self.exemplars}


def _box_mask(xyxy: np.ndarray, h: int, w: int) -> np.ndarray:
    """A box-only detection shown as its filled box."""
    m = np.zeros((h, w), bool)
    x0, y0, x1, y1 = (int(round(float(v))) for v in xyxy)
    m[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return m
