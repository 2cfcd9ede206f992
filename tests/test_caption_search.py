"""Caption search and the cgF1 objective of ``tune``.

The detector here is a real :class:`TransformersDetector` (thresholds, negatives and class-wise NMS
are the library's own) whose forward pass reads a table: each caption finds its own boxes with its
own scores, whatever else is in the prompt. So the pipeline run with any set of captions is known
exactly, and the one-pass search must agree with running every set on its own."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from detectors.ontology_ops import RawDetections
from detectors.transformers_base import TransformersDetector
from grounded_sam import GroundedSAM
from grounded_sam.evaluation.captions import MAX_CAPTIONS, caption_sets, parse_candidates
from grounded_sam.evaluation.data import EvalImage, EvalInputError, EvalInstance, EvalSet
from grounded_sam.evaluation.objectives import parse_objective
from grounded_sam.evaluation.sa_co import sa_co_metrics
from ontologies import CaptionOntology

SIZE = 64
# caption -> (class, share of the class's objects it finds, scores of those, false boxes per image, their scores)
PROFILES = {
    "car": ("car", 0.60, (0.30, 0.90), 0.3, (0.10, 0.60)),
    "automobile": ("car", 0.60, (0.40, 0.95), 0.3, (0.05, 0.50)),
    "vehicle": ("car", 0.95, (0.35, 0.80), 2.0, (0.30, 0.85)),
    "dog": ("dog", 0.85, (0.45, 0.99), 1.0, (0.05, 0.55)),
}


def _box(cell: int, jitter: float = 0.0) -> list[float]:
    y, x = divmod(cell, 4)
    return [x * 16 + 2.0 + jitter, y * 16 + 2.0, x * 16 + 14.0 + jitter, y * 16 + 14.0]


def _rle(box: list[float]) -> dict:
    m = np.zeros((SIZE, SIZE), np.uint8)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    m[y1:y2, x1:x2] = 1
    r = mask_utils.encode(np.asfortranarray(m))
    return {"size": r["size"], "counts": r["counts"].decode()}


def make_world(seed: int, n_images: int) -> tuple[dict[int, list[tuple[str, list[float], float]]], EvalSet]:
    """Per image: what each caption finds (caption, box, score), and the ground truth."""
    rng = np.random.default_rng(seed)
    table, gt = {}, EvalSet(classes=["car", "dog"], source="generated")
    for i in range(n_images):
        key = f"img{i:03d}.png"
        gt.images[key] = EvalImage(key, SIZE, SIZE)
        cells = list(rng.permutation(16))
        rows = []
        objects = {name: [int(cells.pop()) for _ in range(int(rng.integers(0, 3)))] for name in ("car", "dog")}
        for name, found in objects.items():
            gt.instances += [EvalInstance(key, name, (b[0], b[1], 12.0, 12.0), _rle(b)) for b in map(_box, found)]
        free = cells
        for caption, (name, share, hit, n_false, false) in PROFILES.items():
            for cell in objects[name]:
                if rng.random() < share:  # each caption's box of an object is a little off the others'
                    rows.append((caption, _box(cell, float(rng.uniform(-1, 1))), float(np.float32(rng.uniform(*hit)))))
            for cell in rng.choice(free, size=min(len(free), int(rng.poisson(n_false))), replace=False):
                rows.append((caption, _box(int(cell)), float(np.float32(rng.uniform(*false)))))
        table[i] = rows
    return table, gt


class TableDetector(TransformersDetector):
    """Each prompt text finds what the table says for the image (its pixel value is its index);
    its masks are its boxes filled."""

    name = "table"
    returns_masks = True

    def __init__(self, table, **kwargs) -> None:
        self.table, self.calls = table, 0
        super().__init__("table", "cpu", model=torch.nn.Identity(), processor=object(), **kwargs)

    def _load(self, model_id):  # pragma: no cover - built from objects
        raise AssertionError

    def _forward(self, images, texts, min_score):
        self.calls += 1
        out = []
        for image in images:
            rows = [(texts.index(c), b, s) for c, b, s in self.table[int(np.asarray(image)[0, 0, 0])]
                    if c in texts and s >= min_score]
            out.append(RawDetections(np.array([b for _, b, _ in rows], np.float32).reshape(-1, 4),
                                     np.array([s for _, _, s in rows], np.float32), np.array([p for p, _, _ in rows])))
        return out

    def detect(self, images, ontology) -> list[sv.Detections]:
        found = super().detect(images, ontology)
        for dets in found:
            dets.mask = np.stack([mask_utils.decode(_rle(list(b))).astype(bool) for b in dets.xyxy]) if len(dets) \
                else np.zeros((0, SIZE, SIZE), bool)
        return found


def _images(folder, n: int):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((SIZE, SIZE, 3), i, np.uint8)).save(folder / f"img{i:03d}.png")
    return folder


def _pipeline(table, ontology=None, box_threshold: float = 0.3) -> GroundedSAM:
    ontology = ontology or CaptionOntology({"car": "car", "dog": "dog"})
    return GroundedSAM(ontology, detector=TableDetector(table, box_threshold=box_threshold, nms_iou=0.5), device="cpu")


def test_search_equals_running_every_caption_set(tmp_path) -> None:
    """The chosen set and its F1 are those of the best of all sets, each tuned in a pass of its own;
    the tuned ontology labels to the F1 promised; the search is one pass."""
    table, gt = make_world(seed=0, n_images=40)
    images = _images(tmp_path / "images", 40)
    pipe = _pipeline(table)
    result = pipe.tune(gt, images=images, floor=0.0, candidates="car=automobile|vehicle")
    assert pipe.detector.calls == 40  # one forward per image (batch_size 1): every caption in one prompt
    assert pipe.detector.nms_iou == 0.5 and pipe.ontology.captions("car") == ["car"]  # restored
    alone = {}
    for n in range(1, 4):
        for subset in itertools.combinations(["car", "automobile", "vehicle"], n):
            onto = CaptionOntology.from_dict({"classes": {"car": {"captions": list(subset)}, "dog": {"captions": ["dog"]}}})
            alone[subset] = _pipeline(table, onto).tune(gt, images=images, floor=0.0).after["car"]["F1"]
    best = max(alone.values())
    assert result.after["car"]["F1"] == pytest.approx(best, abs=1e-12)
    assert alone[tuple(result.captions["car"])] == pytest.approx(best, abs=1e-12)
    assert len(result.captions["car"]) == 2  # two captions that find different cars: merged by the NMS
    assert result.after["car"]["F1"] > result.before["car"]["F1"]
    assert result.captions["dog"] == ["dog"]  # no candidates: as it was
    rows = {tuple(r["captions"]): r for r in result.caption_table["car"]}
    for caption in ("car", "automobile", "vehicle"):
        assert rows[caption,]["F1"] == pytest.approx(alone[caption,], abs=1e-12)
    assert rows["car",]["current"] and sum(r["chosen"] for r in rows.values()) == 1
    assert "captions of 'car'" in result.summary()
    tuned = _pipeline(table, CaptionOntology.from_yaml(result.save(tmp_path / "tuned.yaml")))
    assert tuned.ontology.captions("car") == result.captions["car"]
    report = tuned.evaluate(gt, images=images)
    assert report.per_class["car"]["F1"] == pytest.approx(result.after["car"]["F1"], abs=1e-12)
    assert report.cgf1 == pytest.approx(result.overall["after"]["cgF1"], abs=1e-9)


def _labels(table, gt: EvalSet, thresholds: dict[str, float]) -> EvalSet:
    """What the pipeline labels with these thresholds (one caption per class)."""
    onto = CaptionOntology({"car": "car", "dog": "dog"}, thresholds=thresholds)
    det = TableDetector(table, box_threshold=0.0, nms_iou=0.5)
    out = EvalSet(dict(gt.images), [], ["car", "dog"])
    for i, key in enumerate(sorted(gt.images)):
        (d,) = det.detect([np.full((SIZE, SIZE, 3), i, np.uint8)], onto)
        out.instances += [EvalInstance(key, n, (b[0], b[1], b[2] - b[0], b[3] - b[1]), _rle(list(b)), False, float(s))
                          for b, n, s in zip(d.xyxy, d.data["class_name"], d.confidence)]
    return out


def test_cgf1_objective_is_a_coordinate_optimum(tmp_path) -> None:
    """cgF1 tuning: what it promises is SAM 3's cgF1 of the labels the tuned ontology gives, no
    single class's other threshold does better, nothing gets worse than before; with one class it
    is the brute-force optimum."""
    table, gt = make_world(seed=1, n_images=24)
    images = _images(tmp_path / "images", 24)
    result = _pipeline(table, box_threshold=0.2).tune(gt, images=images, objective="cgf1", floor=0.0)
    assert result.objective == "cgf1"
    after = sa_co_metrics(gt, _labels(table, gt, result.thresholds), "segm")["cgF1"]
    assert after == pytest.approx(result.overall["after"]["cgF1"], abs=1e-9)
    assert result.overall["after"]["cgF1"] >= result.overall["before"]["cgF1"] - 1e-12
    scores = {n: sorted({s for rows in table.values() for c, _, s in rows if c == n}) for n in ("car", "dog")}
    for name in ("car", "dog"):
        for t in [*scores[name], 1.0]:
            other = sa_co_metrics(gt, _labels(table, gt, {**result.thresholds, name: t}), "segm")["cgF1"]
            assert other <= after + 1e-9, (name, t)
    # one class: the best of every threshold
    only_dogs = EvalSet(gt.images, [i for i in gt.instances if i.category == "dog"], ["dog"])
    pipe = GroundedSAM({"dog": "dog"}, detector=TableDetector(table, box_threshold=0.2, nms_iou=0.5), device="cpu")
    one = pipe.tune(only_dogs, images=images, objective="cgf1", floor=0.0)
    brute = max(sa_co_metrics(only_dogs, EvalSet(gt.images, [i for i in _labels(table, gt, {"dog": t}).instances
                                                             if i.category == "dog"], ["dog"]), "segm")["cgF1"]
                for t in [*scores["dog"], 1.0])
    assert one.overall["after"]["cgF1"] == pytest.approx(brute, abs=1e-9)


def test_cgf1_with_caption_search(tmp_path) -> None:
    table, gt = make_world(seed=2, n_images=24)
    images = _images(tmp_path / "images", 24)
    result = _pipeline(table).tune(gt, images=images, objective="cgf1", floor=0.0,
                                   candidates={"car": ["automobile", "vehicle"]})
    tuned = _pipeline(table, result.ontology)
    assert tuned.evaluate(gt, images=images).cgf1 == pytest.approx(result.overall["after"]["cgF1"], abs=1e-9)
    assert result.overall["after"]["cgF1"] >= result.overall["before"]["cgF1"]


def test_candidates_are_checked(tmp_path) -> None:
    assert parse_candidates("car=a car|automobile; dog=puppy") == {"car": ["a car", "automobile"], "dog": ["puppy"]}
    assert parse_candidates(["car=a car", "car=vehicle"]) == {"car": ["a car", "vehicle"]}
    assert parse_candidates({"car": "a car|auto"}) == {"car": ["a car", "auto"]}
    for bad in ("car", "=a car", "car=|"):
        with pytest.raises(ValueError, match="candidate"):
            parse_candidates(bad)
    assert caption_sets(["a", "b", "c"], ["b"])[0] == ("b",) and len(caption_sets(["a", "b", "c"], ["b"])) == 7
    assert parse_objective("cgf1").per_class is False
    table, gt = make_world(seed=3, n_images=4)
    images = _images(tmp_path / "images", 4)
    pipe = _pipeline(table)
    with pytest.raises(EvalInputError, match="unknown class"):
        pipe.tune(gt, images=images, candidates="truck=lorry")
    with pytest.raises(EvalInputError, match="candidate 'dog' for class 'car' is already a caption of class 'dog'"):
        pipe.tune(gt, images=images, candidates="car=dog")
    many = "|".join(f"car {k}" for k in range(MAX_CAPTIONS))
    with pytest.raises(EvalInputError, match="shortlist"):
        pipe.tune(gt, images=images, candidates=f"car={many}")
    same = pipe.tune(gt, images=images, candidates="car=Car|automobile")  # 'Car' is 'car' to the detector
    assert {tuple(r["captions"]) for r in same.caption_table["car"]} >= {("car",), ("automobile",)}
    assert all("Car" not in r["captions"] for r in same.caption_table["car"])
