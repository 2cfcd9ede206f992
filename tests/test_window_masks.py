"""Masks at native resolution (grounded_sam.pipeline.windows): each box is segmented in a window of the
original pixels, windows grouped and encoded once, large boxes in a downscaled fallback window, compact
equal to dense, the whole-image result when one window covers the image, the windows' geometric
guarantee, the fingerprint and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from grounded_sam import GroundedSAM
from grounded_sam.labeling import LabelingConfigError
from grounded_sam.pipeline.windows import WINDOW_MARGIN, fits, plan_windows, use_windows
from segmenter import ImagePredictor, build_sam
from segmenter.postprocess import postprocess_masks
from tiny import SAM_IMAGE_SIZE

SIDE = SAM_IMAGE_SIZE  # 256: the window side of the tiny segmenter
ONTOLOGY = {"a red thing": "red", "a green thing": "green"}


class GivenBoxes:
    """A detector stub: the same boxes in every image (class 0, then 1, ...), whatever it is shown."""

    def __init__(self, boxes) -> None:
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)

    def detect(self, images, ontology):
        n = len(self.boxes)
        return [sv.Detections(xyxy=self.boxes.copy(), confidence=np.linspace(0.9, 0.5, n).astype(np.float32),
                              class_id=np.arange(n) % 2, data={"class_name": np.array(["red", "green"] * n)[:n]})
                for _ in images]


@pytest.fixture(scope="module")
def model(tiny_models):
    return build_sam("sam2.1_hiera_tiny", checkpoint=tiny_models[1], device="cpu", image_size=SIDE)


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth random colours (blocks of 8 px), so that the tiny model's masks have structure."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(small, 8, 0), 8, 1)[:h, :w])


def _pipeline(model, boxes, **kwargs) -> GroundedSAM:
    return GroundedSAM(ONTOLOGY, detector=GivenBoxes(boxes), segmenter=model, device="cpu", **kwargs)


def _reference(model, image: np.ndarray, window, boxes) -> tuple[np.ndarray, np.ndarray]:
    """``ImagePredictor`` on the window's crop with the window's (K, 4) boxes in the crop's pixels (one
    batched call, as the pipeline decodes them): (K, H, W) masks placed back at the offset, (K,) scores."""
    x0, y0, x1, y1 = window
    ref = ImagePredictor(model)
    ref.set_image(image[y0:y1, x0:x1])
    boxes = np.float32(boxes).reshape(-1, 4) - np.float32([x0, y0, x0, y0])
    masks, scores, _ = ref.predict(box=boxes, multimask_output=False)  # (K, 1, h, w), (K, 1)
    full = np.zeros((len(boxes), *image.shape[:2]), bool)
    full[:, y0:y1, x0:x1] = masks.reshape(len(boxes), y1 - y0, x1 - x0) > 0.5
    return full, scores.reshape(-1)


def _row(det: sv.Detections, box) -> int:
    return int(np.flatnonzero((det.xyxy == np.float32(box)).all(1))[0])


CLUSTERS = [  # 12 small boxes in 3 groups, each group fits one 256 px window with its margin
    [100, 90, 140, 130], [150, 100, 200, 160], [110, 170, 170, 210], [180, 180, 220, 230],
    [520, 120, 560, 170], [580, 140, 640, 200], [530, 200, 600, 240], [610, 100, 660, 150],
    [300, 500, 350, 560], [360, 520, 420, 580], [320, 580, 380, 640], [400, 600, 450, 650],
]


def test_a_box_inside_a_window_gets_the_predictor_mask_of_that_window(model) -> None:
    img = _image(720, 900, 0)
    gs = _pipeline(model, CLUSTERS, windows=True)
    det = gs.predict(img)
    assert det.mask.shape == (12, 720, 900)
    plan = plan_windows(np.unique(np.float32(CLUSTERS), axis=0), img.shape[:2], SIDE)
    unique = np.unique(np.float32(CLUSTERS), axis=0)
    checked = 0
    for win in plan:
        assert win.native and (win.xyxy[2] - win.xyxy[0], win.xyxy[3] - win.xyxy[1]) == (SIDE, SIDE)
        assert fits(unique[win.boxes], np.array(win.xyxy), img.shape[:2], WINDOW_MARGIN * SIDE).all()
        expected, scores = _reference(model, img, win.xyxy, unique[win.boxes])
        for b, mask, score in zip(unique[win.boxes], expected, scores):
            row = _row(det, b)
            assert np.array_equal(det.mask[row], mask)
            assert det.data["mask_score"][row] == score
            x0, y0, x1, y1 = win.xyxy
            assert not det.mask[row].any(axis=1)[:y0].any() and not det.mask[row].any(axis=0)[x1:].any()
            checked += 1
    assert checked == 12 and sum(m.any() for m in det.mask) >= 6  # masks with pixels, not all empty
    whole = gs.predict(img, windows=False)  # the whole image downscaled to 256 px: other masks
    assert not np.array_equal(whole.mask, det.mask)


def test_boxes_are_grouped_each_window_encoded_once(model, monkeypatch) -> None:
    img = _image(720, 900, 1)
    gs = _pipeline(model, CLUSTERS, windows=True)
    calls: list[int] = []
    encode = model.encode_images
    monkeypatch.setattr(model, "encode_images", lambda x: (calls.append(len(x)), encode(x))[1])
    det = gs.predict(img)
    plan = plan_windows(np.unique(np.float32(CLUSTERS), axis=0), img.shape[:2], SIDE)
    assert len(plan) == 3 and sorted(len(w.boxes) for w in plan) == [4, 4, 4]
    assert calls == [1] * len(plan) and len(calls) < len(CLUSTERS) and len(det) == 12
    calls.clear()
    gs.predict(img, windows=False)
    assert calls == [1]  # the whole image, once


def test_an_object_larger_than_a_window_falls_back_to_a_downscaled_window(model) -> None:
    img = _image(700, 900, 2)
    big, small = [250, 150, 650, 450], [40, 560, 90, 610]  # 400 x 300 > 256 - 2 * 32; a small one elsewhere
    det = _pipeline(model, [big, small], windows=True).predict(img)
    plan = plan_windows(np.float32([big, small]), img.shape[:2], SIDE)
    fallback = [w for w in plan if not w.native]
    assert len(plan) == 2 and len(fallback) == 1
    x0, y0, x1, y1 = window = fallback[0].xyxy
    side = max(x1 - x0, y1 - y0)
    assert side > SIDE and (x1 - x0, y1 - y0) == (side, side)  # a square, downscaled to 256 for the encoder
    assert x0 <= big[0] - WINDOW_MARGIN * side and x1 >= big[2] + WINDOW_MARGIN * side
    assert y0 <= big[1] - WINDOW_MARGIN * side and y1 >= big[3] + WINDOW_MARGIN * side
    expected, score = _reference(model, img, window, big)
    row = _row(det, big)
    assert np.array_equal(det.mask[row], expected[0]) and det.data["mask_score"][row] == score[0]
    assert det.mask[row].any()
    cols, rows = np.flatnonzero(det.mask[row].any(0)), np.flatnonzero(det.mask[row].any(1))
    assert cols[-1] - cols[0] + 1 > SIDE // 2 and rows[-1] - rows[0] + 1 > SIDE // 4  # one mask over the object


def test_a_box_larger_than_the_image_side_is_the_whole_axis() -> None:
    plan = plan_windows(np.float32([[10, 20, 590, 80]]), (300, 600), 256)  # 580 px wide: fallback, clipped
    assert [(w.xyxy, w.native) for w in plan] == [((0, 0, 600, 300), False)]  # 776 px wanted: the whole image


@pytest.mark.parametrize("post", [{}, dict(min_hole_area=30, min_island_area=30, smooth_kernel=3)])
def test_compact_and_dense_window_masks_are_equal(model, post) -> None:
    img = _image(640, 800, 3)
    boxes = CLUSTERS[:8] + [[200, 250, 650, 560], [0, 0, 60, 50], [740, 590, 800, 640],  # a fallback, two at corners
                            CLUSTERS[1]]  # one box found twice (two classes): segmented once, the mask in both rows
    gs = _pipeline(model, boxes, windows=True, **post)
    dense, compact = gs.predict(img), gs.predict(img, compact=True)
    assert isinstance(compact.mask, sv.CompactMask) and isinstance(dense.mask, np.ndarray)
    assert np.array_equal(compact.mask.to_dense(), dense.mask)
    assert compact.mask.area.tolist() == dense.mask.reshape(len(dense), -1).sum(1).tolist()
    np.testing.assert_array_equal(compact.data["mask_score"], dense.data["mask_score"])
    assert dense.mask.any(axis=(1, 2)).sum() >= 5
    assert np.array_equal(dense.mask[1], dense.mask[-1]) and dense.data["mask_score"][1] == dense.data["mask_score"][-1]


def test_window_post_processing_equals_post_processing_the_full_frame(model) -> None:
    img = _image(640, 800, 4)
    boxes = CLUSTERS[:8]
    plain = _pipeline(model, boxes, windows=True).predict(img)
    post = _pipeline(model, boxes, windows=True, min_island_area=40, smooth_kernel=5).predict(img)
    assert np.array_equal(post.mask, postprocess_masks(plain.mask, 0, 40, 5))
    assert not np.array_equal(post.mask, plain.mask)  # the post-processing did something


def test_one_window_covering_the_image_gives_the_whole_image_result(model) -> None:
    img = _image(200, 240, 5)  # <= 256: one window, the image itself
    boxes = [[10, 10, 60, 80], [100, 40, 230, 190], [0, 150, 40, 200]]
    plan = plan_windows(np.float32(boxes), img.shape[:2], SIDE)
    assert len(plan) == 1 and plan[0].xyxy == (0, 0, 240, 200) and sorted(plan[0].boxes.tolist()) == [0, 1, 2]
    assert not use_windows(True, img.shape[:2], SIDE, tiled=True)
    gs = _pipeline(model, boxes)
    old = gs.predict(img, windows=False)
    for new in (gs.predict(img, windows=True), gs.predict(img, windows=True, compact=True)):
        assert np.array_equal(np.asarray(new.mask), old.mask) and np.array_equal(new.xyxy, old.xyxy)
        assert np.array_equal(new.data["mask_score"], old.data["mask_score"])
    # in a batch with a windowed image, the small one is still segmented whole, the large one in windows
    big = _image(600, 700, 6)
    small_out, big_out = gs.predict_batch([img, big], windows=True)
    assert np.array_equal(small_out.mask, old.mask)
    assert np.array_equal(big_out.mask, gs.predict(big, windows=True).mask)
    assert not np.array_equal(big_out.mask, gs.predict(big, windows=False).mask)


def test_every_box_lies_well_inside_exactly_one_window() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(40, 1400, 2))
        side = int(rng.choice([128, 256]))
        n = int(rng.integers(1, 60))
        centre = rng.uniform(-10, [w + 10, h + 10], (n, 2))
        size = rng.exponential(float(rng.choice([8, 40, 150])), (n, 2))
        boxes = np.c_[centre - size / 2, centre + size / 2].astype(np.float32)
        grid = np.arange(0, w, side)  # boxes on the edges of a naive grid of windows
        boxes[: n // 4, 0] = rng.choice(grid, n // 4) - 5.5
        boxes[: n // 4, 2] = boxes[: n // 4, 0] + 11
        plan = plan_windows(boxes, (h, w), side)
        assigned = np.concatenate([win.boxes for win in plan])
        assert sorted(assigned.tolist()) == list(range(n))  # each box in exactly one window
        assert len(plan) <= n
        clipped = np.clip(boxes, 0, [w, h, w, h])
        for win in plan:
            x0, y0, x1, y1 = win.xyxy
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h  # inside the image, never padded
            if win.native:
                assert (x1 - x0, y1 - y0) == (min(side, w), min(side, h))
            else:
                assert max(x1 - x0, y1 - y0) > side
            margin = WINDOW_MARGIN * max(x1 - x0, y1 - y0)
            assert fits(clipped[win.boxes], np.array(win.xyxy), (h, w), margin).all()
            for x0b, y0b, x1b, y1b in clipped[win.boxes]:  # the margin, or the image's edge
                assert x0b - x0 >= margin or x0 == 0
                assert y0b - y0 >= margin or y0 == 0
                assert x1 - x1b >= margin or x1 == w
                assert y1 - y1b >= margin or y1 == h


def test_a_mask_across_the_naive_window_border_is_one_piece(model) -> None:
    img = _image(512, 768, 8)
    box = [236, 200, 276, 260]  # across x = 256, the edge between two windows of a grid
    plan = plan_windows(np.float32([box]), img.shape[:2], SIDE)
    assert len(plan) == 1 and plan[0].xyxy[0] <= box[0] - SIDE * WINDOW_MARGIN
    assert plan[0].xyxy[2] >= box[2] + SIDE * WINDOW_MARGIN
    det = _pipeline(model, [box], windows=True).predict(img)
    expected, _ = _reference(model, img, plan[0].xyxy, box)
    assert np.array_equal(det.mask[0], expected[0])


def test_auto_windows_follow_tiling_and_bad_values_are_refused(model) -> None:
    img = _image(600, 700, 9)
    gs = _pipeline(model, [[100, 100, 150, 150]])  # windows="auto"
    untiled = gs.predict(img)
    assert np.array_equal(untiled.mask, gs.predict(img, windows=False).mask)
    assert not np.array_equal(untiled.mask, gs.predict(img, windows=True).mask)
    tiled = gs.predict(img, tile=300)  # the stub finds the box in every tile (at the tile's offset)
    assert len(tiled) == 9 and np.array_equal(tiled.mask, gs.predict(img, tile=300, windows=True).mask)
    assert not np.array_equal(tiled.mask, gs.predict(img, tile=300, windows=False).mask)
    # tile="auto" leaves an image this small untiled (the stub's input size is not known: 1024 px), and one
    # tile covering the image is the untiled result: no windows either way
    assert np.array_equal(gs.predict(img, tile="auto").mask, untiled.mask)
    assert np.array_equal(gs.predict(img, tile=704).mask, untiled.mask)
    with pytest.raises(ValueError, match="windows must be True, False or 'auto'"):
        _pipeline(model, [[1, 1, 5, 5]], windows="on")
    with pytest.raises(ValueError, match="windows must be"):
        gs.predict(img, windows=1)


def test_the_fingerprint_has_the_windows(model) -> None:
    def fp(**kwargs):
        return _pipeline(model, [[1, 1, 5, 5]], **kwargs).fingerprint()

    assert "windows" not in fp() and "windows" not in fp(windows=False)  # untiled "auto": as before windows
    assert fp(windows=True)["windows"] == {"when": "always", "margin": WINDOW_MARGIN}
    assert fp(tile=64)["windows"] == {"when": "tiled", "margin": WINDOW_MARGIN}
    assert "windows" not in fp(tile=64, windows=False)
    assert fp(windows=True) != fp() and fp(tile=64) != fp(tile=64, windows=False) != fp(tile=64, windows=True)


def test_a_label_rerun_with_other_windows_is_refused(tiny_models, tmp_path) -> None:
    owl, sam = tiny_models
    images = tmp_path / "images"
    images.mkdir()
    for i, (h, w) in enumerate([(300, 280), (120, 90)]):
        Image.fromarray(_image(h, w, 10 + i)).save(images / f"img{i}.png")

    def make(**kwargs) -> GroundedSAM:
        return GroundedSAM(ONTOLOGY, detector=str(owl), segmenter="sam2.1_hiera_tiny", checkpoint=sam,
                           image_size=SIDE, device="cpu", box_threshold=0.0, **kwargs)

    windowed = make(windows=True)
    assert GroundedSAM(**windowed.spec()).windows is True  # Ray workers rebuild the same setting
    out = tmp_path / "ds"
    assert windowed.label(images, ".png", out, progress=False).labeled == 2
    assert make(windows=True).label(images, ".png", out, progress=False).skipped == 2
    with pytest.raises(LabelingConfigError) as refused:
        make().label(images, ".png", out, progress=False)
    assert {name for name, _, _ in refused.value.changes} == {"windows.when", "windows.margin"}


@pytest.mark.slow
def test_cli_window_masks(tiny_models, tmp_path) -> None:
    from test_cli import _model_args, _run

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(_image(300, 420, 20)).save(imgs / "big.png")
    out = tmp_path / "ds"
    args = ["label", str(imgs), "--out", str(out), "--prompt", "a cat:cat", *_model_args(tiny_models)]
    first = _run(*args, "--window-masks")
    assert first.returncode == 0, first.stderr
    manifest = json.loads(next(out.rglob("manifest.json")).read_text())
    assert manifest["fingerprint"]["config"]["windows"] == {"when": "always", "margin": WINDOW_MARGIN}
    refused = _run(*args, "--whole-image-masks")
    assert refused.returncode == 2 and "windows.when" in refused.stderr, refused.stderr
    videos = _run("label", str(imgs), "--out", str(tmp_path / "v"), "--prompt", "a cat", "--videos", "--window-masks")
    assert videos.returncode == 2 and "--window-masks" in videos.stderr
