"""Compact masks (``sv.CompactMask``): equal to the dense masks pixel for pixel, in the pipeline's
results, their RLE / areas / polygons, the labeled files, evaluation inputs and drawings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from grounded_sam import GroundedSAM
from grounded_sam.evaluation.data import from_detections
from grounded_sam.export.annotate import annotate_image
from grounded_sam.export.records import detections_to_instances
from grounded_sam.labeling import label_folder
from grounded_sam.pipeline.masks import CompactMaskBuilder, use_compact
from gsam_runtime.rle import encode_crop, encode_masks
from tiny import SAM_IMAGE_SIZE

ONTOLOGY = {"a cat": "cat", "a dog": "dog"}


def _random_masks(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    masks = np.zeros((n, h, w), dtype=bool)
    for k in range(n):
        if k % 4 == 3:
            continue  # an empty mask
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0, h) + 1, rng.integers(x0, w) + 1
        masks[k, y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < (0.2, 0.6, 0.97)[k % 3]
    return masks


def test_builder_and_rle_equal_dense() -> None:
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (7, 13), (40, 31)]:
        dense = _random_masks(rng, 9, h, w)
        cm = CompactMaskBuilder.from_dense(dense)
        assert isinstance(cm, sv.CompactMask) and cm.shape == dense.shape
        assert np.array_equal(cm.to_dense(), dense)
        assert cm.area.tolist() == dense.reshape(9, -1).sum(1).tolist()
        assert encode_masks(cm) == encode_masks(dense)
    padded = np.pad(np.ones((1, 2, 3), bool), ((0, 0), (2, 1), (1, 0)))  # (1, 5, 4)
    assert [encode_crop(np.ones((2, 3), bool), 1, 2, (5, 4))] == encode_masks(padded)
    with pytest.raises(ValueError, match="does not fit"):
        encode_crop(np.ones((2, 3), bool), 2, 0, (5, 4))
    empty = CompactMaskBuilder((5, 6)).build()
    assert empty.shape == (0, 5, 6) and encode_masks(empty) == []


def test_builder_from_crops_at_offsets_equals_dense() -> None:
    rng = np.random.default_rng(1)
    h, w = 50, 70
    builder, dense = CompactMaskBuilder((h, w)), np.zeros((6, h, w), bool)
    for k in range(6):
        ch, cw = int(rng.integers(1, 30)), int(rng.integers(1, 40))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = rng.random((ch, cw)) < (0.0 if k == 2 else 0.5)  # one empty crop
        builder.add_crop(crop, x0, y0)
        dense[k, y0 : y0 + ch, x0 : x0 + cw] = crop
    cm = builder.build()
    assert np.array_equal(cm.to_dense(), dense) and encode_masks(cm) == encode_masks(dense)
    assert cm.offsets[2].tolist() == [0, 0]  # an empty mask sits at the origin, as from a full frame
    with pytest.raises(ValueError, match="does not fit"):
        builder.add_crop(np.ones((3, 3), bool), w - 2, 0)


def test_auto_threshold() -> None:
    assert not use_compact("auto", (4000, 4000)) and use_compact("auto", (4096, 4096))
    assert use_compact(True, (2, 2)) and not use_compact(False, (5000, 5000))
    with pytest.raises(ValueError, match="compact must be"):
        use_compact("yes", (2, 2))


@pytest.fixture(scope="module")
def pipelines(tiny_models):
    owl, sam = tiny_models
    common = dict(detector=str(owl), segmenter="sam2.1_hiera_tiny", checkpoint=sam, image_size=SAM_IMAGE_SIZE,
                  device="cpu", box_threshold=0.0, nms_iou=0.3)
    plain = GroundedSAM(ONTOLOGY, **common)
    post = GroundedSAM(ONTOLOGY, **common, min_hole_area=20, min_island_area=20, smooth_kernel=3, compact=True)
    return plain, post


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _assert_same(compact: sv.Detections, dense: sv.Detections) -> None:
    assert isinstance(compact.mask, sv.CompactMask) and isinstance(dense.mask, np.ndarray)
    assert len(compact) == len(dense) > 0
    assert np.array_equal(compact.mask.to_dense(), dense.mask)
    assert compact.mask.area.tolist() == dense.mask.reshape(len(dense), -1).sum(1).tolist()
    np.testing.assert_array_equal(compact.xyxy, dense.xyxy)
    np.testing.assert_array_equal(compact.data["mask_score"], dense.data["mask_score"])
    np.testing.assert_array_equal(compact.class_id, dense.class_id)


def test_predict_compact_equals_dense(pipelines) -> None:
    plain, post = pipelines
    images = [_image(90, 120, 0), _image(64, 48, 1)]
    for pipe in (plain, post):
        dense = pipe.predict_batch(images, compact=False)
        compact = pipe.predict_batch(images, compact=True)
        for c, d in zip(compact, dense):
            _assert_same(c, d)
    _assert_same(post.predict(images[0]), post.predict(images[0], compact=False))  # the constructor's default
    assert isinstance(plain.predict(images[0], compact="auto").mask, np.ndarray)  # small: dense
    assert plain.spec()["compact"] is False and post.spec()["compact"] is True


def test_records_evaluation_and_drawings_equal_dense(pipelines) -> None:
    plain, _ = pipelines
    img = _image(90, 120, 2)
    dense, compact = plain.predict(img), plain.predict(img, compact=True)
    _assert_same(compact, dense)
    assert detections_to_instances(compact, plain.classes, (90, 120)) == detections_to_instances(
        dense, plain.classes, (90, 120))
    a, b = from_detections({"x": compact}, plain.classes), from_detections({"x": dense}, plain.classes)
    assert a.images == b.images and len(a.instances) == len(dense)
    assert [dataclasses.asdict(i) for i in a.instances] == [dataclasses.asdict(i) for i in b.instances]
    assert np.array_equal(annotate_image(img, compact, plain.classes), annotate_image(img, dense, plain.classes))


@pytest.mark.parametrize("fmt", ["coco", "coco-polygons", "yolo", "jsonl"])
def test_label_files_equal_dense(pipelines, tmp_path, fmt) -> None:
    fmt, _, polygons = fmt.partition("-")
    extra = {"polygons": True} if polygons else {}
    plain, _ = pipelines
    folder = tmp_path / "images"
    folder.mkdir()
    for i, (h, w) in enumerate([(48, 64), (40, 40), (64, 52)]):
        Image.fromarray(_image(h, w, 10 + i)).save(folder / f"img{i}.png")
    fingerprint = plain.fingerprint()
    report = plain.label(folder, extension=".png", output_folder=tmp_path / "compact", format=fmt, progress=False,
                        **extra)
    assert report.ok and report.labeled == 3
    dense = label_folder(plain.predict, folder, tmp_path / "dense", plain.classes, extension=".png", format=fmt,
                         progress=False, **extra, predict_batch_fn=plain.predict_batch, fingerprint=fingerprint)
    assert dense.ok
    files = {p.relative_to(tmp_path / "dense") for p in (tmp_path / "dense").rglob("*") if p.is_file()}
    assert files and files == {p.relative_to(tmp_path / "compact")
                               for p in (tmp_path / "compact").rglob("*") if p.is_file()}
    checked = []
    for rel in files:
        if rel.suffix in (".json", ".jsonl", ".txt", ".yaml") and "state" not in str(rel) and "report" not in str(rel):
            a, b = ((tmp_path / d / rel).read_bytes().replace(str(tmp_path / d).encode(), b"OUT")
                    for d in ("compact", "dense"))  # data.yaml names its own folder
            assert a == b, rel
            checked.append(rel.as_posix())
    main = {"coco": "annotations.json", "yolo": "labels/img0.txt", "jsonl": ".jsonl"}[fmt]
    assert any(c.endswith(main) for c in checked), checked



def test_polygons_from_crop_equal_full_frame() -> None:
    from grounded_sam.export.polygons import (
        mask_to_polygons, mask_to_single_polygon, rle_to_polygons, rle_to_single_polygon,
    )

    rng = np.random.default_rng(3)
    masks = np.concatenate([_random_masks(rng, 24, 37, 29), np.ones((1, 37, 29), bool)])
    masks[0] = False
    masks[0, 0, 5], masks[0, 10:12, 20:29] = True, True  # a pixel on the top edge, a bar on the right edge
    for mask, rle in zip(masks, encode_masks(masks)):
        for min_area in (0.0, 4.0):
            want, got = mask_to_polygons(mask, min_area), rle_to_polygons(rle, min_area)
            assert len(want) == len(got) and all(np.array_equal(a, b) for a, b in zip(want, got))
            for multipart in ("merge", "largest"):
                a = mask_to_single_polygon(mask, multipart, min_area)
                b = rle_to_single_polygon(rle, multipart, min_area)
                assert (a is None and b is None) or np.array_equal(a, b)
