"""The app's logic without a browser: editing state, cached embeddings, sam3 exemplars, the review folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from grounded_sam.app.editing import (BACKGROUND, BOX, EXEMPLAR, FOREGROUND, SELECT, apply_click, export_coco,
                                      export_masks)
from grounded_sam.app.image_view import build_image_view, open_upload
from grounded_sam.app.models import AppError, AppModels, ModelOptions
from grounded_sam.app.render import render_session
from grounded_sam.app.review import ReviewError, ReviewFolder
from grounded_sam.app.session import ImageSession
from grounded_sam.pipeline.hub import loading_error_message
from grounded_sam.export.safe_io import UnsafePathError
from grounded_sam.labeling import label_folder
from grounded_sam.api import GroundedSAM
from grounded_sam.assets.samples import shapes_image
from tiny import SAM_IMAGE_SIZE

CLASSES = ["red", "green"]


def _square_dets(h: int = 40, w: int = 50) -> sv.Detections:
    big = np.zeros((h, w), bool)
    big[5:35, 5:45] = True
    small = np.zeros((h, w), bool)
    small[10:20, 10:20] = True
    return sv.Detections(xyxy=np.array([[5, 5, 44, 34], [10, 10, 19, 19]], np.float32), mask=np.stack([big, small]),
                         confidence=np.array([0.9, 0.6], np.float32), class_id=np.array([0, 1]),
                         data={"caption": np.array(["a red", "a green"]), "mask_score": np.array([0.8, 0.7], np.float32)})


def test_session_selection_prompts_and_edits() -> None:
    s = ImageSession.from_detections(np.zeros((40, 50, 3), np.uint8), _square_dets(), CLASSES)
    assert s.select_at(12, 12) == 1  # the smallest object under the pixel
    assert s.select_at(30, 30) == 0
    assert s.select_at(48, 38) is None
    with pytest.raises(ValueError, match="select an object"):
        s.add_click(1, 1, positive=False)  # a background click needs an object
    with pytest.raises(ValueError, match="outside"):
        s.select_at(50, 0)
    assert s.add_corner(40, 30) is None
    np.testing.assert_array_equal(s.add_corner(30, 10), [30, 10, 40, 30])
    s.current_class = 1
    obj = s.add_click(2, 2, positive=True)  # nothing selected: a new object of the current class
    assert (s.selected, obj.class_id, obj.points, obj.labels) == (2, 1, [(2.0, 2.0)], [1])
    s.set_mask(obj, np.pad(np.ones((3, 3), bool), ((1, 36), (1, 46))), 0.5)
    np.testing.assert_array_equal(obj.xyxy, [1, 1, 3, 3])
    s.select_at(12, 12)
    s.relabel_selected(0)
    with pytest.raises(ValueError, match="not one of"):
        s.relabel_selected(2)
    det = s.to_detections()
    assert det.class_id.tolist() == [0, 0, 1] and det.data["caption"].tolist() == ["a red", "a green", "manual"]
    s.delete_selected()
    assert len(s.objects) == 2 and s.selected is None
    assert [o["area"] for o in s.summary()["objects"]] == [1200, 9]


def test_masks_zip_has_one_png_per_object(tmp_path) -> None:
    import zipfile

    s = ImageSession.from_detections(np.zeros((40, 50, 3), np.uint8), _square_dets(), CLASSES, name="a b.jpg")
    path = export_masks(s, tmp_path)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["000_red.png", "001_green.png"]
        png = np.asarray(Image.open(zf.open("001_green.png")))
    np.testing.assert_array_equal(png > 0, s.objects[1].mask)


def _same_class_dets(h: int = 40, w: int = 50) -> sv.Detections:
    """Two objects of one class (class 0) and equal scores: only their masks differ."""
    dets = _square_dets(h, w)
    dets.class_id = np.array([0, 0])
    dets.confidence = np.array([0.9, 0.9], np.float32)
    dets.data = {"caption": np.array(["a red", "a red"]), "mask_score": np.array([0.8, 0.8], np.float32)}
    return dets


class _StubModels:
    """``AppModels.refine`` without a model: a square around the last click, or the box prompt filled."""

    def __init__(self) -> None:
        self.masks: list[np.ndarray] = []

    def refine(self, key: str, image: np.ndarray, points: list[tuple[float, float]], labels: list[int],
               box: np.ndarray | None) -> tuple[np.ndarray, float]:
        mask = np.zeros(image.shape[:2], bool)
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in box)
            mask[y0:y1 + 1, x0:x1 + 1] = True
        if points:
            x, y = (int(v) for v in points[-1])
            mask[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3] = labels[-1] == 1
        self.masks.append(mask)
        return mask, 0.5


def test_click_edits_after_an_object_of_the_same_class_report_no_error() -> None:
    """Issue 25: a dataclass ``__eq__`` comparing masks made ``objects.index(obj)`` raise after a good edit."""
    models = _StubModels()
    s = ImageSession.from_detections(np.zeros((40, 50, 3), np.uint8), _same_class_dets(), CLASSES)
    assert apply_click(models, s, SELECT, 12, 12).startswith("selected #1 red")
    assert apply_click(models, s, FOREGROUND, 15, 15) == f"#1 red: {int(models.masks[-1].sum())} px (IoU score 0.50)"
    np.testing.assert_array_equal(s.objects[1].mask, models.masks[-1])
    assert apply_click(models, s, BACKGROUND, 11, 11).startswith("#1 red: ")
    assert apply_click(models, s, BOX, 10, 10).startswith("first corner")
    assert apply_click(models, s, BOX, 22, 22).startswith("#1 red: ")
    np.testing.assert_array_equal(s.objects[1].mask, models.masks[-1])
    assert s.objects[0].area == 1200  # the other object of the class is untouched
    # a new object of the same class, made with two box clicks, then a + click on it
    s.selected = None
    assert apply_click(models, s, BOX, 30, 2).startswith("first corner")
    assert apply_click(models, s, BOX, 40, 8) == f"#2 red: {int(models.masks[-1].sum())} px (IoU score 0.50)"
    assert apply_click(models, s, FOREGROUND, 35, 5).startswith("#2 red: ")
    np.testing.assert_array_equal(s.objects[2].mask, models.masks[-1])
    # and one made with a + click while three objects of the class exist
    s.selected = None
    assert apply_click(models, s, FOREGROUND, 46, 36).startswith("#3 red: ")
    assert [o.class_id for o in s.objects] == [0, 0, 0, 0] and s.selected == 3


def test_objects_and_sessions_compare_by_identity() -> None:
    """Objects and sessions hold arrays: equal-looking ones are different objects, and comparing never raises."""
    image = np.zeros((40, 50, 3), np.uint8)
    a = ImageSession.from_detections(image, _same_class_dets(), CLASSES)
    b = ImageSession.from_detections(image, _same_class_dets(), CLASSES, key=a.key)
    assert a.objects[0] != a.objects[1] and a.objects[0] != b.objects[0] and a != b and a == a
    assert a.objects.index(a.objects[1]) == 1 and b.objects[0] not in a.objects


# ---------------------------------------------------------------------------- file names
def _stored_upload(tmp_path: Path, name: str, mode: str = "RGB") -> Path:
    """An image saved as gradio stores an upload: ``<cache>/<sha>/<the browser's file name>``."""
    folder = tmp_path / "gradio" / "0123abcd"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(shapes_image(40, 50)).convert(mode).save(folder / name)
    return folder / name


