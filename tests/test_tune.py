"""Threshold tuning: with a stub detector whose scores are known, the tuned per-class thresholds
reach the F1 optimum a brute-force search finds, labeling held-out images with them improves F1,
and the objectives with a constraint keep it."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv
from PIL import Image
from pycocotools import mask as mask_utils

from grounded_sam import GroundedSAM
from grounded_sam.evaluation import evaluate
from grounded_sam.evaluation.data import EvalImage, EvalInstance, EvalSet
from grounded_sam.evaluation.operating import per_class_counts
from grounded_sam.evaluation.run import predict_ground_truth
from grounded_sam.evaluation.objectives import parse_objective
from ontologies import CaptionOntology

CLASSES = ["cat", "dog"]
SIZE = 64  # images are SIZE x SIZE; objects sit in a 4 x 4 grid of 16 px cells
TRUE_SCORES = {"cat": (0.30, 0.95), "dog": (0.45, 0.99)}  # uniform ranges of the stub's scores
FALSE_SCORES = {"cat": (0.05, 0.70), "dog": (0.05, 0.50)}


def _cell_box(cell: int) -> list[float]:
    y, x = divmod(cell, 4)
    return [x * 16 + 2.0, y * 16 + 2.0, x * 16 + 14.0, y * 16 + 14.0]


def _mask(box: list[float]) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), bool)
    x1, y1, x2, y2 = (int(v) for v in box)
    m[y1:y2, x1:x2] = True
    return m


def make_world(seed: int, n_images: int) -> tuple[dict[int, list[tuple[str, list[float], float]]], EvalSet]:
    """Per image: the stub's candidates (class, box, score) and the ground truth."""
    rng = np.random.default_rng(seed)
    table, gt = {}, EvalSet(classes=list(CLASSES), source="stub ground truth")
    for i in range(n_images):
        key = f"img{i:03d}.png"
        gt.images[key] = EvalImage(key, SIZE, SIZE)
        cells = list(rng.permutation(16))
        rows = []
        for name in CLASSES:
            for _ in range(int(rng.integers(0, 3))):  # objects
                box = _cell_box(int(cells.pop()))
                m = mask_utils.encode(np.asfortranarray(_mask(box).astype(np.uint8)))
                gt.instances.append(EvalInstance(key, name, (box[0], box[1], box[2] - box[0], box[3] - box[1]),
                                                 {"size": m["size"], "counts": m["counts"].decode()}))
                if rng.random() < 0.9:  # found (10 % are missed whatever the threshold)
                    rows.append((name, box, float(np.float32(rng.uniform(*TRUE_SCORES[name])))))  # as detectors report
            for _ in range(int(rng.integers(0, 4))):  # false candidates in empty cells
                rows.append((name, _cell_box(int(cells.pop())), float(np.float32(rng.uniform(*FALSE_SCORES[name])))))
        table[i] = rows
    return table, gt


class StubDetector:
    """Finds what its table says for an image (the image's pixel value is its index), masks
    included; keeps candidates scoring at least the class's threshold, else ``box_threshold``."""

    returns_masks = True

    def __init__(self, table: dict[int, list[tuple[str, list[float], float]]], box_threshold: float) -> None:
        self.table, self.box_threshold = table, box_threshold

    def detect(self, images, ontology) -> list[sv.Detections]:
        out = []
        for image in images:
            rows = self.table[int(np.asarray(image)[0, 0, 0])]
            keep = [(c, b, s) for c, b, s in rows
                    if s >= (ontology.threshold(c) if ontology.threshold(c) is not None else self.box_threshold)]
            names = ontology.classes()
            out.append(sv.Detections(
                xyxy=np.array([b for _, b, _ in keep], np.float32).reshape(-1, 4),
                mask=np.array([_mask(b) for _, b, _ in keep], bool).reshape(-1, SIZE, SIZE),
                confidence=np.array([s for _, _, s in keep], np.float32),
                class_id=np.array([names.index(c) for c, _, _ in keep], int),
                data={"class_name": np.array([c for c, _, _ in keep], dtype=str),
                      "caption": np.array([c for c, _, _ in keep], dtype=str),
                      "has_score": np.ones(len(keep), bool)}))
        return out


def _write_images(folder, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((SIZE, SIZE, 3), i, np.uint8)).save(folder / f"img{i:03d}.png")


def _pipeline(table, box_threshold: float = 0.1, ontology=None) -> GroundedSAM:
    return GroundedSAM(ontology or {c: c for c in CLASSES}, detector=StubDetector(table, box_threshold), device="cpu")


