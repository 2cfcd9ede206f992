"""GroundedSAM.label with tiny models: the dataset holds exactly what predict returns."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from grounded_sam import GroundedSAM
from tiny import SAM_IMAGE_SIZE


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_models):
    owl, sam = tiny_models
    gs = GroundedSAM({"a cat": "cat", "a dog": "dog"}, detector=str(owl), segmenter="sam2.1_hiera_tiny",
                     checkpoint=sam, image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0, nms_iou=0.2)
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(48, 64), (40, 40), (64, 52)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return gs, folder


def test_coco_masks_equal_predictions(setup, tmp_path) -> None:
    gs, folder = setup
    report = gs.label(folder, extension=".png", output_folder=tmp_path / "coco", format="coco", progress=False)
    assert report.ok and report.labeled == 3
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat", "dog"]
    total = 0
    for img in coco.loadImgs(coco.getImgIds()):
        det = gs.predict(str(folder / Path_name(img["file_name"])))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        nonempty = [i for i in range(len(det)) if det.mask[i].any()]
        assert len(anns) == len(nonempty)
        for ann, i in zip(anns, nonempty):
            assert ann["iscrowd"] == 0 and ann["category_id"] == int(det.class_id[i]) + 1
            m = mask_utils.decode(ann["segmentation"]).astype(bool)
            assert np.array_equal(m, det.mask[i])
            assert ann["area"] == int(det.mask[i].sum())
            ys, xs = np.nonzero(det.mask[i])
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            total += 1
    assert total > 0


@pytest.mark.slow
def test_yolo_one_line_per_instance(setup, tmp_path) -> None:
    gs, folder = setup
    out = tmp_path / "yolo"
    report = gs.label(folder, extension=".png", output_folder=out, format="yolo", progress=False)
    assert report.ok
    assert "names" in (out / "data.yaml").read_text()
    for i in range(3):
        det = gs.predict(str(folder / f"img{i}.png"))
        lines = (out / "labels" / f"img{i}.txt").read_text().splitlines()
        assert len(lines) == sum(1 for k in range(len(det)) if det.mask[k].any())
        for line in lines:
            cls, *xy = line.split()
            assert int(cls) in (0, 1) and len(xy) >= 6 and len(xy) % 2 == 0
            assert all(0.0 <= float(v) <= 1.0 for v in xy)


def Path_name(name: str) -> str:  # noqa: N802 (COCO file names are relative to the dataset root)
    return name.split("/")[-1]


def test_rerun_resumes_without_predicting(setup, tmp_path) -> None:
    gs, folder = setup
    out = tmp_path / "coco"
    gs.label(folder, extension=".png", output_folder=out, format="coco", progress=False)
    before = (out / "annotations.json").read_bytes()
    calls = []
    original = gs.predict
    gs.predict = lambda image: calls.append(1) or original(image)  # type: ignore[method-assign]
    try:
        report = gs.label(folder, extension=".png", output_folder=out, format="coco", progress=False)
    finally:
        del gs.predict
    assert report.skipped == 3 and not calls
    assert (out / "annotations.json").read_bytes() == before
    assert json.loads(before)["images"]
