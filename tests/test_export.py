"""grounded_sam.export (+ gsam_runtime.rle): COCO RLE + polygons, YOLO-seg, JSONL, safe writes."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import supervision as sv
import yaml
from pycocotools.coco import COCO

from grounded_sam.export import (
    CocoWriter,
    JsonlWriter,
    detections_to_instances,
    detections_to_record,
    iter_jsonl,
    record_to_detections,
    write_data_yaml,
    yolo_lines,
)
from grounded_sam.export.polygons import mask_to_polygons, merge_polygons
from grounded_sam.export.safe_io import UnsafePathError, atomic_open, safe_output_path
from gsam_runtime.rle import decode_rle, encode_masks, rle_area, rle_bbox

H, W = 48, 64
CLASSES = ["dog", "cat", "person"]


def _masks() -> np.ndarray:
    """Block (known extent), holed square, two-part mask: (3, H, W) bool."""
    m = np.zeros((3, H, W), dtype=bool)
    m[0, 10:30, 5:35] = True  # x 5..34, y 10..29 -> bbox [5, 10, 30, 20]
    m[1, 2:22, 40:60] = True
    m[1, 8:14, 46:54] = False  # a hole
    m[2, 32:44, 2:12] = True  # part one
    m[2, 35:40, 50:62] = True  # part two
    return m


def _detections(tracker: bool = False) -> sv.Detections:
    m = _masks()
    return sv.Detections(
        xyxy=np.array([[4.5, 9.5, 35.2, 30.1], [40, 2, 60, 22], [2, 32, 62, 44]], dtype=np.float32),
        mask=m,
        confidence=np.array([0.9, 0.75, 0.5], dtype=np.float32),
        class_id=np.array([0, 1, 2]),
        tracker_id=np.array([7, 8, 9]) if tracker else None,
        data={"mask_score": np.array([0.95, 0.8, 0.6], np.float32), "caption": np.array(["dog", "a cat", "human"])},
    )


def _tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def test_rle_round_trip_bbox_area():
    m = _masks()
    rles = encode_masks(m)
    assert all(isinstance(r["counts"], str) and r["size"] == [H, W] for r in rles)
    for r, mask in zip(rles, m):
        np.testing.assert_array_equal(decode_rle(r), mask)
        assert rle_area(r) == int(mask.sum())
        assert rle_bbox(r) == _tight_box(mask)
    assert rle_bbox(rles[0]) == [5.0, 10.0, 30.0, 20.0]  # not one pixel short
    assert encode_masks(np.zeros((0, H, W), bool)) == []
    with pytest.raises(ValueError, match="N, H, W"):
        encode_masks(m[0])


def test_coco_file_loads_and_matches_masks(tmp_path):
    path = tmp_path / "ann.json"
    d = _detections()
    with CocoWriter(path, CLASSES) as w:
        assert w.add_image("images/a.jpg", W, H, d) == 1
        assert w.add_image("images/sub/b.jpg", W, H, sv.Detections.empty()) == 2
    coco = COCO(str(path))
    assert [c["id"] for c in coco.dataset["categories"]] == [1, 2, 3]
    assert [c["name"] for c in coco.dataset["categories"]] == CLASSES
    assert [i["file_name"] for i in coco.dataset["images"]] == ["images/a.jpg", "images/sub/b.jpg"]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert len(anns) == 3  # one annotation per instance, holed and two-part included
    assert coco.getAnnIds(imgIds=[2]) == []
    for ann, mask, cid, conf in zip(anns, d.mask, d.class_id, d.confidence):
        assert ann["iscrowd"] == 0
        assert isinstance(ann["segmentation"]["counts"], str)
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)
        assert ann["bbox"] == _tight_box(mask)
        assert ann["area"] == int(mask.sum())
        assert ann["category_id"] == cid + 1
        assert ann["score"] == pytest.approx(float(conf), abs=1e-6)
    assert anns[0]["bbox"] == [5.0, 10.0, 30.0, 20.0]
    assert anns[1]["caption"] == "a cat" and anns[1]["mask_score"] == pytest.approx(0.8, abs=1e-6)
    assert len({a["id"] for a in coco.dataset["annotations"]}) == 3
    assert not [p for p in os.listdir(tmp_path) if p != "ann.json"]  # temp files cleaned up


def test_coco_polygons_mode(tmp_path):
    path = tmp_path / "poly.json"
    with CocoWriter(path, CLASSES, polygons=True) as w:
        w.add_image("a.jpg", W, H, _detections())
    coco = COCO(str(path))
    anns = coco.loadAnns(coco.getAnnIds())
    assert all(isinstance(a["segmentation"], list) and a["iscrowd"] == 0 for a in anns)
    assert len(anns[2]["segmentation"]) == 2  # two parts -> two polygons in ONE annotation
    m = _masks()
    solid = coco.annToMask(anns[0]).astype(bool)
    iou = (solid & m[0]).sum() / (solid | m[0]).sum()
    assert iou > 0.85
    assert anns[1]["area"] == int(m[1].sum())  # area stays the mask's pixel count


def test_coco_skips_empty_masks_and_validates(tmp_path):
    d = _detections()
    d.mask[1] = False
    with CocoWriter(tmp_path / "e.json", CLASSES) as w:
        w.add_image("a.jpg", W, H, d)
    assert w.skipped_empty == 1 and w.num_annotations == 2
    bad = _detections()
    bad.class_id = np.array([0, 1, 5])
    with pytest.raises(ValueError, match="class_id 5"):
        detections_to_instances(bad, CLASSES)
    with pytest.raises(ValueError, match="does not match"):
        detections_to_instances(_detections(), CLASSES, image_size=(H + 1, W))
    with pytest.raises(UnsafePathError):
        with CocoWriter(tmp_path / "x.json", CLASSES) as w:
            w.add_image("../escape.jpg", W, H, _detections())
    assert not (tmp_path / "x.json").exists()
    assert sorted(os.listdir(tmp_path)) == ["e.json"]


def test_video_coco_has_track_ids(tmp_path):
    path = tmp_path / "video.json"
    with CocoWriter(path, CLASSES) as w:
        vid = w.add_video("clip.mp4", W, H, fps=30)
        for t in range(3):
            w.add_image(f"clip/{t:06d}.jpg", W, H, _detections(tracker=True), video_id=vid, frame_index=t)
    coco = COCO(str(path))
    assert coco.dataset["videos"] == [{"id": 1, "name": "clip.mp4", "fps": 30, "width": W, "height": H}]
    assert [i["frame_index"] for i in coco.dataset["images"]] == [0, 1, 2]
    assert all(i["video_id"] == 1 for i in coco.dataset["images"])
    anns = coco.dataset["annotations"]
    assert len(anns) == 9
    assert [a["track_id"] for a in anns] == [7, 8, 9] * 3
    assert all(a["video_id"] == 1 for a in anns)
    with pytest.raises(ValueError, match="video_id"):
        with CocoWriter(tmp_path / "v2.json", CLASSES) as w:
            w.add_image("f.jpg", W, H, None, video_id=3)


def test_record_round_trip_and_jsonl(tmp_path):
    d = _detections(tracker=True)
    rec = detections_to_record(d, "a.jpg", W, H, CLASSES)
    assert json.loads(json.dumps(rec)) == rec
    back = record_to_detections(rec)
    np.testing.assert_array_equal(back.mask, d.mask)
    np.testing.assert_array_equal(back.class_id, d.class_id)
    np.testing.assert_array_equal(back.tracker_id, d.tracker_id)
    np.testing.assert_allclose(back.confidence, d.confidence, atol=1e-6)
    np.testing.assert_allclose(back.xyxy, d.xyxy, atol=1e-5)
    assert list(back.data["class_name"]) == CLASSES
    assert list(back.data["caption"]) == list(d.data["caption"])
    empty = record_to_detections(detections_to_record(sv.Detections.empty(), "b.jpg", W, H, CLASSES))
    assert len(empty) == 0 and empty.mask.shape == (0, H, W)
    with JsonlWriter(tmp_path / "r.jsonl") as jw:
        jw.add(rec)
        jw.add({"file_name": "b.jpg", "width": W, "height": H, "instances": []})
    back_recs = list(iter_jsonl(tmp_path / "r.jsonl"))
    assert back_recs[0] == rec and len(back_recs) == 2
    with pytest.raises(RuntimeError):
        with JsonlWriter(tmp_path / "never.jsonl") as jw:
            jw.add(rec)
            raise RuntimeError("boom")
    assert not (tmp_path / "never.jsonl").exists()


def test_box_only_detections():
    d = _detections()
    d.mask = None
    inst = detections_to_instances(d, CLASSES)
    assert "segmentation" not in inst[0]
    assert inst[0]["bbox"] == pytest.approx([4.5, 9.5, 30.7, 20.6], abs=1e-4)
    lines = yolo_lines(inst, W, H)
    assert len(lines) == 3 and all(len(line.split()) == 5 for line in lines)


def _raster(poly_xy_norm: np.ndarray) -> np.ndarray:
    pts = np.round(poly_xy_norm * [W, H]).astype(np.int32)
    out = np.zeros((H, W), np.uint8)
    cv2.fillPoly(out, [pts], 1)
    return out.astype(bool)


def test_yolo_one_line_per_instance():
    d = _detections()
    lines = yolo_lines(d, W, H)
    assert len(lines) == len(d) == 3
    for line, cid in zip(lines, d.class_id):
        parts = line.split()
        assert int(parts[0]) == cid
        xy = np.array(parts[1:], dtype=float)
        assert len(xy) % 2 == 0 and len(xy) >= 6
        assert xy.min() >= 0.0 and xy.max() <= 1.0
    # the two-part mask: ONE polygon covering both parts
    two = _raster(np.array(lines[2].split()[1:], float).reshape(-1, 2))
    m = _masks()[2]
    assert (two & m).sum() / m.sum() > 0.9
    gap = 50 - 11  # columns between the parts: the seam is one pixel wide across it
    assert (two & ~m).sum() <= 1.2 * gap
    # largest: only the bigger part survives
    big = yolo_lines(d, W, H, multipart="largest")[2]
    r = _raster(np.array(big.split()[1:], float).reshape(-1, 2))
    assert r[32:44, 2:12].mean() > 0.9 and not r[35:40, 52:60].any()
    d.mask[0] = False
    assert len(yolo_lines(d, W, H)) == 2  # an empty mask has no polygon


def test_merge_polygons_adds_only_seams():
    m = np.zeros((60, 80), bool)
    m[5:20, 5:25] = m[30:50, 40:70] = m[40:55, 5:15] = m[10:14, 50:60] = True
    parts = mask_to_polygons(m)
    assert len(parts) == 4
    merged = merge_polygons(parts)
    assert merged.shape[1] == 2
    out = np.zeros(m.shape, np.uint8)
    cv2.fillPoly(out, [np.round(merged).astype(np.int32)], 1)
    assert (out.astype(bool) & m).sum() == m.sum()
    assert (out.astype(bool) & ~m).sum() < 0.1 * m.sum()
    single_px = np.zeros((8, 8), bool)
    single_px[3, 4] = True
    (box,) = mask_to_polygons(single_px)  # degenerate contour -> the pixel's box
    assert box.tolist() == [[4, 3], [5, 3], [5, 4], [4, 4]]
    assert mask_to_polygons(np.zeros((8, 8), bool)) == []


def test_data_yaml(tmp_path):
    path = write_data_yaml(tmp_path / "data.yaml", CLASSES, tmp_path)
    data = yaml.safe_load(path.read_text())
    assert data["nc"] == 3 and data["names"] == {0: "dog", 1: "cat", 2: "person"}
    assert data["path"] == str(tmp_path.resolve()) and data["train"] == "images"


def test_safe_output_path(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    assert safe_output_path(root, "labels/a.txt") == root.resolve() / "labels" / "a.txt"
    for bad in ["../x.txt", "a/../../x.txt", "/etc/passwd", "..\\x.txt", "C:\\x.txt", "", "a\x00b"]:
        with pytest.raises(UnsafePathError):
            safe_output_path(root, bad)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="symlink"):
        safe_output_path(root, "link/a.txt")
    (root / "leaf.txt").symlink_to(outside / "target.txt")
    with pytest.raises(UnsafePathError):
        safe_output_path(root, "leaf.txt")


def test_atomic_open_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(p) as f:
            f.write("half")
            raise KeyboardInterrupt
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]
    with atomic_open(p) as f:
        f.write("new")
    assert p.read_text() == "new"


def test_ontology_classes_not_captions(tmp_path):
    from ontologies import CaptionOntology

    onto = CaptionOntology({"a dog": "dog", "a puppy": "dog", "a kitten": "cat", "a person": "person"})
    with CocoWriter(tmp_path / "o.json", onto) as w:
        w.add_image("a.jpg", W, H, _detections())
    cats = json.loads((tmp_path / "o.json").read_text())["categories"]
    assert [c["name"] for c in cats] == ["dog", "cat", "person"]
    assert [i["class_name"] for i in detections_to_instances(_detections(), onto)] == ["dog", "cat", "person"]
