"""The app in a real browser: Debian's headless Chromium driven by Playwright, tiny random models.

One app (image, video and review tabs) and one browser serve the whole module; each test opens a
fresh page. Screenshots of every step are kept under the pytest temp folder (``screens``).
Chromium comes from the system (``apt-get install chromium``, see ``.ci/run``); nothing here
downloads a browser.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grounded_sam.app import AppModels, AppOptions, ModelOptions, build_app, launch
from grounded_sam.api import GroundedSAM
from grounded_sam.assets.samples import shapes_image, write_synthetic_video
from segmenter import ImagePredictor
from tiny import SAM_IMAGE_SIZE

# a browser and a server per test (grounded_sam.app itself is covered by test_app.py); with pytest-xdist
# these run on one worker, one after the other with the Ray tests ("heavy")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("heavy")]

CAPTIONS = "a red square:square, a green circle:circle"
ONTOLOGY = {"a red square": "square", "a green circle": "circle"}
H, W = 128, 160
MAX_UPLOAD_MB = 1.0


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Chromium is missing: apt-get install -y chromium (see .ci/run)"
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny(tiny_models):
    owl, sam = tiny_models
    opts = dict(detector=str(owl), segmenter="sam2.1_hiera_tiny", checkpoint=str(sam), image_size=SAM_IMAGE_SIZE,
                device="cpu", box_threshold=0.0, nms_iou=0.3)
    return opts


@pytest.fixture(scope="module")
def labeled(tiny, tmp_path_factory):
    """A COCO dataset made by ``label`` from three small images (with the same tiny models)."""
    root = tmp_path_factory.mktemp("review")
    images = root / "images_in"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        img = shapes_image(96, 128)
        img[rng.integers(0, 96, 40), rng.integers(0, 128, 40)] = 255
        Image.fromarray(img).save(images / f"im{i}.png")
    gs = GroundedSAM(ONTOLOGY, **tiny)
    report = gs.label(images, extension=".png", output_folder=root / "ds", format="coco", progress=False)
    assert report.ok and report.images_written == 3
    return gs, images, root / "ds"


@pytest.fixture(scope="module")
def server(tiny, labeled, tmp_path_factory):
    port = _free_port()
    options = AppOptions(port=port, review=labeled[2], max_upload_mb=MAX_UPLOAD_MB)
    demo = build_app(AppModels(ModelOptions(**tiny)), options, tmp_path_factory.mktemp("app_work"))
    launch(demo, options, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def screens(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screens")


@pytest.fixture
def page(browser, server, screens, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    pg = context.new_page()
    pg.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server) else route.abort())
    pg.goto(server)
    pg.wait_for_selector("#tab-image", state="attached")
    yield pg
    pg.screenshot(path=str(screens / f"{request.node.name}_end.png"), full_page=True)
    context.close()


# ---------------------------------------------------------------------------- helpers
def _state(pg, elem: str) -> dict:
    text = pg.input_value(f"#{elem} textarea")
    return json.loads(text) if text else {}


def _wait_state(pg, elem: str, predicate, timeout: float = 120.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = _state(pg, elem)
        if state and predicate(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"{elem} never reached the expected state; last: {str(_state(pg, elem))[:800]}")


def _wait_status(pg, view: str, pattern: str, timeout: float = 60.0) -> str:
    """``#<view>-status`` once it matches ``pattern`` (``re.search``); an ``error:`` line fails at once."""
    end = time.monotonic() + timeout
    text = ""
    while time.monotonic() < end:
        text = " ".join(pg.inner_text(f"#{view}-status").split())
        if re.search(pattern, text):
            return text
        if "error" in text.lower():
            raise AssertionError(f"the {view} status reads {text!r} (expected {pattern!r})")
        time.sleep(0.1)
    raise AssertionError(f"the {view} status never matched {pattern!r}; last: {text!r}")