def test_an_upload_keeps_its_file_name_in_the_exports(tmp_path) -> None:
    s = open_upload(_stored_upload(tmp_path, "street.jpg"), "a red:red, a green:green")
    assert (s.name, s.classes, s.hw, s.image.dtype) == ("street.jpg", CLASSES, (40, 50), np.uint8)
    s.objects = ImageSession.from_detections(s.image, _square_dets(), CLASSES).objects
    path = export_coco(s, tmp_path)
    assert path.name == "street_coco.json"
    coco = json.loads(path.read_text())
    assert [im["file_name"] for im in coco["images"]] == ["street.jpg"] and len(coco["annotations"]) == 2
    assert export_masks(s, tmp_path).name == "street_masks.zip"
    assert s.summary()["image"]["name"] == "street.jpg"
    with pytest.raises(ValueError, match="notes.png"):  # not an image: the status line names the file
        (tmp_path / "notes.png").write_text("hello")
        open_upload(tmp_path / "notes.png")


@pytest.mark.parametrize("name, stem", [("my street (1).jpg", "my_street_1"), ("straße #2.png", "stra_e_2"),
                                        (".hidden.png", "hidden"), ("日本.png", "image"), ("..._.png", "image"),
                                        ("v1.2_final-B.png", "v1.2_final-B")])
