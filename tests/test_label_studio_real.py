"""Issue 30: our ML backend driven by a real Label Studio (1.23.2, its own venv; see
tests/label_studio_server.py) through label-studio-sdk 2.1.2.

Label Studio runs on a loopback port with SQLite in a temporary folder; our backend runs under
uvicorn on another loopback port with the tiny random models, behind a token (Label Studio's
"basic auth" setting). The SDK creates the projects, uploads three generated images (served by
Label Studio at ``/data/upload/...``, which our backend fetches with the token Label Studio gives
it at ``/setup``), connects the backend, runs "Retrieve predictions" and reads the predictions
back; brush masks are decoded by the SDK's own decoder. They must equal what the same pipeline
gives in this process for those images.
"""

from __future__ import annotations

import copy
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grounded_sam import GroundedSAM
from grounded_sam.serve import BackendOptions, LabelStudioBackend, brush_rle, build_server
from grounded_sam.serve.results import polygon_result
from label_studio_server import LabelStudio, free_port, label_studio_python, run_sdk, running_label_studio
from tiny import SAM_IMAGE_SIZE

pytestmark = pytest.mark.slow  # Label Studio: ~7 s to start, ~5 s per SDK step

HINTS = '<Label value="Cat" hint="a cat"/><Label value="Dog" hint="a dog"/>'
BRUSH = (f'<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">{HINTS}</BrushLabels>'
         '<KeyPointLabels name="kp" toName="image" smart="true"><Label value="Cat"/></KeyPointLabels></View>')
POLYGON = f'<View><Image name="image" value="$image"/><PolygonLabels name="poly" toName="image">{HINTS}</PolygonLabels></View>'
SIZES = [(48, 64), (60, 80), (56, 72)]  # (h, w) of the three images
BACKEND_TOKEN = "backend-s3cret"


@pytest.fixture(scope="module")
def pipeline(tiny_models) -> GroundedSAM:
    owl, sam = tiny_models
    return GroundedSAM({"a cat": "Cat", "a dog": "Dog"}, detector=str(owl), segmenter="sam2.1_hiera_tiny",
                       checkpoint=sam, image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0, nms_iou=0.3)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Three PNGs (lossless: Label Studio stores the uploaded bytes) of flat shapes on noise."""
    folder = tmp_path_factory.mktemp("ls-images")
    rng = np.random.default_rng(30)
    paths = []
    for i, (h, w) in enumerate(SIZES):
        image = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        image[h // 4: h // 2, w // 5: w // 2] = rng.integers(120, 255, 3)
        image[h // 2:, w // 2:] = rng.integers(120, 255, 3)
        paths.append(folder / f"shapes{i}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    with running_label_studio(tmp_path_factory.mktemp("label-studio")) as server:
        yield server


@pytest.fixture(scope="module")
def backend_url(pipeline):
    """Our backend under uvicorn on 127.0.0.1; nothing but Label Studio's /setup tells it the host."""
    import uvicorn

    backend = LabelStudioBackend(pipeline, BackendOptions(model_version="test-v1", pipeline_captions=False))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_server(backend, token=BACKEND_TOKEN), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def _project(label_studio: LabelStudio, tmp_path: Path, title: str, config: str, images: list[Path],
             backend_url: str) -> tuple[dict, dict[str, np.ndarray]]:
    out = tmp_path / f"{title}.npz"
    answer = label_studio.sdk("project", {"title": title, "label_config": config, "images": [str(p) for p in images],
                                          "backend_url": backend_url, "backend_token": BACKEND_TOKEN, "out": str(out)})
    with np.load(out) as masks:
        return answer, {k: masks[k] for k in masks.files}


@pytest.fixture(scope="module")
def brush_project(label_studio, backend_url, images, tmp_path_factory):
    return _project(label_studio, tmp_path_factory.mktemp("brush"), "brush", BRUSH, images, backend_url)


def _expected(pipeline: GroundedSAM, image: np.ndarray):
    from ontologies import CaptionOntology

    copied = copy.copy(pipeline)  # the captions the labels' hints give
    copied.ontology = CaptionOntology({"a cat": "Cat", "a dog": "Dog"})
    return copied.predict(image)


def _image_of(task: dict, images: list[Path]) -> tuple[Path, np.ndarray]:
    url = task["data"]["image"]
    assert url.startswith("/data/upload/"), url  # served by Label Studio, not read from our disk
    path = next(p for p in images if url.endswith(p.name))
    return path, np.array(Image.open(path).convert("RGB"))


