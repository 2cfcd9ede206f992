"""grounded_sam.labeling: resumable folder labeling with fake predictors (no models, no network)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import yaml
from PIL import Image
from pycocotools.coco import COCO

from gsam_runtime.images import load_image
from grounded_sam.labeling import LabelingConfigError, label_folder
from grounded_sam.export.safe_io import UnsafePathError

H, W = 40, 56
CLASSES = ["red thing", "green thing", "blue thing"]
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def _image(i: int) -> np.ndarray:
    a = np.full((H, W, 3), 60 + 10 * i, dtype=np.uint8)
    a[5:20, 2 + i : 20 + i] = COLOURS[0]
    if i % 2 == 0:  # a two-part green object
        a[25:35, 2:10] = COLOURS[1]
        a[28:34, 40:50] = COLOURS[1]
    if i % 3 == 0:  # a blue square with a hole
        a[2:16, 36:50] = COLOURS[2]
        a[6:10, 40:44] = 60 + 10 * i
    return a


def fake_predict(image: np.ndarray) -> sv.Detections:
    """Masks = pixels of each pure colour: deterministic, exact on lossless inputs."""
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    px = image.astype(int)
    masks, ids = [], []
    for cid, colour in enumerate(COLOURS):
        m = (np.abs(px - np.array(colour)).max(axis=2) < 40)
        if m.any():
            masks.append(m)
            ids.append(cid)
    if not masks:
        return sv.Detections(xyxy=np.zeros((0, 4)), mask=np.zeros((0,) + image.shape[:2], bool),
                             confidence=np.zeros(0), class_id=np.zeros(0, int))
    mask = np.stack(masks)
    area = mask.reshape(len(ids), -1).sum(1)
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(mask).astype(np.float32),
        mask=mask,
        confidence=(0.5 + (area % 50) / 100).astype(np.float32),
        class_id=np.array(ids),
        data={"mask_score": np.full(len(ids), 0.9, np.float32), "caption": np.array([CLASSES[c] for c in ids])},
    )


class Crashing:
    """fake_predict that raises ``exc`` on its ``k``-th call."""

    def __init__(self, k: int, exc: BaseException) -> None:
        self.k, self.exc, self.calls = k, exc, 0

    def __call__(self, image: np.ndarray) -> sv.Detections:
        self.calls += 1
        if self.calls == self.k:
            raise self.exc
        return fake_predict(image)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(_image(i)).save(src / f"img_{i}.png")
    Image.fromarray(_image(6)).save(src / "sub" / "deep.png")
    return src


def _snapshot(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".grounded_sam" not in p.relative_to(out).parts
    }


def _label(src: Path, out: Path, predict=fake_predict, **kw):
    kw.setdefault("extension", ".png")
    return label_folder(predict, src, out, CLASSES, progress=False, **kw)


def test_coco_dataset_matches_predictions(folder, tmp_path):
    out = tmp_path / "out"
    report = _label(folder, out, recursive=True)
    assert report.ok and report.total == 7 and report.labeled == 7 and report.images_written == 7
    coco = COCO(str(out / "annotations.json"))
    names = [i["file_name"] for i in coco.dataset["images"]]
    assert names == sorted(names) and "images/sub/deep.png" in names
    assert [c["name"] for c in coco.dataset["categories"]] == CLASSES
    n_ann = 0
    for img in coco.dataset["images"]:
        assert (out / img["file_name"]).is_file()
        pred = fake_predict(load_image(out / img["file_name"]))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        assert len(anns) == len(pred)
        for ann, mask, cid in zip(anns, pred.mask, pred.class_id):
            np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)
            assert ann["category_id"] == cid + 1 and ann["iscrowd"] == 0
            assert ann["area"] == mask.sum()
        n_ann += len(anns)
    assert report.instances_written == n_ann


def test_yolo_dataset_lines_equal_instances(folder, tmp_path):
    out = tmp_path / "out"
    report = _label(folder, out, format="yolo", recursive=True)
    assert report.ok
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == dict(enumerate(CLASSES)) and data["nc"] == 3 and data["path"] == str(out.resolve())
    total = 0
    for i, rel in [(i, f"img_{i}") for i in range(6)] + [(6, "sub/deep")]:
        lines = (out / "labels" / f"{rel}.txt").read_text().splitlines()
        pred = fake_predict(_image(i))
        assert len(lines) == len(pred)  # the two-part green object is ONE line
        assert [int(line.split()[0]) for line in lines] == list(pred.class_id)
        coords = np.concatenate([np.array(line.split()[1:], float) for line in lines])
        assert coords.min() >= 0 and coords.max() <= 1
        assert (out / "images" / f"{rel}.png").is_file()
        total += len(lines)
    assert report.instances_written == total


@pytest.mark.parametrize("fmt", ["coco", "yolo", "jsonl"])
def test_resume_after_predictor_error_is_byte_identical(folder, tmp_path, fmt):
    out = tmp_path / "out"
    _label(folder, out, format=fmt)
    reference = _snapshot(out)
    shutil.rmtree(out)

    first = _label(folder, out, Crashing(3, RuntimeError("CUDA out of memory")), format=fmt)
    assert list(first.failed) == [str(folder / "img_2.png")]
    assert "CUDA out of memory" in first.failed[str(folder / "img_2.png")]
    assert first.labeled == 5
    assert _snapshot(out) != reference
    second = _label(folder, out, format=fmt)
    assert second.ok and second.labeled == 1 and second.skipped == 5
    assert _snapshot(out) == reference


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_resume_after_keyboard_interrupt_is_byte_identical(folder, tmp_path, fmt):
    out = tmp_path / "out"
    _label(folder, out, format=fmt, recursive=True)
    reference = _snapshot(out)
    shutil.rmtree(out)

    with pytest.raises(KeyboardInterrupt):
        _label(folder, out, Crashing(4, KeyboardInterrupt()), format=fmt, recursive=True)
    records = list((out / ".grounded_sam" / "records").rglob("*.json"))
    assert len(records) == 3  # finished images were on disk before the interrupt
    assert not list(out.rglob("*.gs-tmp"))
    calls = Crashing(0, RuntimeError())
    resumed = _label(folder, out, calls, format=fmt, recursive=True)
    assert resumed.ok and resumed.skipped == 3 and resumed.labeled == 4 and calls.calls == 4
    assert _snapshot(out) == reference
    again = _label(folder, out, calls, format=fmt, recursive=True)  # nothing left to do
    assert again.labeled == 0 and again.skipped == 7 and calls.calls == 4
    assert _snapshot(out) == reference


def test_batches_equal_single_images(folder, tmp_path):
    _label(folder, tmp_path / "single")
    batch_calls = []

    def predict_batch(images):
        batch_calls.append(len(images))
        return [fake_predict(im) for im in images]

    report = label_folder(None, folder, tmp_path / "batched", CLASSES, extension=".png", batch_size=4,
                          predict_batch_fn=predict_batch, progress=False)
    assert report.ok and batch_calls == [4, 2]
    assert _snapshot(tmp_path / "single") == _snapshot(tmp_path / "batched")

    def broken_batch(images):
        raise RuntimeError("batch too big")

    report = label_folder(fake_predict, folder, tmp_path / "fallback", CLASSES, extension=".png", batch_size=3,
                          predict_batch_fn=broken_batch, progress=False)
    assert report.ok and report.labeled == 6  # fell back to one image at a time
    assert _snapshot(tmp_path / "single") == _snapshot(tmp_path / "fallback")


def test_bad_inputs_reported_and_awkward_ones_labeled(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    base = _image(0)
    Image.fromarray(base).save(src / "good.jpg", quality=100)
    (src / "zero.jpg").write_bytes(b"")
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage" * 20)
    Image.fromarray(base).convert("CMYK").save(src / "cmyk.jpg", quality=100)
    Image.fromarray(base[..., 0].astype(np.uint16) * 257).save(src / "grey16.png")
    rgba = np.concatenate([base, np.full((H, W, 1), 255, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(src / "rgba.png")
    Image.fromarray(base).quantize(8).save(src / "palette.png")
    (src / "notes.png").write_text("not an image")
    seen = []

    def predict(image):
        seen.append(image.shape)
        return fake_predict(image)

    report = _label(src, tmp_path / "out", predict, extension=(".jpg", ".png"))
    assert set(report.failed) == {str(src / n) for n in ("zero.jpg", "corrupt.jpg", "notes.png")}
    assert "empty" in report.failed[str(src / "zero.jpg")]
    assert "zero.jpg" in report.failed[str(src / "zero.jpg")]
    assert report.labeled == 5 and seen == [(H, W, 3)] * 5
    coco = COCO(str(tmp_path / "out" / "annotations.json"))
    labeled = {i["file_name"] for i in coco.dataset["images"]}
    assert labeled == {f"images/{n}" for n in ("cmyk.jpg", "good.jpg", "grey16.png", "palette.png", "rgba.png")}
    cmyk_id = next(i["id"] for i in coco.dataset["images"] if i["file_name"] == "images/cmyk.jpg")
    assert coco.loadAnns(coco.getAnnIds(imgIds=[cmyk_id]))[0]["category_id"] == 1  # red stayed red
    assert "corrupt.jpg" in report.summary()


def test_bad_detections_reported(folder, tmp_path):
    def wrong(image):
        d = fake_predict(image)
        if image[0, 0, 0] == 60 + 10 * 1:  # img_1: wrong mask size
            d.mask = d.mask[:, :-1]
        if image[0, 0, 0] == 60 + 10 * 2:  # img_2: unknown class
            d.class_id = d.class_id + 5
        return d

    report = _label(folder, tmp_path / "out", wrong)
    assert set(report.failed) == {str(folder / "img_1.png"), str(folder / "img_2.png")}
    assert "does not match" in report.failed[str(folder / "img_1.png")]
    assert "out of range" in report.failed[str(folder / "img_2.png")]
    assert report.labeled == 4


def test_changed_ontology_refused_unless_overwrite(folder, tmp_path):
    out = tmp_path / "out"
    _label(folder, out, fingerprint={"box_threshold": 0.3})
    with pytest.raises(LabelingConfigError, match=r"box_threshold: 0.3 -> 0.4(.|\n)*overwrite=True") as refused:
        _label(folder, out, fingerprint={"box_threshold": 0.4})
    assert refused.value.changes == [("box_threshold", 0.3, 0.4)]
    with pytest.raises(LabelingConfigError, match="classes"):
        label_folder(fake_predict, folder, out, CLASSES + ["extra"], extension=".png", progress=False,
                     fingerprint={"box_threshold": 0.3})
    again = _label(folder, out, fingerprint={"box_threshold": 0.4}, overwrite=True)
    assert again.labeled == 6 and again.skipped == 0
    same = _label(folder, out, fingerprint={"box_threshold": 0.4})
    assert same.labeled == 0 and same.skipped == 6


def test_changed_source_is_relabeled(folder, tmp_path):
    out = tmp_path / "out"
    _label(folder, out, format="yolo")
    Image.fromarray(_image(5)).save(folder / "img_0.png")  # replace the contents
    report = _label(folder, out, format="yolo")
    assert report.labeled == 1 and report.skipped == 5
    lines = (out / "labels" / "img_0.txt").read_text().splitlines()
    assert len(lines) == len(fake_predict(_image(5)))
    assert (out / "images" / "img_0.png").read_bytes() == (folder / "img_0.png").read_bytes()


@pytest.mark.parametrize("entry", ["labels", "images", ".grounded_sam"])
def test_output_symlink_escape_rejected(folder, tmp_path, entry):
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (out / entry).symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside"):
        _label(folder, out, format="yolo")
    assert list(outside.iterdir()) == []


def test_nested_output_symlink_escape_rejected(folder, tmp_path):
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (out / "images" / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        _label(folder, out, recursive=True)
    assert list(outside.iterdir()) == []


def test_output_inside_input_is_not_relabeled(folder):
    out = folder / "dataset"
    first = _label(folder, out, recursive=True)
    second = _label(folder, out, recursive=True)
    assert first.total == second.total == 7 and second.skipped == 7


def test_copy_modes_and_file_names(folder, tmp_path):
    report = _label(folder, tmp_path / "none", copy_images="none")
    data = json.loads((tmp_path / "none" / "annotations.json").read_text())
    assert data["images"][0]["file_name"] == "img_0.png"
    assert data["info"]["image_root"] == str(folder.resolve())
    assert not (tmp_path / "none" / "images").exists() and report.ok
    _label(folder, tmp_path / "links", copy_images="symlink")
    link = tmp_path / "links" / "images" / "img_0.png"
    assert link.is_symlink() and link.resolve() == (folder / "img_0.png").resolve()
    _label(folder, tmp_path / "links", copy_images="symlink")  # rerun keeps the links
    assert link.is_symlink()
    _label(folder, tmp_path / "hard", copy_images="hardlink")
    assert (tmp_path / "hard" / "images" / "img_0.png").read_bytes() == (folder / "img_0.png").read_bytes()


def test_yolo_label_name_collision(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_image(0)).save(src / "a.png")
    Image.fromarray(_image(1)).save(src / "a.bmp")
    report = _label(src, tmp_path / "out", format="yolo", extension=(".png", ".bmp"))
    assert list(report.failed) == [str(src / "a.png")]
    assert "collide" in report.failed[str(src / "a.png")]
    assert (tmp_path / "out" / "labels" / "a.txt").is_file()


def test_argument_errors(folder, tmp_path):
    with pytest.raises(ValueError, match="format"):
        _label(folder, tmp_path / "o", format="voc")
    with pytest.raises(ValueError, match="batch_size"):
        _label(folder, tmp_path / "o", batch_size=0)
    with pytest.raises(ValueError, match="unique"):
        label_folder(fake_predict, folder, tmp_path / "o", ["a", "a"], progress=False)
    with pytest.raises(ValueError, match="differ"):
        _label(folder, folder)
    with pytest.raises(FileNotFoundError):
        _label(tmp_path / "missing", tmp_path / "o")
    assert not (tmp_path / "o").exists()