def _brute_force_best_f1(table, gt: EvalSet, name: str) -> float:
    """Every candidate score as the class's threshold, the predictions filtered and matched anew."""
    scores = sorted({s for rows in table.values() for c, _, s in rows if c == name})
    best = 0.0
    for t in [*scores, 1.0]:
        onto = CaptionOntology.from_dict({"classes": {c: {"captions": [c], **({"threshold": t} if c == name else {})}
                                                      for c in CLASSES}})
        detector = StubDetector(table, 0.0)
        found = EvalSet(dict(gt.images), [], list(CLASSES), "brute force")
        for i, key in enumerate(sorted(gt.images)):
            (dets,) = detector.detect([np.full((SIZE, SIZE, 3), i, np.uint8)], onto)
            for box, cid, s in zip(dets.xyxy, dets.class_id, dets.confidence):
                m = mask_utils.encode(np.asfortranarray(_mask(list(box)).astype(np.uint8)))
                found.instances.append(EvalInstance(key, CLASSES[cid], (box[0], box[1], box[2] - box[0], box[3] - box[1]),
                                                    {"size": m["size"], "counts": m["counts"].decode()}, False, float(s)))
        f1 = per_class_counts(gt, found)[0][name]["F1"] or 0.0
        best = max(best, f1)
    return best


def test_tuned_thresholds_reach_the_brute_force_optimum(tmp_path) -> None:
    table, gt = make_world(seed=0, n_images=30)
    _write_images(tmp_path / "train", 30)
    pipe = _pipeline(table, box_threshold=0.1)
    result = pipe.tune(gt, images=tmp_path / "train", floor=0.0)
    assert set(result.thresholds) == set(CLASSES)
    for name in CLASSES:
        assert result.after[name]["F1"] == pytest.approx(_brute_force_best_f1(table, gt, name), abs=1e-12), name
        assert result.after[name]["F1"] > result.before[name]["F1"]  # the default 0.1 keeps too much
        assert FALSE_SCORES[name][0] < result.thresholds[name] <= TRUE_SCORES[name][1]
    assert pipe.detector.box_threshold == 0.1 and pipe.ontology.threshold("cat") is None  # restored
    # the tuned ontology, reloaded, labels the same images to the F1 the tuning promised
    path = result.save(tmp_path / "tuned.yaml")
    tuned = _pipeline(table, 0.1, CaptionOntology.from_yaml(path))
    report = tuned.evaluate(gt, images=tmp_path / "train")
    for name in CLASSES:
        assert report.per_class[name]["F1"] == pytest.approx(result.after[name]["F1"], abs=1e-12)
    assert "threshold" in result.summary()


def test_tuned_thresholds_improve_held_out_images(tmp_path) -> None:
    table, gt = make_world(seed=1, n_images=60)
    train_keys = sorted(gt.images)[:30]
    _write_images(tmp_path / "images", 60)
    train = EvalSet({k: gt.images[k] for k in train_keys}, [i for i in gt.instances if i.image in train_keys],
                    list(CLASSES), "train")
    held = EvalSet({k: v for k, v in gt.images.items() if k not in train_keys},
                   [i for i in gt.instances if i.image not in train_keys], list(CLASSES), "held out")
    pipe = _pipeline(table, box_threshold=0.1)
    result = pipe.tune(train, images=tmp_path / "images")
    before = pipe.evaluate(held, images=tmp_path / "images")
    after = _pipeline(table, 0.1, result.ontology).evaluate(held, images=tmp_path / "images")
    for name in CLASSES:
        assert after.per_class[name]["F1"] > before.per_class[name]["F1"] + 0.05, name


def test_constrained_objectives(tmp_path) -> None:
    table, gt = make_world(seed=2, n_images=40)
    _write_images(tmp_path / "images", 40)
    pipe = _pipeline(table)
    precise = pipe.tune(gt, images=tmp_path / "images", objective="precision>=0.95")
    recall = pipe.tune(gt, images=tmp_path / "images", objective="recall>=0.8")
    f1 = pipe.tune(gt, images=tmp_path / "images")
    for name in CLASSES:
        assert precise.after[name]["precision"] >= 0.95
        assert recall.after[name]["recall"] >= 0.8
        assert precise.thresholds[name] >= f1.thresholds[name] >= recall.thresholds[name] or \
            f1.after[name]["F1"] >= max(precise.after[name]["F1"], recall.after[name]["F1"])
    unreachable = pipe.tune(gt, images=tmp_path / "images", objective="recall>=1.0")  # 10 % are never found
    assert all(v["TP"] == 0 and v["FP"] == 0 for v in unreachable.after.values())
    for bad in ("f2", "precision>0.9", "precision>=1.5", "recall"):
        with pytest.raises(ValueError, match="objective must be"):
            parse_objective(bad)
    with pytest.raises(ValueError, match="no class 'bird'"):
        GroundedSAM({"cat": "cat", "bird": "bird"}, detector=StubDetector(table, 0.1), device="cpu").tune(
            gt, images=tmp_path / "images")


def test_evaluation_agrees_with_the_sweep_counts(tmp_path) -> None:
    """The counts a threshold gives in the sweep are those of evaluating at that threshold."""
    table, gt = make_world(seed=3, n_images=20)
    _write_images(tmp_path / "images", 20)
    result = _pipeline(table).tune(gt, images=tmp_path / "images")
    direct = evaluate(gt, predict_ground_truth(_pipeline(table, 0.1, result.ontology), gt, gt, tmp_path / "images", 4)[0])
    for name in CLASSES:
        assert {k: direct.per_class[name][k] for k in ("TP", "FP", "FN")} == \
            {k: result.after[name][k] for k in ("TP", "FP", "FN")}
