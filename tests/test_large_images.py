"""Issue 28 end to end: a 4,096 x 4,096 image with 200 objects and a 16,000 x 16,000 image with 300
objects are labeled from their files (tiled detection, masks in windows at native resolution,
compact masks, COCO RLE), with a detector that knows the right answer (tests/large_images.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from grounded_sam import GroundedSAM
from gsam_runtime.images import MAX_PIXELS_ENV
from large_images import RedBlobDetector, save_disc_image

pytestmark = pytest.mark.slow

WINDOW = 128  # the tiny segmenter's input side here: its windows


@pytest.fixture(scope="module")
def pipeline(tiny_models) -> GroundedSAM:
    return GroundedSAM({"a red disc": "disc"}, detector=RedBlobDetector(), segmenter="sam2.1_hiera_tiny",
                       checkpoint=tiny_models.sam, image_size=WINDOW, device="cpu", tile=1024, tile_overlap=0.1)


def _label(pipeline: GroundedSAM, tmp_path, side: int, objects: int, suffix: str) -> tuple[np.ndarray, dict]:
    folder = tmp_path / "images"
    folder.mkdir()
    truth = save_disc_image(folder / f"big{suffix}", side, objects, seed=side)
    report = pipeline.label(str(folder), extension=suffix, output_folder=str(tmp_path / "out"), progress=False)
    assert report.ok and report.labeled == 1, report
    return truth, json.loads((tmp_path / "out" / "annotations.json").read_text())


def _check(truth: np.ndarray, coco: dict, side: int) -> None:
    """One annotation per disc (discs cut by tile borders merged), each mask a full-resolution RLE of
    the image's size whose pixels all lie in the disc's window neighbourhood."""
    (image,) = coco["images"]
    assert (image["width"], image["height"]) == (side, side)
    anns = coco["annotations"]
    assert len(anns) == len(truth)
    centres = np.array([[a["bbox"][0] + a["bbox"][2] / 2, a["bbox"][1] + a["bbox"][3] / 2] for a in anns])
    found = set()
    for box in truth:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        k = int(np.argmin(np.abs(centres - [cx, cy]).max(1)))  # the annotation whose mask box is nearest
        found.add(k)
        x, y, w, h = anns[k]["bbox"]
        # a mask segmented in a window of WINDOW px around its box never reaches further than the window
        assert x >= box[0] - WINDOW and y >= box[1] - WINDOW and x + w <= box[2] + WINDOW and y + h <= box[3] + WINDOW
    assert len(found) == len(truth)  # each disc its own annotation
    for a in anns[:5]:
        rle = a["segmentation"]
        assert rle["size"] == [side, side] and mask_utils.area(rle) == a["area"] > 0


def test_a_4k_image_with_200_objects(pipeline, tmp_path) -> None:
    truth, coco = _label(pipeline, tmp_path, 4096, 200, ".png")
    _check(truth, coco, 4096)


def test_a_16k_image_with_300_objects(pipeline, tmp_path, monkeypatch) -> None:
    """256 M pixels: over PIL's decompression-bomb limit, so the limit is raised as --max-pixels would."""
    monkeypatch.setenv(MAX_PIXELS_ENV, str(16000 * 16000))
    truth, coco = _label(pipeline, tmp_path, 16000, 300, ".bmp")  # uncompressed: seconds to write and read
    _check(truth, coco, 16000)