def test_brush_predictions_through_label_studio_equal_the_pipelines_masks(
        brush_project, pipeline, images, label_studio) -> None:
    answer, masks = brush_project
    assert answer["backend"]["state"] == "CO" and not answer["backend"]["error"], answer["backend"]
    assert answer["backend"]["model_version"] == "test-v1"
    assert len(answer["tasks"]) == 3
    by_task = {p["task"]: p for p in answer["predictions"]}
    assert len(answer["predictions"]) == len(by_task) == 3  # one prediction per task
    partial = 0
    for task in answer["tasks"]:
        path, image = _image_of(task, images)
        prediction = by_task[task["id"]]
        expected = _expected(pipeline, image)
        assert len(expected) > 0 and len(prediction["result"]) == len(expected), path.name
        assert prediction["model_version"] == "test-v1"
        assert prediction["score"] == pytest.approx(float(np.mean(expected.confidence)), abs=1e-6)
        for result, mask, class_name, score in zip(prediction["result"], expected.mask, expected.data["class_name"],
                                                   expected.confidence):
            assert (result["type"], result["from_name"], result["to_name"]) == ("brushlabels", "tag", "image")
            assert (result["original_height"], result["original_width"]) == image.shape[:2]
            assert result["value"]["brushlabels"] == [class_name]
            assert result["score"] == pytest.approx(float(score), abs=1e-6)
            decoded = masks[result["value"]["mask"]]
            assert set(np.unique(decoded).tolist()) <= {0, 255}
            assert np.array_equal(decoded > 0, mask), f"{path.name}: {class_name} mask differs"
            partial += 0 < mask.sum() < mask.size
    assert partial > 0  # not only empty or full masks: the comparison has something to compare

    # the images need the token: our backend could only have fetched them with the one /setup gave
    url = label_studio.url + answer["tasks"][0]["data"]["image"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(url), timeout=10)
    assert refused.value.code in (401, 403)
    request = urllib.request.Request(url, headers={"Authorization": f"Token {label_studio.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_a_keypoint_click_from_label_studio_gives_the_predictors_mask(
        brush_project, pipeline, images, label_studio, tmp_path) -> None:
    answer, _ = brush_project
    task = answer["tasks"][1]
    _, image = _image_of(task, images)
    h, w = image.shape[:2]
    x, y = 0.3 * w, 0.4 * h
    click = {"id": "click1", "type": "keypointlabels", "from_name": "kp", "to_name": "image", "origin": "manual",
             "original_width": w, "original_height": h, "image_rotation": 0, "is_positive": True,
             "value": {"x": x * 100 / w, "y": y * 100 / h, "width": 0.6, "keypointlabels": ["Cat"]}}
    out = tmp_path / "click.npz"
    reply = label_studio.sdk("interactive", {"backend": answer["backend"]["id"], "task": task["id"],
                                             "context": {"result": [click]}, "out": str(out)})
    assert not reply.get("errors"), reply
    result, = reply["data"]["result"]
    assert (result["type"], result["from_name"], result["value"]["brushlabels"]) == ("brushlabels", "tag", ["Cat"])
    predictor = pipeline.predictor
    predictor.set_image(image)
    got, iou, _ = predictor.predict(point_coords=np.array([[x, y]]), point_labels=np.array([1]), multimask_output=True)
    with np.load(out) as masks:
        assert np.array_equal(masks[result["value"]["mask"]] > 0, got[int(np.argmax(iou))] > 0)
    assert result["score"] == pytest.approx(float(iou.max()), abs=1e-6)


def test_an_s3_uri_is_resolved_through_label_studio_with_a_clear_error(brush_project, pipeline, label_studio) -> None:
    """No cloud storage is connected here: Label Studio's resolver answers 404 and the task's error
    says what to do; a wrong token is told apart. The other task of the request is still answered."""
    answer, _ = brush_project
    first, second = answer["tasks"][:2]
    tasks = [{"id": first["id"], "data": {"image": "s3://no-such-bucket/cat.png"}}, second]
    for token, wanted in ((label_studio.token, "HTTP 404 from /tasks/"), ("0" * 40, "refused the access token (HTTP 401)")):
        backend = LabelStudioBackend(pipeline, BackendOptions(hostname=label_studio.url, access_token=token,
                                                              pipeline_captions=False))
        results = backend.predict({"project": "s3", "label_config": BRUSH, "tasks": tasks})["results"]
        assert wanted in results[0]["error"] and results[0]["result"] == []
        if token == label_studio.token:
            assert "cloud storage" in results[0]["error"]
            assert "error" not in results[1] and results[1]["result"]  # /data/upload/... with the same token


def test_a_personal_access_token_fetches_the_images(brush_project, pipeline, label_studio, images) -> None:
    """Label Studio 1.23's default token kind: exchanged at /api/token/refresh/ for a Bearer access
    token. Given to the backend (--label-studio-token), it is used instead of the token /setup sends."""
    answer, _ = brush_project
    pat = label_studio.sdk("personal_token", {})["token"]
    assert pat.count(".") == 2  # a JWT, not a legacy key
    bogus = "0" * 40
    task = answer["tasks"][0]
    _, image = _image_of(task, images)
    for token, works in ((pat, True), (None, False), (pat[:-4] + "AAAA", False)):
        backend = LabelStudioBackend(pipeline, BackendOptions(access_token=token, pipeline_captions=False))
        backend.setup({"project": "pat", "schema": BRUSH, "hostname": label_studio.url, "access_token": bogus})
        result = backend.predict({"project": "pat", "label_config": BRUSH, "tasks": [task]})["results"][0]
        if works:
            assert "error" not in result, result
            assert len(result["result"]) == len(_expected(pipeline, image)) > 0
        elif token is None:
            assert "401" in result["error"]  # the bogus legacy token from /setup
        else:
            assert "refused the personal access token (HTTP 401" in result["error"]


def test_polygon_predictions_through_label_studio(label_studio, backend_url, pipeline, images, tmp_path) -> None:
    answer, _ = _project(label_studio, tmp_path, "polygons", POLYGON, images, backend_url)
    by_task = {p["task"]: p for p in answer["predictions"]}
    assert len(by_task) == 3
    for task in answer["tasks"]:
        _, image = _image_of(task, images)
        expected = _expected(pipeline, image)
        wanted = [polygon_result(m, c, "poly", "image", s)
                  for m, c, s in zip(expected.mask, expected.data["class_name"], expected.confidence)]
        wanted = [r for r in wanted if r is not None]
        got = by_task[task["id"]]["result"]
        assert len(got) == len(wanted) > 0
        for result, want in zip(got, wanted):
            assert result["type"] == "polygonlabels" and result["value"]["closed"]
            assert result["value"]["polygonlabels"] == want["value"]["polygonlabels"]
            np.testing.assert_allclose(result["value"]["points"], want["value"]["points"], atol=1e-9)
            assert result["score"] == pytest.approx(want["score"], abs=1e-6)


def test_brush_rle_is_byte_identical_to_the_sdks_mask2rle(tmp_path) -> None:
    rng = np.random.default_rng(7)
    masks = {"noise": rng.random((37, 61)) > 0.5, "sparse": rng.random((200, 300)) > 0.995,
             "one_pixel": np.ones((1, 1), bool), "empty": np.zeros((64, 48), bool)}
    for name, run in (("run_2e16", 2**14), ("run_2e16_plus_1", 2**14 + 1), ("run_3e16", 3 * 2**14 + 5)):
        mask = np.zeros((300, 260), bool)  # RGBA: a run of k pixels is 4k values
        mask.ravel()[7:7 + run] = True
        masks[name] = mask
    np.savez(tmp_path / "masks.npz", **masks)
    sdk = run_sdk(label_studio_python(), "encode", {"masks": str(tmp_path / "masks.npz")})
    assert sdk.keys() == masks.keys()
    for name, mask in masks.items():
        assert brush_rle(mask) == sdk[name], name


VIDEO = ('<View><Video name="video" value="$video" framerate="10"/><VideoRectangle name="box" toName="video"/>'
         f'<Labels name="videoLabels" toName="video">{HINTS}</Labels></View>')


def test_video_tracks_through_label_studio(label_studio, backend_url, pipeline, tmp_path) -> None:
    """A VideoRectangle project: Label Studio stores our videorectangle regions as they are, and they
    are the tracks of the same pipeline on that video (grounded_sam.serve.video.predict_video)."""
    from grounded_sam.assets.samples import write_synthetic_video
    from grounded_sam.serve.video import parse_video_controls, predict_video
    from ontologies import CaptionOntology

    clip = tmp_path / "clip.mp4"
    write_synthetic_video(clip, num_frames=6, size=(48, 64), fps=10.0)
    answer, _ = _project(label_studio, tmp_path, "video", VIDEO, [clip], backend_url)
    assert answer["backend"]["state"] == "CO" and not answer["backend"]["error"], answer["backend"]
    (task,) = answer["tasks"]
    assert task["data"]["video"].startswith("/data/upload/")  # fetched from Label Studio with its token
    (prediction,) = answer["predictions"]
    copied = copy.copy(pipeline)
    copied.ontology = CaptionOntology({"a cat": "Cat", "a dog": "Dog"})
    expected = predict_video(copied, str(clip), parse_video_controls(VIDEO)[0])
    assert len(expected) > 0 and len(prediction["result"]) == len(expected)
    for got, want in zip(prediction["result"], expected):
        assert (got["type"], got["from_name"], got["to_name"]) == ("videorectangle", "box", "video")
        assert got["value"]["labels"] == want["value"]["labels"]
        assert got["value"]["framesCount"] == 6
        assert [f["frame"] for f in got["value"]["sequence"]] == [f["frame"] for f in want["value"]["sequence"]]
        for g, w in zip(got["value"]["sequence"], want["value"]["sequence"]):
            assert [g[k] for k in ("x", "y", "width", "height")] == pytest.approx([w[k] for k in ("x", "y", "width", "height")])
            assert g["enabled"] == w["enabled"]
        assert got["score"] == pytest.approx(want["score"], abs=1e-6)