def test_an_odd_file_name_is_sanitised_for_the_export_name_only(tmp_path, name, stem) -> None:
    s = open_upload(_stored_upload(tmp_path, name))
    out = tmp_path / "out"
    out.mkdir()
    path = export_coco(s, out)
    assert path == out / f"{stem}_coco.json" and export_masks(s, out) == out / f"{stem}_masks.zip"
    assert json.loads(path.read_text())["images"][0]["file_name"] == name


def test_the_upload_component_passes_the_stored_file_under_its_name(tmp_path) -> None:
    """Any image mode: gradio hands over the stored upload itself (no copy renamed ``image.webp`` / ``.jpeg``)."""
    import gradio as gr
    from gradio.data_classes import ImageData

    with gr.Blocks() as demo:
        build_image_view(AppModels(), tmp_path / "work")
    upload = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "image-upload")
    for name, mode in (("street.jpg", "RGB"), ("grey scan.jpg", "L"), ("cut out.png", "RGBA")):
        stored = _stored_upload(tmp_path, name, mode)
        path = upload.preprocess(ImageData(path=str(stored), orig_name=name))
        assert Path(path) == stored
        assert open_upload(path).name == name


# ---------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def click_models(tiny_models) -> AppModels:
    sam = tiny_models.sam
    return AppModels(ModelOptions(segmenter="sam2.1_hiera_tiny", checkpoint=str(sam), image_size=SAM_IMAGE_SIZE,
                                  device="cpu"))


def test_an_image_is_embedded_once_and_clicks_only_decode(click_models) -> None:
    predictor = click_models.click_predictor()
    calls = []
    encode = predictor.model.encode_images
    predictor.model.encode_images = lambda x: calls.append(1) or encode(x)
    try:
        image = shapes_image(96, 128)
        s = ImageSession(image, ["thing"])
        apply_click(click_models, s, FOREGROUND, 30, 20)
        apply_click(click_models, s, FOREGROUND, 34, 24)
        apply_click(click_models, s, BOX, 10, 10)
        apply_click(click_models, s, BOX, 60, 50)
        assert len(calls) == 1
        other = ImageSession(image.copy(), ["thing"])  # another image: embedded once more
        apply_click(click_models, other, FOREGROUND, 30, 20)
        apply_click(click_models, s, SELECT, 0, 0)  # selection runs no model
        assert len(calls) == 2
    finally:
        predictor.model.encode_images = encode
    # the last prompt's mask is the ImagePredictor's for the object's box + clicks
    obj = s.objects[0]
    predictor.set_image(image)
    masks, _, _ = predictor.predict(np.array(obj.points), np.array(obj.labels), obj.box, multimask_output=False)
    np.testing.assert_array_equal(obj.mask, masks[0] > 0.5)


def test_a_click_on_the_second_object_of_a_class_stores_the_predictor_mask(click_models) -> None:
    image = shapes_image(96, 128)
    dets = _same_class_dets(96, 128)
    s = ImageSession.from_detections(image, dets, CLASSES)
    assert apply_click(click_models, s, SELECT, 12, 12).startswith("selected #1 red")
    status = apply_click(click_models, s, FOREGROUND, 14, 16)
    obj = s.objects[1]
    assert status == f"#1 red: {obj.area} px (IoU score {obj.mask_score:.2f})"
    predictor = click_models.click_predictor()
    predictor.set_image(image)
    masks, _, _ = predictor.predict(np.array(obj.points), np.array(obj.labels), obj.box, multimask_output=False)
    np.testing.assert_array_equal(obj.mask, masks[0] > 0.5)
    np.testing.assert_array_equal(s.objects[0].mask, dets.mask[0])


def test_a_failed_model_load_says_what_the_cli_says() -> None:
    from grounded_sam.pipeline.hub import MissingModelsError, check_models, models_needed

    options = ModelOptions(detector="owlv2", detector_model_id="nobody/not-cached", device="cpu")
    models = AppModels(options)
    with pytest.raises(MissingModelsError) as cli:  # what `grounded-sam segment` checks first
        check_models(models_needed("owlv2", "nobody/not-cached"))
    with pytest.raises(AppError) as shown:
        models.pipeline({"a cat": "cat"})
    assert str(shown.value) == loading_error_message(cli.value) == f"error: {cli.value}"
    assert "nobody/not-cached" in str(shown.value) and "hf download nobody/not-cached" in str(shown.value)


