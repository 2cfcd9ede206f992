"""AutomaticMaskGenerator behaviour: output records, output modes, supervision, post-processing, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision.ops import batched_nms

from grounded_sam.assets.samples import shapes_image
from segmenter import AutomaticMaskGenerator, ImagePredictor, build_sam
from segmenter.amg.utils import mask_to_rle, rle_to_mask
from segmenter.postprocess import remove_small_regions

FIELDS = {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}
# thresholds low enough that a random model keeps masks; box NMS off so that many survive
KEEP_ALL = dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_sam("sam2.1_hiera_tiny", device="cpu", image_size=256)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return shapes_image()


@pytest.fixture(scope="module")
def records(model, image) -> list[dict]:
    return AutomaticMaskGenerator(model, **KEEP_ALL).generate(image)


def _xywh_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]


def test_records_fields_and_types(records, image) -> None:
    h, w = image.shape[:2]
    assert len(records) > 10
    for r in records:
        assert set(r) == FIELDS
        seg = r["segmentation"]
        assert isinstance(seg, np.ndarray) and seg.dtype == bool and seg.shape == (h, w)
        assert isinstance(r["area"], int) and r["area"] == int(seg.sum()) > 0
        assert r["bbox"] == _xywh_of(seg) and all(isinstance(v, float) for v in r["bbox"])
        assert isinstance(r["predicted_iou"], float) and isinstance(r["stability_score"], float)
        assert 0.0 <= r["stability_score"] <= 1.0
        (pt,) = r["point_coords"]
        assert len(pt) == 2 and 0 <= pt[0] <= w and 0 <= pt[1] <= h
        assert r["crop_box"] == [0.0, 0.0, float(w), float(h)]
    # ordered by decreasing predicted IoU (the NMS order)
    ious = [r["predicted_iou"] for r in records]
    assert ious == sorted(ious, reverse=True)


def test_thresholds_filter(model, image, records) -> None:
    iou_t = float(np.median([r["predicted_iou"] for r in records]))
    stab_t = float(np.median([r["stability_score"] for r in records]))
    kept = AutomaticMaskGenerator(model, **{**KEEP_ALL, "pred_iou_thresh": iou_t, "stability_score_thresh": stab_t})
    out = kept.generate(image)
    expected = [r for r in records if r["predicted_iou"] > iou_t and r["stability_score"] >= stab_t]
    assert 0 < len(out) == len(expected)
    for a, b in zip(out, expected):
        assert a["point_coords"] == b["point_coords"] and np.array_equal(a["segmentation"], b["segmentation"])


def test_box_nms_removes_duplicates(model, image, records) -> None:
    out = AutomaticMaskGenerator(model, **{**KEEP_ALL, "box_nms_thresh": 0.7}).generate(image)
    assert 0 < len(out) < len(records)
    boxes = torch.tensor([r["bbox"] for r in out])
    xyxy = torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)
    # no two kept boxes overlap more than the threshold: NMS over them keeps them all
    assert len(batched_nms(xyxy, torch.arange(len(out), 0, -1).float(), torch.zeros(len(out)), 0.7)) == len(out)


def test_supervision_from_sam(records, image) -> None:
    det = sv.Detections.from_sam(records)
    assert len(det) == len(records)
    assert det.mask.shape == (len(records), *image.shape[:2])
    by_area = sorted(records, key=lambda r: r["area"], reverse=True)
    assert np.array_equal(det.mask, np.stack([r["segmentation"] for r in by_area]))
    assert np.array_equal(det.xyxy, sv.xywh_to_xyxy(np.array([r["bbox"] for r in by_area])))
    assert len(sv.Detections.from_sam([])) == 0


@pytest.mark.parametrize("mode", ["uncompressed_rle", "coco_rle"])
def test_rle_output_modes(model, image, records, mode) -> None:
    out = AutomaticMaskGenerator(model, output_mode=mode, **KEEP_ALL).generate(image)
    assert len(out) == len(records)
    h, w = image.shape[:2]
    for r, b in zip(out, records):
        seg = r["segmentation"]
        assert seg["size"] == [h, w]
        if mode == "coco_rle":
            assert isinstance(seg["counts"], str)
            decoded = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
            assert int(mask_utils.area(seg)) == r["area"]
        else:
            assert all(isinstance(c, int) for c in seg["counts"])
            decoded = rle_to_mask(seg)
        assert np.array_equal(decoded, b["segmentation"])
        others = lambda rec: {k: v for k, v in rec.items() if k != "segmentation"}  # noqa: E731
        assert others(r) == others(b)
    det = sv.Detections.from_sam(out)
    assert np.array_equal(det.mask, sv.Detections.from_sam(records).mask)


def test_rle_round_trip_edge_cases() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((5, 7, 9)) > 0.5
    masks[0] = False
    masks[1] = True
    masks[2, 0, 0], masks[3, -1, -1] = True, True
    for m, rle in zip(masks, mask_to_rle(torch.from_numpy(masks))):
        assert np.array_equal(rle_to_mask(rle), m)
        coco = mask_utils.frPyObjects(rle, *rle["size"])
        assert np.array_equal(mask_utils.decode(coco).astype(bool), m)
    with pytest.raises(ValueError, match="sum"):
        rle_to_mask({"size": [2, 2], "counts": [1, 1]})


def test_min_mask_region_area(model, image, records) -> None:
    area = 40
    out = AutomaticMaskGenerator(model, min_mask_region_area=area, **KEEP_ALL).generate(image)
    assert 0 < len(out) <= len(records)
    originals = {(tuple(r["point_coords"][0]), r["predicted_iou"]): r for r in records}
    changed = 0
    for r in out:
        seg = r["segmentation"]
        orig = originals[(tuple(r["point_coords"][0]), r["predicted_iou"])]["segmentation"]
        expected, _ = remove_small_regions(orig, area, "holes")
        expected, _ = remove_small_regions(expected, area, "islands")
        assert np.array_equal(seg, expected)
        changed += not np.array_equal(seg, orig)
        assert r["area"] == int(seg.sum()) and r["bbox"] == _xywh_of(seg)
        # no foreground island below the area is left, unless it is the mask's largest
        _, _, stats, _ = cv2.connectedComponentsWithStats(seg.astype(np.uint8), connectivity=8)
        islands = stats[1:, cv2.CC_STAT_AREA]
        assert (islands >= area).all() or len(islands) == 1
    assert changed > 0  # the random model's masks are speckled: post-processing did something


def test_min_mask_region_area_rle(model, image) -> None:
    kw = dict(KEEP_ALL, min_mask_region_area=40)
    binary = AutomaticMaskGenerator(model, **kw).generate(image)
    rle = AutomaticMaskGenerator(model, output_mode="uncompressed_rle", **kw).generate(image)
    assert len(binary) == len(rle) > 0
    for a, b in zip(binary, rle):
        assert np.array_equal(rle_to_mask(b["segmentation"]), a["segmentation"]) and a["area"] == b["area"]


def test_crop_layers_and_point_grids(model, image) -> None:
    grids = [np.array([[0.25, 0.25], [0.75, 0.75]]), np.array([[0.5, 0.5]])]
    amg = AutomaticMaskGenerator(
        model, points_per_side=None, point_grids=grids, crop_n_layers=1, pred_iou_thresh=0.0,
        stability_score_thresh=0.0, box_nms_thresh=1.0, crop_nms_thresh=1.0,
    )
    out = amg.generate(image)
    h, w = image.shape[:2]
    crops = {tuple(r["crop_box"]) for r in out}
    assert (0.0, 0.0, float(w), float(h)) in crops
    for r in out:
        x, y, cw, ch = r["crop_box"]
        px, py = r["point_coords"][0]
        assert x <= px <= x + cw and y <= py <= y + ch
        assert r["bbox"] == _xywh_of(r["segmentation"])


def test_inputs_accepted(model, image, records) -> None:
    amg = AutomaticMaskGenerator(ImagePredictor(model), **KEEP_ALL)  # a predictor works as well
    out = amg.generate(Image.fromarray(image))
    assert len(out) == len(records)
    assert all(np.array_equal(a["segmentation"], b["segmentation"]) for a, b in zip(out, records))
    assert AutomaticMaskGenerator(model, pred_iou_thresh=1.0, points_per_side=2).generate(image) == []


def test_m2m_and_single_mask(model, image) -> None:
    for kw in (dict(use_m2m=True), dict(multimask_output=False)):
        out = AutomaticMaskGenerator(model, **KEEP_ALL, **kw).generate(image)
        assert 0 < len(out) <= KEEP_ALL["points_per_side"] ** 2 * (3 if "use_m2m" in kw else 1)
        assert all(set(r) == FIELDS for r in out)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(points_per_side=None), "exactly one"),
        (dict(point_grids=[np.zeros((4, 2))]), "exactly one"),
        (dict(points_per_side=0), "points_per_side"),
        (dict(points_per_batch=0), "points_per_batch"),
        (dict(output_mode="polygon"), "output_mode"),
        (dict(crop_n_layers=-1), "crop_n_layers"),
        (dict(crop_overlap_ratio=1.0), "crop_overlap_ratio"),
        (dict(box_nms_thresh=1.5), "box_nms_thresh"),
        (dict(pred_iou_thresh=float("nan")), "pred_iou_thresh"),
        (dict(min_mask_region_area=-1), "min_mask_region_area"),
        (dict(points_per_side=None, point_grids=[np.zeros((4, 3))]), r"point_grids\[0\]"),
        (dict(points_per_side=None, point_grids=[np.full((4, 2), 2.0)]), r"\[0, 1\]"),
        (dict(points_per_side=None, point_grids=[np.zeros((4, 2))], crop_n_layers=1), "needs 2"),
        (dict(points_per_side=2, crop_n_layers=1, crop_n_points_downscale_factor=4), "no points"),
    ],
)
def test_bad_arguments(model, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        AutomaticMaskGenerator(model, **kwargs)


def test_bad_images(model) -> None:
    amg = AutomaticMaskGenerator(model, points_per_side=2)
    with pytest.raises(ValueError, match="uint8"):
        amg.generate(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        amg.generate(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="torch.Tensor"):
        amg.generate(torch.zeros(32, 32, 3, dtype=torch.uint8))


def test_filtered_masks_upscale_as_the_reference_groups_them(model, image):
    """The reference upscales each point's 3 masks in one (P, 3, h, w) call; the bilinear kernel
    rounds differently with another channel count, so survivors of the IoU filter are upscaled in
    groups of 3 too (padding the last group): bit-identical to upscaling whole points."""
    gen = AutomaticMaskGenerator(model, **KEEP_ALL)
    gen.predictor.set_image(image)
    low = 8 * torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # 4 points x 3 masks
    whole = gen.predictor.upscale_logits(low).flatten(0, 1)  # as the reference: (4, 3, H, W)
    survivors = torch.tensor([0, 2, 3, 7, 11])
    grouped = gen._upscale(low.flatten(0, 1)[survivors], group=3)
    assert grouped.shape == (5, *image.shape[:2])
    assert torch.equal(grouped, whole[survivors])
    one_by_one = gen._upscale(low.flatten(0, 1)[survivors], group=1)  # what a (n, 1, h, w) call gives
    assert torch.allclose(one_by_one, whole[survivors], atol=1e-4)