def _shot(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(np.int16)


def _click_pixel(pg, selector: str, x: float, y: float, size: tuple[int, int]) -> None:
    """Click image pixel (x, y) of an image shown (maybe scaled) in ``selector``."""
    image = pg.locator(f"{selector} img")
    image.scroll_into_view_if_needed()  # a mouse click at page coordinates outside the viewport is lost
    box = image.bounding_box()
    h, w = size
    pg.mouse.click(box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h)


def _radio(pg, elem: str, label: str) -> None:
    pg.locator(f"#{elem} label").filter(has_text=label).first.click()


def _pick(pg, elem: str, option: str) -> None:
    """Choose ``option`` in a gradio dropdown."""
    pg.locator(f"#{elem} input").click()
    pg.locator("li[role=option]").filter(has_text=option).first.click()


def _download(pg, button: str, link_scope: str, dest: Path, name_part: str) -> Path:
    pg.click(f"#{button}")
    link = pg.locator(f'#{link_scope} a[href*="{name_part}"]').first
    link.wait_for(timeout=120_000)
    with pg.expect_download() as info:
        link.click()
    path = dest / info.value.suggested_filename
    info.value.save_as(path)
    return path


# ---------------------------------------------------------------------------- image view
def test_image_detect_click_export(page, labeled, tmp_path, screens) -> None:
    from pycocotools import mask as mask_utils

    gs = labeled[0]
    image = shapes_image(H, W)
    Image.fromarray(image).save(tmp_path / "shapes.png")
    page.set_input_files("#image-upload input[type=file]", str(tmp_path / "shapes.png"))
    _wait_state(page, "image-objects", lambda s: s["image"]["width"] == W and s["objects"] == [])
    before = _shot(page.locator("#image-overlay img"))

    page.fill("#image-captions textarea", CAPTIONS)
    page.click("#image-detect")
    expected = gs.predict(image)
    assert len(expected) > 0
    state = _wait_state(page, "image-objects", lambda s: len(s["objects"]) > 0)
    page.screenshot(path=str(screens / "image_detected.png"), full_page=True)
    # the app's state holds the pipeline's instances
    assert [o["class"] for o in state["objects"]] == [gs.classes[c] for c in expected.class_id]
    assert [o["area"] for o in state["objects"]] == [int(m.sum()) for m in expected.mask]
    np.testing.assert_allclose([o["score"] for o in state["objects"]], expected.confidence, atol=1e-4)
    # and the overlay shows them: the drawn image differs from the plain one
    after = _shot(page.locator("#image-overlay img"))
    assert after.shape == before.shape
    assert np.abs(after - before).mean() > 5.0

    # select the smallest object under a pixel, then refine it with a + click
    areas = expected.mask.sum(axis=(1, 2))
    px, py = 20, 20
    covering = [i for i in range(len(expected)) if expected.mask[i, py, px]]
    want = min(covering, key=lambda i: areas[i]) if covering else None
    _click_pixel(page, "#image-overlay", px, py, (H, W))
    # the objects JSON and the status line update one after the other: wait until both say the same
    state = _wait_state(page, "image-objects", lambda s: (
        f"selected #{s['selected']} " in page.inner_text("#image-status") if s["selected"] is not None
        else "nothing here" in page.inner_text("#image-status")))
    assert state["selected"] == want
    _wait_status(page, "image", "^nothing here" if want is None else rf"^selected #{want} ")
    if want is None:  # nothing there: a + click starts a new object
        want = len(expected)
    _radio(page, "image-mode", "add (+ click)")
    _click_pixel(page, "#image-overlay", 110, 90, (H, W))
    state = _wait_state(page, "image-objects", lambda s: len(s["objects"]) > want and s["objects"][want]["clicks"])
    _wait_status(page, "image", rf"^#{want} {state['objects'][want]['class']}: \d+ px \(IoU score")
    page.screenshot(path=str(screens / "image_refined.png"), full_page=True)
    (cx, cy, label), = state["objects"][want]["clicks"]
    assert label == 1 and abs(cx - 110) <= 1 and abs(cy - 90) <= 1

    predictor = ImagePredictor(gs.predictor.model)  # what the ImagePredictor says for that click
    predictor.set_image(image)
    box = expected.xyxy[want] if want < len(expected) else None
    masks, scores, _ = predictor.predict(point_coords=np.array([[cx, cy]]), point_labels=np.array([1]), box=box,
                                         multimask_output=box is None)
    want_mask = masks[int(np.argmax(scores))] > 0.5
    assert state["objects"][want]["area"] == int(want_mask.sum())
    if want < len(expected):
        assert not np.array_equal(want_mask, expected.mask[want])  # the click changed the mask

    coco_path = _download(page, "image-export-coco", "image-download", tmp_path, "coco")
    from pycocotools.coco import COCO

    assert coco_path.name == "shapes_coco.json"  # named after the uploaded file
    coco = COCO(str(coco_path))
    assert coco.imgs[1]["file_name"] == "shapes.png"
    anns = coco.loadAnns(coco.getAnnIds())
    kept = [o for o in state["objects"] if o["area"] > 0]
    assert len(anns) == len(kept)
    assert [coco.cats[a["category_id"]]["name"] for a in anns] == [o["class"] for o in kept]
    refined = anns[[o["index"] for o in kept].index(want)]
    np.testing.assert_array_equal(mask_utils.decode(refined["segmentation"]).astype(bool), want_mask)
    assert coco.imgs[1]["width"] == W and coco.imgs[1]["height"] == H


def test_image_every_edit_reports_its_status_and_exports_keep_the_file_name(page, tmp_path, screens) -> None:
    """Objects of one class made and edited by hand: each edit's status line says what it did (issue 25)."""
    from gsam_runtime.rle import decode_rle

    name = "my street (1).png"  # the export's file name is sanitised, the COCO file_name is not
    Image.fromarray(shapes_image(H, W)).save(tmp_path / name)
    page.fill("#image-captions textarea", CAPTIONS)  # the classes of hand-made objects
    page.set_input_files("#image-upload input[type=file]", str(tmp_path / name))
    _wait_state(page, "image-objects", lambda s: s["image"]["name"] == name and s["objects"] == [])
    _wait_status(page, "image", re.escape(f"{name} ({W}x{H})"))

    def edit(mode: str | None, x: float, y: float, count: int, index: int, clicks: int) -> dict:
        """A click that prompts object ``index``: the state once it has it and the status gives its area."""
        if mode:
            _radio(page, "image-mode", mode)
        _click_pixel(page, "#image-overlay", x, y, (H, W))
        end = time.monotonic() + 60.0
        while time.monotonic() < end:
            state, status = _state(page, "image-objects"), page.inner_text("#image-status").strip()
            assert "error" not in status.lower(), status
            if (len(state["objects"]) == count and state["selected"] == index
                    and len(state["objects"][index]["clicks"]) == clicks
                    and re.match(rf"#{index} square: {state['objects'][index]['area']} px \(IoU score", status)):
                return state
            time.sleep(0.1)
        raise AssertionError(f"no answer to the click at ({x}, {y}); status {status!r}, state {state}")

    _radio(page, "image-mode", "box (2 clicks)")  # object 0: a drawn box
    _click_pixel(page, "#image-overlay", 10, 10, (H, W))
    _wait_status(page, "image", "^first corner set")
    edit(None, 60, 50, count=1, index=0, clicks=0)
    page.click("#image-new")
    _wait_status(page, "image", "^a \\+ click or a box now starts a new square")
    # object 1, of the same class: + clicks, a - click, a box (the status read "error: The truth value ...")
    edit("add (+ click)", 110, 90, count=2, index=1, clicks=1)
    edit(None, 115, 95, count=2, index=1, clicks=2)
    edit("remove (- click)", 100, 80, count=2, index=1, clicks=3)
    _radio(page, "image-mode", "box (2 clicks)")
    _click_pixel(page, "#image-overlay", 90, 70, (H, W))
    _wait_status(page, "image", "^first corner set")
    state = edit(None, 140, 115, count=2, index=1, clicks=3)
    page.screenshot(path=str(screens / "image_hand_made.png"), full_page=True)

    coco_path = _download(page, "image-export-coco", "image-download", tmp_path, "coco")
    assert coco_path.name == "my_street_1_coco.json"
    coco = json.loads(coco_path.read_text())
    assert [im["file_name"] for im in coco["images"]] == [name]
    kept = [o for o in state["objects"] if o["area"] > 0]
    assert [a["area"] for a in coco["annotations"]] == [o["area"] for o in kept] and kept
    masks = {o["index"]: decode_rle(a["segmentation"]).astype(bool) for o, a in zip(kept, coco["annotations"])}

    # select: a pixel where one object is the smallest under it (the app's rule), object 1 if it has one
    areas = {k: int(m.sum()) for k, m in masks.items()}

    def alone(k: int) -> np.ndarray:  # where k is the smallest object, its border left out
        smaller = [masks[j] for j in masks if (areas[j], j) < (areas[k], k)]
        spot = masks[k] & ~np.any(smaller, axis=0) if smaller else masks[k]
        inner = np.zeros_like(spot)
        inner[1:-1, 1:-1] = spot[1:-1, 1:-1] & spot[:-2, 1:-1] & spot[2:, 1:-1] & spot[1:-1, :-2] & spot[1:-1, 2:]
        return inner if inner.any() else spot

    pick = next(k for k in sorted(masks, reverse=True) if alone(k).any())
    pixels = np.argwhere(alone(pick))
    y, x = pixels[len(pixels) // 2]
    _radio(page, "image-mode", "select")
    _click_pixel(page, "#image-overlay", x, y, (H, W))
    _wait_state(page, "image-objects", lambda s: s["selected"] == pick)
    _wait_status(page, "image", rf"^selected #{pick} square \({areas[pick]} px\)")
    _pick(page, "image-class", "circle")
    page.click("#image-relabel")
    _wait_state(page, "image-objects", lambda s: s["objects"][pick]["class"] == "circle")
    _wait_status(page, "image", "^relabelled as circle")
    page.click("#image-clear")
    _wait_state(page, "image-objects", lambda s: s["objects"][pick]["clicks"] == [])
    _wait_status(page, "image", "^clicks cleared")
    page.click("#image-delete")
    state = _wait_state(page, "image-objects", lambda s: len(s["objects"]) == 1 and s["selected"] is None)
    _wait_status(page, "image", "^deleted")
    assert state["objects"][0]["class"] == "square"
    zip_path = _download(page, "image-export-masks", "image-download", tmp_path, "masks")
    assert zip_path.name == "my_street_1_masks.zip"


def test_a_picked_sample_opens_under_its_name(page) -> None:
    page.locator(".gallery-item").nth(1).click()  # the samples: shapes.png, scene.png
    _wait_state(page, "image-objects", lambda s: s["image"]["name"] == "scene.png" and s["image"]["width"] == 320)
    _wait_status(page, "image", re.escape("scene.png (320x240)"))


def test_upload_over_the_limit_is_refused(page, tmp_path) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (800, 800, 3), dtype=np.uint8)
    big = tmp_path / "big.png"
    Image.fromarray(noise).save(big)
    assert big.stat().st_size > MAX_UPLOAD_MB * 1024 * 1024
    page.set_input_files("#image-upload input[type=file]", str(big))
    toast = page.locator(".toast-body").first
    toast.wait_for(timeout=30_000)
    assert "exceed" in toast.inner_text().lower() or "too large" in toast.inner_text().lower()
    assert page.input_value("#image-objects textarea") == ""  # nothing was opened


# ---------------------------------------------------------------------------- review view
def _review_annotations(ds: Path, name: str) -> tuple[dict, list[dict], dict[int, str]]:
    data = json.loads((ds / "annotations.json").read_text())
    img = next(i for i in data["images"] if i["file_name"] == f"images/{name}")
    return img, [a for a in data["annotations"] if a["image_id"] == img["id"]], \
        {c["id"]: c["name"] for c in data["categories"]}


def test_review_fix_save_and_label_rerun_keeps_it(page, labeled, screens) -> None:
    from gsam_runtime.rle import decode_rle

    gs, images, ds = labeled
    img0, anns0, names = _review_annotations(ds, "im0.png")
    assert len(anns0) >= 2 and "reviewed" not in img0

    page.get_by_role("tab", name="Review").click()
    _pick(page, "review-image", "im0.png")
    state = _wait_state(page, "review-objects", lambda s: s["image"]["name"] == "im0.png")
    assert [o["area"] for o in state["objects"]] == [a["area"] for a in anns0]

    # select: the smallest instance under the centre pixel of instance 0's mask
    masks = [decode_rle(a["segmentation"]).astype(bool) for a in anns0]
    ys, xs = np.nonzero(masks[0])
    y, x = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
    pick = min((int(m.sum()), k) for k, m in enumerate(masks) if m[y, x])[1]
    _click_pixel(page, "#review-overlay", x, y, (96, 128))
    state = _wait_state(page, "review-objects", lambda s: s["selected"] is not None)
    assert state["selected"] == pick
    _wait_status(page, "review", rf"^selected #{pick} ")

    # fix 1: relabel it, save -> the dataset on disk has the new class and the image is marked reviewed
    old_class = state["objects"][pick]["class"]
    new_class = "circle" if old_class == "square" else "square"
    _pick(page, "review-class", new_class)
    page.click("#review-relabel")
    _wait_state(page, "review-objects", lambda s: s["objects"][pick]["class"] == new_class)
    _wait_status(page, "review", f"^relabelled as {new_class}")
    assert "No reviewed images yet" in page.inner_text("#review-metrics")
    page.click("#review-save")
    page.wait_for_function("document.querySelector('#review-status').innerText.includes('saved')", timeout=60_000)
    page.wait_for_function("document.querySelector('#review-metrics').innerText.includes('reviewed image(s)')",
                           timeout=60_000)  # the labels' metrics against the reviewed image
    img, anns, names = _review_annotations(ds, "im0.png")
    assert img["reviewed"] is True
    assert [names[a["category_id"]] for a in anns] == [
        new_class if k == pick else names[a["category_id"]] for k, a in enumerate(anns0)]
    assert [a["area"] for a in anns] == [a["area"] for a in anns0]

    # fix 2: delete it, save -> one instance fewer on disk, the others unchanged
    page.click("#review-delete")
    _wait_state(page, "review-objects", lambda s: len(s["objects"]) == len(anns0) - 1)
    _wait_status(page, "review", "^deleted")
    page.click("#review-save")
    page.wait_for_function("document.querySelector('#review-status').innerText.includes('instance(s); dataset')"
                           " && document.querySelector('#review-status').innerText.includes(' "
                           f"{len(anns0) - 1}" " instance(s)')", timeout=60_000)
    page.screenshot(path=str(screens / "review_saved.png"), full_page=True)
    img, anns, _ = _review_annotations(ds, "im0.png")
    assert [a["segmentation"] for a in anns] == [a["segmentation"] for k, a in enumerate(anns0) if k != pick]
    others = [i for i in json.loads((ds / "annotations.json").read_text())["images"] if i["id"] != img["id"]]
    assert others and all("reviewed" not in i for i in others)

    # a later `label` rerun with the same settings keeps the reviewed record, and the dataset has it
    after = (ds / "annotations.json").read_bytes()
    report = gs.label(images, extension=".png", output_folder=ds, format="coco", progress=False)
    assert (report.skipped, report.labeled) == (3, 0)
    assert (ds / "annotations.json").read_bytes() == after


# ---------------------------------------------------------------------------- video view
def test_video_click_on_frame_k_adds_an_object_from_k_on(page, tmp_path, screens) -> None:
    import av

    n, k = 8, 3
    write_synthetic_video(tmp_path / "clip.mp4", n, size=(96, 128), objects=2, seed=0)
    page.get_by_role("tab", name="Video").click()
    page.set_input_files("#video-upload input[type=file]", str(tmp_path / "clip.mp4"))
    page.wait_for_selector("#video-upload video", timeout=30_000)
    page.fill("#video-captions textarea", CAPTIONS)
    page.click("#video-track")
    state = _wait_state(page, "video-state", lambda s: s["video"]["frames"] == n)
    before = {int(t): v["frames"] for t, v in state["tracks"].items()}

    page.fill("#video-frame input[type=number]", str(k))
    page.press("#video-frame input[type=number]", "Enter")
    page.click("#video-status")  # leave the number box now: its blur is one more frame event
    _wait_state(page, "video-state", lambda s: s["frame"] == k)
    page.click("#video-new")  # nothing selected: the next + click starts a new object
    for attempt in range(3):  # a click that lands while a late answer redraws the frame is lost: click again
        _radio(page, "video-mode", "add (+ click)")
        assert page.locator("#video-mode input[type=radio]:checked").get_attribute("value") == "add (+ click)"
        _click_pixel(page, "#video-overlay", 40, 30, (96, 128))
        try:
            state = _wait_state(page, "video-state", lambda s: s["editing"] is not None, timeout=40.0)
            break
        except AssertionError:
            if attempt == 2:
                raise
    new_id = state["editing"]["track_id"]
    assert new_id not in before and state["editing"]["frame"] == k
    _wait_status(page, "video", rf"^track #{new_id} on frame {k}: \d+ px|^frame {k}$")
    page.click("#video-propagate")
    state = _wait_state(page, "video-state", lambda s: s["editing"] is None)
    _wait_status(page, "video", rf"^track #{new_id} re-tracked from frame {k}: {n - k} frames|^frame {k}$")
    page.screenshot(path=str(screens / "video_propagated.png"), full_page=True)
    assert state["tracks"][str(new_id)]["frames"] == list(range(k, n))  # from frame k on, none before
    assert {int(t): v["frames"] for t, v in state["tracks"].items() if int(t) != new_id} == before

    mp4, coco_path = (_download(page, "video-export", "video-download", tmp_path, name)
                      for name in ("tracked.mp4", "annotations.json"))
    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(stream)) == n
    coco = json.loads(coco_path.read_text())
    assert [im["frame_index"] for im in coco["images"]] == list(range(n))
    frames_of_new = sorted({im["frame_index"] for im in coco["images"] for a in coco["annotations"]
                            if a["image_id"] == im["id"] and a["track_id"] == new_id})
    assert frames_of_new == list(range(k, n))