def test_sam3_exemplar_boxes_prompt_the_detector_and_are_drawn(tiny_sam3_dir) -> None:
    models = AppModels(ModelOptions(detector="sam3", detector_model_id=tiny_sam3_dir, device="cpu", box_threshold=0.0))
    image = shapes_image(96, 128)
    s = ImageSession(image, ["shape"])
    assert apply_click(models, s, EXEMPLAR, 20, 10).startswith("first corner")
    apply_click(models, s, EXEMPLAR, 60, 40)
    assert s.exemplars == {"shape": [[20.0, 10.0, 60.0, 40.0]]}
    _, det = models.predict({"a shape": "shape"}, s.key, image, exemplars=s.exemplars)
    gs = GroundedSAM({"a shape": "shape"}, detector="sam3", detector_model_id=tiny_sam3_dir, device="cpu",
                     box_threshold=0.0)
    want = gs.predict(image, exemplars=s.exemplars)
    np.testing.assert_array_equal(det.mask, want.mask)
    plain = render_session(ImageSession(image, ["shape"]))
    drawn = render_session(s)
    assert (drawn[10, 20:26] == 255).all()  # the dashed exemplar box starts at its corner
    assert (plain[10, 20:26] != 255).any()


# ---------------------------------------------------------------------------- review folder
def _fake_predict(image: np.ndarray) -> sv.Detections:
    red = (image[..., 0] > 200) & (image[..., 1] < 100)
    green = (image[..., 1] > 150) & (image[..., 0] < 100)
    masks = [m for m in (red, green) if m.any()]
    ids = [i for i, m in enumerate((red, green)) if m.any()]
    return sv.Detections(xyxy=sv.mask_to_xyxy(np.stack(masks)).astype(np.float32), mask=np.stack(masks),
                         confidence=np.full(len(ids), 0.75, np.float32), class_id=np.array(ids))


