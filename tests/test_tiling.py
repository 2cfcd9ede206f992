"""Tiled detection (grounded_sam.pipeline.tiling): windows, boxes back in image pixels, objects cut by
tile borders merged into one, the untiled result from one tile, validation, fingerprint, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from grounded_sam import GroundedSAM
from grounded_sam.labeling import LabelingConfigError
from grounded_sam.pipeline.tiling import TileOptions, detect_tiled, tile_windows
from tiny import SAM_IMAGE_SIZE

ONTOLOGY = {"a red thing": "red", "a green thing": "green"}
COLORS = {0: (255, 0, 0), 1: (0, 255, 0)}  # class id -> the colour the stub finds


class ColorBoxes:
    """Finds each 4-connected blob of pure red (class 0) or green (class 1) in every image it is given,
    boxed ``x0, y0, x1 + 1, y1 + 1``; records the shapes of the images (tiles) it saw."""

    def __init__(self, masks: bool = False) -> None:
        self.seen: list[tuple[int, int]] = []
        self.returns_masks = masks

    def detect(self, images, ontology):
        from scipy import ndimage

        out = []
        for img in images:
            img = np.asarray(img)
            self.seen.append(img.shape[:2])
            boxes, classes, masks = [], [], []
            for cid, rgb in COLORS.items():
                labels, n = ndimage.label(np.all(img == rgb, axis=-1))
                for k in range(1, n + 1):
                    ys, xs = np.nonzero(labels == k)
                    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                    classes.append(cid)
                    masks.append(labels == k)
            n = len(boxes)
            names = np.array([["red", "green"][c] for c in classes], dtype=str).reshape(n)
            out.append(sv.Detections(
                xyxy=np.array(boxes, np.float32).reshape(n, 4), confidence=np.linspace(0.9, 0.5, n).astype(np.float32),
                class_id=np.array(classes, int),
                mask=np.array(masks, bool).reshape(n, *img.shape[:2]) if self.returns_masks else None,
                data={"class_name": names}))
        return out


class FixedBox:
    """Returns one box at (2, 3, 9, 11) of every tile, class 0."""

    def detect(self, images, ontology):
        return [sv.Detections(xyxy=np.array([[2, 3, 9, 11]], np.float32), confidence=np.array([0.8], np.float32),
                              class_id=np.array([0]), data={"class_name": np.array(["red"])}) for _ in images]


@pytest.fixture(scope="module")
def real(tiny_models) -> GroundedSAM:
    owl, sam = tiny_models
    return GroundedSAM(ONTOLOGY, detector=str(owl), segmenter="sam2.1_hiera_tiny", checkpoint=sam,
                       image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0, nms_iou=0.3)


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _canvas(h: int, w: int, rects: list[tuple[int, int, int, int, int]]) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    for x0, y0, x1, y1, cid in rects:
        img[y0:y1, x0:x1] = COLORS[cid]
    return img


def test_windows_cover_the_image_with_the_overlap() -> None:
    wins = tile_windows((100, 200), 64, 0.25)  # stride 48: x 0, 48, 96, 136; y 0, 36
    assert wins[:, 0].tolist() == [0, 48, 96, 136] * 2 and sorted(set(wins[:, 1].tolist())) == [0, 36]
    assert (wins[:, 2] - wins[:, 0] == 64).all() and wins[:, 2].max() == 200 and wins[:, 3].max() == 100
    assert tile_windows((40, 50), 64, 0.2).tolist() == [[0, 0, 50, 40]]  # smaller than a tile: one window


def test_one_tile_covering_the_image_gives_the_untiled_result(real: GroundedSAM) -> None:
    img = _noise(90, 120, 0)
    plain = real.predict(img)
    tiled = real.predict(img, tile=128)
    assert len(plain) > 0 and len(tiled) == len(plain)
    assert np.array_equal(plain.xyxy, tiled.xyxy) and np.array_equal(plain.confidence, tiled.confidence)
    assert np.array_equal(plain.class_id, tiled.class_id) and np.array_equal(plain.mask, tiled.mask)
    assert np.array_equal(plain.data["mask_score"], tiled.data["mask_score"])


def test_every_box_lands_at_its_tile_offset(real: GroundedSAM) -> None:
    gs = GroundedSAM(ONTOLOGY, detector=FixedBox(), segmenter=real.predictor, device="cpu", tile=32, tile_overlap=0.0)
    img = _noise(64, 96, 1)
    det = gs.predict(img)
    wins = tile_windows((64, 96), 32, 0.0)
    assert len(wins) == 6 and len(det) == 6  # disjoint boxes: nothing merges
    expected = np.array([[x0 + 2, y0 + 3, x0 + 9, y0 + 11] for x0, y0, _, _ in wins], np.float32)
    assert np.array_equal(det.xyxy, expected)
    assert det.mask.shape == (6, 64, 96) and det.data["mask_score"].shape == (6,)
    # the batch path: two images of other sizes, each in its own pixels
    shapes = [(40, 70), (70, 40)]  # 3 x 2 and 2 x 3 windows, the last ones flush with the far edges
    for (h, w), got in zip(shapes, gs.predict_batch([_noise(h, w, 2) for h, w in shapes])):
        wins = tile_windows((h, w), 32, 0.0)
        assert len(wins) == 6 and np.array_equal(got.xyxy, np.tile(wins[:, :2], 2) + [2, 3, 9, 11])
        assert got.mask.shape == (6, h, w)


def test_an_object_over_a_border_comes_out_once_with_its_whole_box() -> None:
    detector = ColorBoxes()
    rects = [(20, 10, 80, 30, 0),  # red, cut by the border between the two columns of tiles
             (10, 60, 190, 80, 0),  # red, over all four columns (halves overlap only in the 6 px strips)
             (40, 40, 60, 50, 1),  # green, inside one tile and the overlap of its neighbour
             (150, 5, 160, 15, 0)]  # red, small, apart from the others
    img = _canvas(100, 200, rects)
    (det,) = detect_tiled(detector, [img], ONTOLOGY, TileOptions(64, overlap=0.1))
    assert len(detector.seen) == len(tile_windows((100, 200), 64, 0.1)) and set(detector.seen) == {(64, 64)}
    found = sorted(zip(det.xyxy.astype(int).tolist(), det.class_id.tolist()))
    assert found == sorted(([x0, y0, x1, y1], c) for x0, y0, x1, y1, c in rects)


def test_halves_meet_without_overlap() -> None:
    img = _canvas(64, 128, [(40, 10, 100, 30, 1), (60, 40, 70, 60, 0)])  # green over the border at x = 64
    (det,) = detect_tiled(ColorBoxes(), [img], ONTOLOGY, TileOptions(64, overlap=0.0))
    assert sorted(zip(det.xyxy.astype(int).tolist(), det.class_id.tolist())) == [
        ([40, 10, 100, 30], 1), ([60, 40, 70, 60], 0)]


def test_pieces_within_one_tile_are_not_merged() -> None:
    img = _canvas(64, 64, [(4, 4, 20, 20, 0), (22, 4, 40, 20, 0)])  # two red blobs, 2 px apart
    (det,) = detect_tiled(ColorBoxes(), [img], ONTOLOGY, TileOptions(48, overlap=0.5))
    assert sorted(det.xyxy.astype(int).tolist()) == [[4, 4, 20, 20], [22, 4, 40, 20]]


def test_masks_of_a_mask_detector_are_moved_and_joined(real: GroundedSAM) -> None:
    img = _canvas(80, 120, [(30, 10, 90, 40, 0), (5, 60, 15, 70, 1)])
    gs = GroundedSAM(ONTOLOGY, detector=ColorBoxes(masks=True), device="cpu", tile=48, tile_overlap=0.25)
    assert gs.predictor is None  # the detector's own masks
    det = gs.predict(img)
    assert len(det) == 2 and det.mask.shape == (2, 80, 120)
    for box, mask, cid in zip(det.xyxy.astype(int), det.mask, det.class_id):
        assert np.array_equal(mask, np.all(img == COLORS[int(cid)], axis=-1))
        ys, xs = np.nonzero(mask)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("tile, overlap, message", [
    (16, 0.2, ">= 32"), (31.5, 0.2, ">= 32"), ("big", 0.2, "'auto'"), (True, 0.2, ">= 32"),
    (64, 0.9, r"\[0, 0.9\)"), (64, -0.1, r"\[0, 0.9\)"), (64, "a lot", r"\[0, 0.9\)"),
])
def test_bad_tile_settings_are_refused_clearly(tile, overlap, message) -> None:
    with pytest.raises(ValueError, match=message):
        TileOptions(tile, overlap)
    with pytest.raises(ValueError, match=message):  # before any model loads
        GroundedSAM(ONTOLOGY, detector=FixedBox(), segmenter="no-such-model", tile=tile, tile_overlap=overlap)


def test_call_settings_and_exemplars(real: GroundedSAM) -> None:
    gs = GroundedSAM(ONTOLOGY, detector=FixedBox(), segmenter=real.predictor, device="cpu")
    with pytest.raises(ValueError, match="give tile"):
        gs.predict(_noise(40, 40, 4), overlap=0.3)
    with pytest.raises(ValueError, match="0.9"):
        gs.predict(_noise(40, 40, 4), tile=64, overlap=0.95)
    with pytest.raises(ValueError, match="tiled detection"):
        gs.predict(_noise(40, 40, 4), tile=32, exemplars={"red": [[0, 0, 5, 5]]})
    with pytest.raises(ValueError, match="images only"):  # said, not silently untiled
        next(iter(GroundedSAM(ONTOLOGY, detector=FixedBox(), segmenter=real.predictor, device="cpu", tile=64)
                  .track(np.zeros((2, 40, 40, 3), np.uint8))))
    assert TileOptions("auto").tile_for((4000, 3000), FixedBox()) == 1024  # an unknown input size: 1024
    assert TileOptions("auto").tile_for((1500, 1000), FixedBox()) is None  # not over twice as large


def test_auto_uses_the_detectors_input_size(real: GroundedSAM) -> None:
    from grounded_sam.pipeline.tiling import detector_input_side

    side = detector_input_side(real.detector)
    assert isinstance(side, int) and side > 0
    assert TileOptions("auto").tile_for((int(2 * side) + 1, side), real.detector) == side
    assert TileOptions("auto").tile_for((2 * side, side), real.detector) is None


def test_the_fingerprint_has_the_tiling(real: GroundedSAM) -> None:
    def fp(**tiling):
        gs = GroundedSAM(ONTOLOGY, detector=FixedBox(), segmenter=real.predictor, device="cpu", **tiling)
        return gs.fingerprint()

    assert "tiling" not in fp()  # untiled: as before tiling existed
    assert fp(tile=64)["tiling"] == {"tile": 64, "overlap": 0.2, "merge_ios": 0.5}
    assert fp(tile=64) != fp(tile=128) != fp(tile="auto") and fp(tile=64) != fp(tile=64, tile_overlap=0.3)
    assert fp(tile=64) == fp(tile="64")


def test_a_label_rerun_with_other_tiling_is_refused(tiny_models, tmp_path) -> None:
    owl, sam = tiny_models
    images = tmp_path / "images"
    images.mkdir()
    for i, (h, w) in enumerate([(48, 64), (70, 40)]):
        Image.fromarray(_noise(h, w, 10 + i)).save(images / f"img{i}.png")

    def make(**tiling) -> GroundedSAM:
        return GroundedSAM(ONTOLOGY, detector=str(owl), segmenter="sam2.1_hiera_tiny", checkpoint=sam,
                           image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0, **tiling)

    tiled = make(tile=32)
    assert GroundedSAM(**tiled.spec()).tiling == tiled.tiling  # Ray workers rebuild the same tiling
    out = tmp_path / "ds"
    assert tiled.label(images, ".png", out, progress=False).labeled == 2
    assert make(tile=32).label(images, ".png", out, progress=False).skipped == 2
    with pytest.raises(LabelingConfigError) as refused:
        make(tile=48).label(images, ".png", out, progress=False)
    assert refused.value.changes == [("tiling.tile", 32, 48)]
    other = tmp_path / "ds2"
    shutil.copytree(out, other)
    with pytest.raises(LabelingConfigError) as refused:
        make().label(images, ".png", other, progress=False)
    assert {name for name, _, _ in refused.value.changes} == {"tiling.tile", "tiling.overlap", "tiling.merge_ios",
                                                              "windows.when", "windows.margin"}  # auto: on when tiled


@pytest.mark.slow
def test_cli_segment_with_tiles(tiny_models, tmp_path) -> None:
    from test_cli import _model_args, _run

    img = tmp_path / "big.png"
    Image.fromarray(_noise(100, 150, 20)).save(img)
    out = tmp_path / "out"
    r = _run("segment", str(img), "--prompt", "a cat:cat, a dog:dog", *_model_args(tiny_models), "--tile", "64",
             "--out", str(out))
    assert r.returncode == 0, r.stderr
    rec = json.loads((out / "big.json").read_text())
    assert (rec["width"], rec["height"]) == (150, 100)
    bad = _run("segment", str(img), "--prompt", "a cat", *_model_args(tiny_models), "--tile", "16", "--out", str(out))
    assert bad.returncode == 2 and ">= 32" in bad.stderr
    bad = _run("segment", str(img), "--prompt", "a cat", *_model_args(tiny_models), "--tile-overlap", "0.5",
               "--out", str(out))
    assert bad.returncode == 2 and "--tile" in bad.stderr


@pytest.mark.slow
def test_cli_label_rerun_with_another_tile_is_refused(tiny_models, tmp_path) -> None:
    from test_cli import _model_args, _run

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(2):
        Image.fromarray(_noise(40, 72, 30 + i)).save(imgs / f"im{i}.png")
    out = tmp_path / "ds"
    args = ["label", str(imgs), "--out", str(out), "--prompt", "a cat:cat", *_model_args(tiny_models)]
    first = _run(*args, "--tile", "32", "--tile-overlap", "0.25")
    assert first.returncode == 0, first.stderr
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    r = _run(*args, "--tile", "48", "--tile-overlap", "0.25")
    assert r.returncode == 2 and "tiling.tile: 32 -> 48" in r.stderr, r.stderr
    r = _run(*args)
    assert r.returncode == 2 and "tiling.tile: 32 -> (none)" in r.stderr, r.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    r = _run(*args, "--tile", "32", "--tile-overlap", "0.25")
    assert r.returncode == 0 and "2 already done" in r.stdout, r.stdout