def test_a_failed_model_load_shows_the_cli_message_in_the_page(browser, tmp_path) -> None:
    from grounded_sam.pipeline.hub import MissingModelsError, check_models, loading_error_message, models_needed

    options = ModelOptions(detector="owlv2", detector_model_id="nobody/not-cached", device="cpu")
    with pytest.raises(MissingModelsError) as direct:  # what the CLI checks first
        check_models(models_needed("owlv2", "nobody/not-cached"))
    message = " ".join(loading_error_message(direct.value).split())
    expected = message.replace("`", "")  # the status renders `x` as code; the banner shows it as a code block
    port = _free_port()
    app_options = AppOptions(port=port)
    demo = build_app(AppModels(options), app_options, tmp_path / "work")
    launch(demo, app_options, block=False)
    try:
        pg = browser.new_page()
        pg.goto(f"http://127.0.0.1:{port}/")
        banner = " ".join(pg.inner_text("#model-status").split())  # said at start-up, before any click
        assert banner.startswith("The models cannot load:") and message in banner
        Image.fromarray(shapes_image(H, W)).save(tmp_path / "shapes.png")
        pg.set_input_files("#image-upload input[type=file]", str(tmp_path / "shapes.png"))
        _wait_state(pg, "image-objects", lambda s: s["image"]["width"] == W)
        pg.fill("#image-captions textarea", CAPTIONS)
        pg.click("#image-detect")
        pg.wait_for_function("document.querySelector('#image-status').innerText.includes('NOT cached')",
                             timeout=120_000)
        assert expected in " ".join(pg.inner_text("#image-status").split())
        pg.close()
    finally:
        demo.close()