@pytest.fixture
def labeled(tmp_path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        Image.fromarray(shapes_image(48 + 8 * i, 64)).save(src / f"im{i}.png")
    return src, tmp_path / "out"


def test_review_yolo_save_rewrites_the_label_and_a_rerun_keeps_it(labeled) -> None:
    src, out = labeled
    label_folder(_fake_predict, src, out, CLASSES, extension=".png", format="yolo", multipart="largest",
                 progress=False)
    folder = ReviewFolder(out)
    assert (folder.format, folder.options.multipart, folder.names) == ("yolo", "largest", ["im0.png", "im1.png"])
    image, record = folder.load("im1.png")
    assert image.shape == (56, 64, 3) and len(record["instances"]) == 2
    det = folder.detections("im1.png")
    s = ImageSession.from_detections(image, det, folder.classes, name="im1.png")
    s.select_at(*np.argwhere(det.mask[1])[0][::-1])
    s.relabel_selected(0)
    before = (out / "labels" / "im0.txt").read_bytes()
    folder.save("im1.png", s.to_detections())
    assert [line.split()[0] for line in (out / "labels" / "im1.txt").read_text().splitlines()] == ["0", "0"]
    assert (out / "labels" / "im0.txt").read_bytes() == before
    assert ReviewFolder(out).is_reviewed("im1.png") and not ReviewFolder(out).is_reviewed("im0.png")
    report = label_folder(_fake_predict, src, out, CLASSES, extension=".png", format="yolo", multipart="largest",
                          progress=False)
    assert (report.skipped, report.labeled) == (2, 0)
    assert [line.split()[0] for line in (out / "labels" / "im1.txt").read_text().splitlines()] == ["0", "0"]


def test_review_metrics_score_the_labels_against_the_reviewed_images(labeled) -> None:
    """After a Save, the review's metrics compare the model's own instances of the reviewed images
    (kept beside the review) with the reviewed ones; the dataset files do not carry them."""
    src, out = labeled
    label_folder(_fake_predict, src, out, CLASSES, extension=".png", progress=False)
    folder = ReviewFolder(out)
    assert folder.metrics() is None and "No reviewed images yet" in folder.metrics_text()
    det = folder.detections("im1.png")
    folder.save("im1.png", det[:1])  # a person deleted the second instance: the model had a false positive
    report = ReviewFolder(out).metrics()
    assert report.images == 1
    second = CLASSES[int(det.class_id[1])]
    assert report.per_class[second]["FP"] == 1 and sum(r["TP"] for r in report.per_class.values()) == 1
    assert "Labels vs the 1 reviewed image(s)" in ReviewFolder(out).metrics_text()
    folder = ReviewFolder(out)
    folder.save("im1.png", det[:1])  # saved again: the model output kept is still the model's, not the first fix
    assert ReviewFolder(out).metrics().per_class[second]["FP"] == 1
    assert "model" not in (out / "annotations.json").read_text()


def test_review_reads_and_writes_only_inside_its_folder(labeled, tmp_path) -> None:
    src, out = labeled
    label_folder(_fake_predict, src, out, CLASSES, extension=".png", format="coco", progress=False)
    folder = ReviewFolder(out)
    secret = tmp_path / "secret.png"
    Image.fromarray(shapes_image(8, 8)).save(secret)
    for name in ("../src/im0.png", "../../secret.png", str(secret), "images/../../secret.png"):
        with pytest.raises(UnsafePathError):
            folder.load(name)
        with pytest.raises(UnsafePathError):
            folder.save(name, folder.detections("im0.png"))
    with pytest.raises(ReviewError, match="not an image of the dataset"):
        folder.load("missing.png")
    os.symlink(secret, out / "images" / "linked.png")  # a link out of the folder is never followed
    with pytest.raises(UnsafePathError):
        folder.load("linked.png")
    with pytest.raises(ReviewError, match="not an output folder"):
        ReviewFolder(src)
    none_out = tmp_path / "no_copies"
    label_folder(_fake_predict, src, none_out, CLASSES, extension=".png", copy_images="none", progress=False)
    with pytest.raises(ReviewError, match="outside the folder"):
        ReviewFolder(none_out)
    data = json.loads((out / "annotations.json").read_text())
    assert all("reviewed" not in im for im in data["images"])


def test_the_image_view_detects_in_tiles_and_video_does_not(tiny_models) -> None:
    """``grounded-sam app --tile``: Detect tiles the image as GroundedSAM(tile=...) does; the video view's
    pipeline has no tiling; a click after a tiled Detect embeds the whole image (the pipeline may hold a
    window's embedding) and gives ImagePredictor's mask."""
    owl, sam = tiny_models
    opts = dict(detector=str(owl), segmenter="sam2.1_hiera_tiny", checkpoint=str(sam), image_size=SAM_IMAGE_SIZE,
                device="cpu", box_threshold=0.05)
    models = AppModels(ModelOptions(**opts, tile=64, tile_overlap=0.25))
    captions = {"a red shape": "red", "a green shape": "green"}
    image = shapes_image(150, 200)
    pipe, det = models.predict(captions, "k", image)
    assert pipe.tiling is not None and pipe.tiling.tile == 64
    ref = GroundedSAM(captions, **opts, tile=64, tile_overlap=0.25).predict(image)
    assert len(det) > 0
    np.testing.assert_array_equal(det.xyxy, ref.xyxy)
    np.testing.assert_array_equal(det.confidence, ref.confidence)
    assert models.pipeline(captions).tiling is None  # the video view's
    assert models.pipeline(captions, tiled=True) is pipe
    s = ImageSession.from_detections(image, det, pipe.classes)
    apply_click(models, s, SELECT, *[int(v) + 1 for v in det.xyxy[0][:2]])
    predictor = models.click_predictor()
    calls = []
    encode = predictor.model.encode_images
    predictor.model.encode_images = lambda x: calls.append(1) or encode(x)
    try:
        s2 = ImageSession(image, pipe.classes)
        apply_click(models, s2, FOREGROUND, 100, 75)
    finally:
        predictor.model.encode_images = encode
    assert len(calls) == 1
    obj = s2.objects[-1]
    predictor.set_image(image)
    masks, _, _ = predictor.predict(np.array(obj.points), np.array(obj.labels), obj.box, multimask_output=False)
    np.testing.assert_array_equal(obj.mask, masks[0] > 0.5)
