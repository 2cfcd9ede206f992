"""Ontology semantics of the detectors, on synthetic raw detections (no model involved)."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from detectors.ontology_ops import (
    DATA_KEYS,
    PromptTable,
    RawDetections,
    box_iou,
    classwise_nms,
    empty_detections,
    finalize_detections,
    negative_suppression,
    nms,
    normalize_caption,
    split_passes,
)
from ontologies import CaptionOntology

W, H = 200, 100


def _raw(rows: list[tuple[list[float], float, int]]) -> RawDetections:
    return RawDetections(
        np.array([r[0] for r in rows], dtype=np.float32).reshape(-1, 4),
        np.array([r[1] for r in rows], dtype=np.float32),
        np.array([r[2] for r in rows], dtype=np.int64),
    )


def _finalize(raw, table, **kw):
    kw.setdefault("box_threshold", 0.3)
    return finalize_detections(raw, table, (W, H), **kw)


# ----------------------------------------------------------------------------- captions
def test_normalize_caption() -> None:
    assert normalize_caption("  A  Red\tCar ") == "a red car"
    assert normalize_caption("st. bernard?") == "st. bernard?"
    assert normalize_caption("st. bernard?", strip_separators=True) == "st bernard"
    with pytest.raises(ValueError, match=r"'\.\.\.'"):
        normalize_caption("...", strip_separators=True)


def test_prompt_table_many_to_one_negatives_thresholds() -> None:
    onto = CaptionOntology(
        {"a dog": "dog", "Puppy": "dog", "person": "person"},
        thresholds={"dog": 0.6},
        negatives={"dog": ["toy dog"]},
    )
    t = PromptTable.from_ontology(onto)
    assert t.texts == ("a dog", "puppy", "toy dog", "person")  # a class's negatives follow it
    assert t.captions == ("a dog", "Puppy", "toy dog", "person")  # the ontology's spelling
    assert t.class_ids.tolist() == [0, 0, 0, 1]
    assert t.class_names == ("dog", "dog", "dog", "person")
    assert t.negative.tolist() == [False, False, True, False]
    np.testing.assert_allclose(t.thresholds(0.25), [0.6, 0.6, 0.6, 0.25])
    assert t.groups() == [0, 0, 0, 1]


def test_prompt_table_merges_captions_equal_after_normalisation() -> None:
    onto = CaptionOntology({"st. bernard": "dog", "st bernard": "dog", "cat": "cat"})
    t = PromptTable.from_ontology(onto, lambda c: normalize_caption(c, strip_separators=True))
    assert t.texts == ("st bernard", "cat")
    assert t.captions == ("st. bernard", "cat")
    # without stripping the two captions stay distinct prompts
    assert len(PromptTable.from_ontology(onto)) == 3


def test_prompt_table_conflict_names_both_captions() -> None:
    onto = CaptionOntology({"st. bernard": "dog", "st bernard": "saint"})
    with pytest.raises(ValueError, match=r"'st\. bernard'.*'st bernard'"):
        PromptTable.from_ontology(onto, lambda c: normalize_caption(c, strip_separators=True))


# ----------------------------------------------------------------------------- passes
def _flatten(passes: list[list[int]]) -> list[int]:
    return [i for p in passes for i in p]


def test_split_passes_fits_in_one() -> None:
    assert split_passes([3, 4, 5], limit=20, fixed_cost=2) == [[0, 1, 2]]
    assert split_passes([3, 4, 5]) == [[0, 1, 2]]
    assert split_passes([]) == []


def test_split_passes_respects_limit_and_order() -> None:
    costs = [5, 5, 5, 5, 5, 5, 5]
    passes = split_passes(costs, limit=17, fixed_cost=2)  # 15 tokens -> 3 captions a pass
    assert passes == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(sum(costs[i] for i in p) + 2 <= 17 for p in passes)


def test_split_passes_keeps_groups_together_when_they_fit() -> None:
    costs = [4, 4, 4, 4, 4]
    groups = [0, 1, 1, 2, 2]
    passes = split_passes(costs, limit=10, groups=groups)  # 10 tokens -> 2 captions a pass
    # greedy without groups would give [[0,1],[2,3],[4]], splitting groups 1 and 2
    assert passes == [[0], [1, 2], [3, 4]]


def test_split_passes_splits_a_group_too_large_for_one_pass() -> None:
    costs = [3, 3, 3, 3, 3]
    passes = split_passes(costs, limit=7, groups=[0, 0, 0, 0, 1])
    assert _flatten(passes) == [0, 1, 2, 3, 4]
    assert all(sum(costs[i] for i in p) <= 7 for p in passes)
    assert len(passes) == 3


def test_split_passes_max_items_and_errors() -> None:
    assert split_passes([1] * 5, max_items=2) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match="'a very long caption'.*12 tokens"):
        split_passes([3, 12], limit=10, names=["ok", "a very long caption"])
    with pytest.raises(ValueError, match="max_items"):
        split_passes([1], max_items=0)


# ----------------------------------------------------------------------------- geometry
def test_box_iou_and_nms() -> None:
    a = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=np.float32)
    iou = box_iou(a, a)
    assert iou[0, 1] == pytest.approx(50 / 150)
    assert iou[0, 2] == 0 and iou[2, 2] == pytest.approx(1.0)
    assert box_iou(a, np.zeros((0, 4))).shape == (3, 0)
    scores = np.array([0.5, 0.9, 0.7])
    assert nms(a, scores, 0.3).tolist() == [1, 2]  # 0 overlaps 1 at 0.33 > 0.3
    assert nms(a, scores, 0.4).tolist() == [1, 2, 0]


def test_classwise_nms_never_crosses_classes() -> None:
    boxes = np.array([[0, 0, 10, 10]] * 3, dtype=np.float32)
    scores = np.array([0.4, 0.9, 0.6])
    assert classwise_nms(boxes, scores, np.array([0, 0, 1]), 0.5).tolist() == [1, 2]
    assert classwise_nms(boxes, scores, np.array([0, 0, 1]), None).tolist() == [1, 2, 0]


def test_negative_suppression_same_class_only() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [1, 1, 10, 10]], np.float32)
    cls = np.array([0, 1, 0, 0])
    neg = np.array([False, False, False, True])
    keep = negative_suppression(boxes, cls, neg, 0.5)
    assert keep.tolist() == [False, True, True, False]
    assert negative_suppression(boxes, cls, neg, None).tolist() == [True, True, True, False]


# ----------------------------------------------------------------------------- finalize
@pytest.fixture
def table() -> PromptTable:
    onto = CaptionOntology(
        {"a dog": "dog", "puppy": "dog", "a cat": "cat", "person": "person"},
        thresholds={"person": 0.6},
        negatives={"dog": ["toy dog"]},
    )
    return PromptTable.from_ontology(onto)  # texts: a dog, puppy, toy dog, a cat, person


def test_finalize_many_to_one_merge(table: PromptTable) -> None:
    box = [10, 10, 50, 50]
    raw = _raw([(box, 0.5, 0), ([11, 10, 50, 51], 0.8, 1), ([12, 12, 50, 50], 0.7, 3)])
    det = _finalize(raw, table)
    # the two dog captions merge into one detection, the best caption wins; cat stays
    assert det.class_id.tolist() == [0, 1]
    assert det.data["caption"].tolist() == ["puppy", "a cat"]
    assert det.data["class_name"].tolist() == ["dog", "cat"]
    np.testing.assert_allclose(det.confidence, [0.8, 0.7])
    # no NMS: all three survive; a strict IoU keeps the dog duplicates apart too
    assert len(_finalize(raw, table, nms_iou=None)) == 3
    assert len(_finalize(raw, table, nms_iou=0.99)) == 3


def test_finalize_per_class_thresholds(table: PromptTable) -> None:
    raw = _raw([([0, 0, 10, 10], 0.5, 4), ([20, 20, 40, 40], 0.5, 3), ([60, 0, 80, 10], 0.65, 4)])
    det = _finalize(raw, table)  # person needs 0.6, cat the default 0.3
    assert sorted(det.data["caption"].tolist()) == ["a cat", "person"]
    assert det.confidence.min() >= 0.5
    assert len(_finalize(raw, table, box_threshold=0.55)) == 1  # the cat now fails too
    assert len(_finalize(raw, table, box_threshold=0.0)) == 2  # person keeps its own 0.6


def test_finalize_negative_caption_suppresses_overlap(table: PromptTable) -> None:
    raw = _raw(
        [
            ([10, 10, 50, 50], 0.9, 0),  # dog, under the toy dog -> removed
            ([12, 10, 50, 50], 0.5, 2),  # toy dog (negative of dog)
            ([11, 11, 50, 50], 0.6, 3),  # cat on the same spot: other class, kept
            ([120, 10, 160, 50], 0.7, 1),  # dog elsewhere: kept
        ]
    )
    det = _finalize(raw, table)
    assert det.data["caption"].tolist() == ["puppy", "a cat"]
    assert "toy dog" not in det.data["caption"].tolist()
    # a negative below its class threshold does not suppress anything
    low = _raw([([10, 10, 50, 50], 0.9, 0), ([12, 10, 50, 50], 0.1, 2)])
    assert _finalize(low, table).data["caption"].tolist() == ["a dog"]
    # negative_iou=None: negatives are dropped but suppress nothing
    assert len(_finalize(raw, table, negative_iou=None)) == 3


def test_finalize_clips_and_drops_degenerate_boxes(table: PromptTable) -> None:
    raw = _raw(
        [
            ([-20, -5, 250, 120], 0.9, 3),  # clipped to the image
            ([210, 10, 260, 20], 0.9, 4),  # entirely right of the image -> empty after clipping
            ([5, 5, 5, 30], 0.9, 0),  # zero width
            ([np.nan, 0, 10, 10], 0.9, 1),
        ]
    )
    det = _finalize(raw, table)
    assert len(det) == 1
    np.testing.assert_array_equal(det.xyxy[0], [0, 0, W, H])
    assert det.xyxy.dtype == np.float32 and det.confidence.dtype == np.float32


def test_finalize_without_scores(table: PromptTable) -> None:
    raw = _raw([([0, 0, 10, 10], 0.0, 4), ([0, 0, 10, 10], 0.0, 0), ([1, 0, 10, 10], 0.0, 1)])
    det = _finalize(raw, table, has_scores=False, constant_confidence=1.0)
    # thresholds ignored (person's 0.6, the default 0.3); NMS still merges the dog captions
    assert det.data["caption"].tolist() == ["person", "a dog"]
    assert det.confidence.tolist() == [1.0, 1.0]
    assert det.data["has_score"].tolist() == [False, False]
    assert _finalize(raw, table).data["has_score"].size == 0  # with scores, all 0.0 < 0.3


def test_finalize_output_contract_and_empty(table: PromptTable) -> None:
    det = _finalize(_raw([([0, 0, 10, 10], 0.9, 3)]), table)
    assert isinstance(det, sv.Detections)
    assert det.class_id.dtype.kind == "i"
    assert set(DATA_KEYS) <= set(det.data)
    for key in DATA_KEYS:
        assert isinstance(det.data[key], np.ndarray) and len(det.data[key]) == len(det)
    assert det.data["has_score"].tolist() == [True]
    empty = _finalize(RawDetections.empty(), table)
    below = _finalize(_raw([([0, 0, 10, 10], 0.1, 3)]), table)
    for e in (empty, below, empty_detections()):
        assert e.is_empty() and set(e.data) == set(DATA_KEYS)
        assert all(len(v) == 0 for v in e.data.values())
    merged = sv.Detections.merge([empty, det, below])
    assert len(merged) == 1 and merged.data["caption"].tolist() == ["a cat"]
    with pytest.raises(ValueError, match="out of range"):
        _finalize(_raw([([0, 0, 10, 10], 0.9, 7)]), table)


def test_raw_detections_remap_and_concat() -> None:
    a = _raw([([0, 0, 1, 1], 0.5, 0), ([0, 0, 2, 2], 0.6, 1)]).remap([3, 5])
    b = _raw([([0, 0, 3, 3], 0.7, 0)]).remap([4])
    both = RawDetections.concat([a, b, RawDetections.empty()])
    assert both.prompt_ids.tolist() == [3, 5, 4]
    assert both.scores.tolist() == pytest.approx([0.5, 0.6, 0.7])
    assert len(RawDetections.concat([])) == 0
    with pytest.raises(ValueError, match="differ in length"):
        RawDetections(np.zeros((2, 4)), np.zeros(1), np.zeros(2))


def _greedy_nms(xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, thr: float) -> list[int]:
    """Textbook greedy NMS in float64 (the oracle): visit by score, ties in input order."""
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        a = xyxy[i]
        for j in kept:
            b = xyxy[j]
            w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
            if class_ids[i] == class_ids[j] and w * h / union > thr:
                break
        else:
            kept.append(int(i))
    return kept


@pytest.mark.parametrize("n", [40, pytest.param(1200, marks=pytest.mark.slow)])  # torchvision's batched_nms switches strategy above 1000 boxes
def test_nms_is_greedy_with_ties_in_input_order(n: int) -> None:
    rng = np.random.default_rng(n)
    xy = rng.integers(0, 60, (n, 2))
    boxes = np.concatenate([xy, xy + rng.integers(1, 15, (n, 2))], axis=1).astype(np.float32)
    scores = rng.integers(0, 6, n).astype(np.float32) / 5  # many tied scores
    classes = rng.integers(0, 4, n)
    for thr in (0.0, 0.3, 0.5, 1.0):
        assert classwise_nms(boxes, scores, classes, thr).tolist() == _greedy_nms(boxes, scores, classes, thr)
        assert nms(boxes, scores, thr).tolist() == _greedy_nms(boxes, scores, np.zeros(n), thr)
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    assert classwise_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int), 0.5).shape == (0,)
