"""Issue 30: the Label Studio ML backend protocol (``grounded-sam serve label-studio``) in-process
(Starlette's TestClient) and on a real uvicorn bound to 127.0.0.1, with the tiny models.

The brush RLE is checked here against a transcription of the SDK's decoder
(``label_studio_sdk.converter.brush.decode_rle``, label-studio-sdk 2.1.2), which cannot be
installed beside our numpy; tests/test_label_studio_real.py runs the SDK itself, and a real Label
Studio, from their own virtual environment.
"""

from __future__ import annotations

import base64
import copy
import functools
import http.server
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from grounded_sam import GroundedSAM
from grounded_sam.serve import BackendOptions, LabelConfigError, LabelStudioBackend, brush_rle, build_server
from grounded_sam.serve.label_config import parse_label_config
from tiny import SAM_IMAGE_SIZE

ONTOLOGY = {"a cat": "Cat", "a dog": "Dog"}


def _config(tag: str, labels: str = '<Label value="Cat" hint="a cat"/><Label value="Dog" hint="a dog"/>',
            extra: str = "") -> str:
    return (f'<View><Image name="image" value="$image"/><{tag} name="tag" toName="image">{labels}</{tag}>'
            f"{extra}</View>")


BRUSH = _config("BrushLabels")
SMART = _config("BrushLabels", extra='<KeyPointLabels name="kp" toName="image" smart="true"><Label value="Cat"/>'
                '</KeyPointLabels><RectangleLabels name="rect" toName="image" smartOnly="true"><Label value="Cat"/>'
                "</RectangleLabels>")


# ---------------------------------------------------------------------------- the SDK's decoder
def sdk_decode_rle(rle: list[int]) -> np.ndarray:
    """``label_studio_sdk.converter.brush.decode_rle`` (2.1.2), transcribed: bytes -> flat uint8 values."""
    bits = "".join(f"{b:08b}" for b in rle)
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        pos += n
        return int(bits[pos - n:pos], 2)

    num, word = read(32), read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8)
    i = 0
    while i < num:
        x = read(1)
        j = i + 1 + read(sizes[read(2)])
        if x:
            out[i:j] = read(word)
            i = j
        else:
            while i < j:
                out[i] = read(word)
                i += 1
    return out


def decode_mask(result: dict) -> np.ndarray:
    h, w = result["original_height"], result["original_width"]
    return sdk_decode_rle(result["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (37, 61), (300, 260)])  # 300x260x4 > 2**16: split runs
def test_brush_rle_decodes_with_the_sdk_algorithm(shape) -> None:
    rng = np.random.default_rng(shape[0])
    for mask in (rng.random(shape) > 0.5, np.ones(shape, bool), np.zeros(shape, bool),
                 np.pad(np.ones((shape[0] // 2, shape[1]), bool), ((shape[0] - shape[0] // 2, 0), (0, 0)))):
        rle = brush_rle(mask)
        assert all(0 <= b < 256 for b in rle)
        assert np.array_equal(sdk_decode_rle(rle).reshape(*shape, 4)[:, :, 3] > 0, mask)
        assert set(sdk_decode_rle(rle).tolist()) <= {0, 255}


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pipeline(tiny_models) -> GroundedSAM:
    owl, sam = tiny_models
    return GroundedSAM(ONTOLOGY, detector=str(owl), segmenter="sam2.1_hiera_tiny", checkpoint=sam,
                       image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0, nms_iou=0.3)


@pytest.fixture
def images(tmp_path) -> Path:
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate([(60, 80), (50, 70)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    return tmp_path


@pytest.fixture
def image_host(images):
    """A plain HTTP server on 127.0.0.1 serving ``images``: the "Label Studio host"."""
    handler = functools.partial(_QuietHandler, directory=str(images))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _client(pipeline, images: Path, token: str | None = None, **options) -> TestClient:
    backend = LabelStudioBackend(pipeline, BackendOptions(model_version="test-v1", local_roots=(images,), **options))
    return TestClient(build_server(backend, token=token))


def _with_ontology(pipeline: GroundedSAM, ontology: dict) -> GroundedSAM:
    from ontologies import CaptionOntology

    copied = copy.copy(pipeline)
    copied.ontology = CaptionOntology(ontology)
    return copied


def _task(path: Path | str, task_id: int = 1) -> dict:
    return {"id": task_id, "data": {"image": str(path)}}


# ---------------------------------------------------------------------------- protocol
def test_health_setup_and_webhook(pipeline, images) -> None:
    client = _client(pipeline, images)
    assert client.get("/health").json()["status"] == "UP"
    answer = client.post("/setup", json={"project": "1.1", "schema": BRUSH, "hostname": "http://ls.test"})
    assert answer.status_code == 200 and answer.json() == {"model_version": "test-v1"}
    assert client.post("/webhook", json={"action": "ANNOTATION_CREATED"}).status_code == 201


def test_a_label_without_caption_is_listed_by_setup(pipeline, images) -> None:
    client = _client(pipeline, images, pipeline_captions=False)
    schema = _config("BrushLabels", '<Label value="Cat" hint="a cat"/><Label value="Tree"/><Label value="Sky"/>')
    answer = client.post("/setup", json={"project": "2.1", "schema": schema})
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    assert len(errors) == 2 and 'label "Tree" has no caption' in errors[0] and 'hint="' in errors[0]
    assert '"Sky"' in errors[1]
    # a class of the server's ontology needs no hint; an alias counts as a caption
    ok = _config("BrushLabels", '<Label value="Dog"/><Label value="Tree" alias="a tree"/>')
    assert parse_label_config(ok, {"Dog": ["a dog"]}).ontology() == {"a dog": "Dog", "a tree": "Tree"}
    with pytest.raises(LabelConfigError, match="no <Image>"):
        parse_label_config('<View><BrushLabels name="b" toName="x"/></View>')


def test_token_guards_every_route_but_health(pipeline, images) -> None:
    client = _client(pipeline, images, token="s3cret")
    payload = {"project": "1.1", "schema": BRUSH}
    assert client.get("/health").status_code == 200
    assert client.post("/setup", json=payload).status_code == 401
    assert client.post("/setup", json=payload, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/setup", json=payload, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    basic = base64.b64encode(b"user:s3cret").decode()
    assert client.post("/setup", json=payload, headers={"Authorization": f"Basic {basic}"}).status_code == 200


# ---------------------------------------------------------------------------- pre-annotation
@pytest.mark.slow  # the tiny models (~10 s)
def test_brush_preannotation_decodes_to_the_pipelines_masks(pipeline, images) -> None:
    client = _client(pipeline, images, pipeline_captions=False)
    answer = client.post("/predict", json={"project": "1.1", "label_config": BRUSH, "tasks": [_task(images / "im0.png")]})
    assert answer.status_code == 200
    body = answer.json()
    assert body["model_version"] == "test-v1" and len(body["results"]) == 1
    prediction = body["results"][0]
    expected = _with_ontology(pipeline, {"a cat": "Cat", "a dog": "Dog"}).predict(np.array(Image.open(images / "im0.png")))
    assert len(expected) > 0 and len(prediction["result"]) == len(expected)
    for result, mask, class_name, score in zip(prediction["result"], expected.mask, expected.data["class_name"],
                                               expected.confidence):
        assert result["type"] == "brushlabels" and result["from_name"] == "tag" and result["to_name"] == "image"
        assert (result["original_width"], result["original_height"]) == (80, 60)
        assert result["value"]["brushlabels"] == [class_name] and result["value"]["format"] == "rle"
        assert result["score"] == pytest.approx(float(score))
        assert np.array_equal(decode_mask(result), mask)
    assert prediction["model_version"] == "test-v1"
    assert prediction["score"] == pytest.approx(float(np.mean(expected.confidence)))


@pytest.mark.slow
def test_rectangle_and_polygon_configs(pipeline, images) -> None:
    client = _client(pipeline, images, pipeline_captions=False)
    image = np.array(Image.open(images / "im1.png"))
    expected = _with_ontology(pipeline, {"a cat": "Cat", "a dog": "Dog"}).predict(image)
    task = [_task(images / "im1.png")]
    rects = client.post("/predict", json={"project": "r", "label_config": _config("RectangleLabels"), "tasks": task})
    results = rects.json()["results"][0]["result"]
    assert len(results) == len(expected) > 0
    for result, box, class_name in zip(results, expected.xyxy, expected.data["class_name"]):
        v = result["value"]
        assert result["type"] == "rectanglelabels" and v["rectanglelabels"] == [class_name]
        got = [v["x"] * 70 / 100, v["y"] * 50 / 100, (v["x"] + v["width"]) * 70 / 100, (v["y"] + v["height"]) * 50 / 100]
        np.testing.assert_allclose(got, box, atol=1e-3)
    polys = client.post("/predict", json={"project": "p", "label_config": _config("PolygonLabels"), "tasks": task})
    results = polys.json()["results"][0]["result"]
    assert len(results) == int(sum(m.any() for m in expected.mask)) > 0
    for result in results:
        points = np.array(result["value"]["points"])
        assert result["type"] == "polygonlabels" and result["value"]["closed"] and len(points) >= 3
        assert (points >= 0).all() and (points <= 100).all()


@pytest.mark.slow
def test_an_image_that_cannot_be_read_fails_that_task_alone(pipeline, images, image_host) -> None:
    client = _client(pipeline, images, pipeline_captions=False)
    assert client.post("/setup", json={"project": "9.1", "schema": BRUSH, "hostname": image_host}).status_code == 200
    tasks = [_task(f"{image_host}/im0.png", 1), _task(f"{image_host}/missing.png", 2),
             _task("http://elsewhere.test/im0.png", 3), _task("/etc/hostname", 4), _task("/data/upload/im1.png", 5)]
    results = client.post("/predict", json={"project": "9.1", "label_config": BRUSH, "tasks": tasks}).json()["results"]
    assert len(results) == 5
    assert results[0]["result"] and "error" not in results[0]
    assert "404" in results[1]["error"] and results[1]["result"] == []
    assert "not on the Label Studio host" in results[2]["error"]
    assert "outside the folders" in results[3]["error"]
    assert "404" in results[4]["error"]  # a relative URL goes to the host given at /setup (it has no /data/upload/)


# ---------------------------------------------------------------------------- smart tools
def _click(x: float, y: float, w: int, h: int, positive: bool = True) -> dict:
    return {"type": "keypointlabels", "from_name": "kp", "to_name": "image", "original_width": w,
            "original_height": h, "is_positive": positive,
            "value": {"x": x * 100 / w, "y": y * 100 / h, "width": 1, "keypointlabels": ["Cat"]}}


@pytest.mark.slow
def test_keypoint_gives_the_image_predictors_mask_and_embeds_once(pipeline, images, monkeypatch) -> None:
    client = _client(pipeline, images, pipeline_captions=False)
    model = pipeline.predictor.model
    encoded = []
    original = model.encode_images
    monkeypatch.setattr(model, "encode_images", lambda *a, **k: encoded.append(1) or original(*a, **k))
    image = np.array(Image.open(images / "im0.png"))

    def smart(task_id: int, path: str, context: list) -> dict:
        payload = {"project": "s", "label_config": SMART, "tasks": [_task(images / path, task_id)],
                   "params": {"context": {"result": context}}}
        answer = client.post("/predict", json=payload).json()["results"][0]
        assert "error" not in answer, answer
        return answer["result"][0]

    first = smart(7, "im0.png", [_click(30, 20, 80, 60)])
    second = smart(7, "im0.png", [_click(30, 20, 80, 60), _click(60, 40, 80, 60, positive=False)])
    assert len(encoded) == 1  # the second click on task 7 ran the decoder only
    assert first["type"] == "brushlabels" and first["from_name"] == "tag" and first["value"]["brushlabels"] == ["Cat"]

    predictor = pipeline.predictor
    predictor.set_image(image)
    masks, iou, _ = predictor.predict(point_coords=np.array([[30.0, 20.0]]), point_labels=np.array([1]),
                                      multimask_output=True)
    assert np.array_equal(decode_mask(first), masks[int(np.argmax(iou))] > 0)
    assert first["score"] == pytest.approx(float(iou.max()))
    masks, iou, _ = predictor.predict(point_coords=np.array([[30.0, 20.0], [60.0, 40.0]]),
                                      point_labels=np.array([1, 0]), multimask_output=False)
    assert np.array_equal(decode_mask(second), masks[0] > 0)

    # pre-annotating another image in between leaves task 7's embedding alone (the pipeline's own
    # predictor embeds that image; the clicks' embeddings are kept apart)
    client.post("/predict", json={"project": "s", "label_config": SMART, "tasks": [_task(images / "im1.png", 9)]})
    encoded.clear()
    again = smart(7, "im0.png", [_click(30, 20, 80, 60)])
    assert encoded == [] and np.array_equal(decode_mask(again), decode_mask(first))

    encoded.clear()
    rect = {"type": "rectanglelabels", "from_name": "rect", "to_name": "image",
            "value": {"x": 10.0, "y": 20.0, "width": 50.0, "height": 40.0, "rectanglelabels": ["Cat"]}}
    boxed = smart(8, "im1.png", [rect])
    assert len(encoded) == 1  # another task: its own embedding
    predictor.set_image(np.array(Image.open(images / "im1.png")))
    masks, _, _ = predictor.predict(box=np.array([7.0, 10.0, 42.0, 30.0]), multimask_output=False)
    assert np.array_equal(decode_mask(boxed), masks[0] > 0)


@pytest.mark.slow
@pytest.mark.parametrize("cache_tasks", [2, 1])
def test_clicks_alternating_between_tasks_encode_each_image_once(pipeline, images, monkeypatch, cache_tasks) -> None:
    backend = LabelStudioBackend(pipeline, BackendOptions(model_version="v", local_roots=(images,),
                                                          pipeline_captions=False, cache_tasks=cache_tasks))
    model = pipeline.predictor.model
    encoded = []
    original = model.encode_images
    monkeypatch.setattr(model, "encode_images", lambda *a, **k: encoded.append(1) or original(*a, **k))
    fetched = []
    load = backend.load_image
    monkeypatch.setattr(backend, "load_image", lambda *a: fetched.append(1) or load(*a))
    sizes = {"im0.png": (80, 60), "im1.png": (70, 50)}
    masks: dict[tuple, np.ndarray] = {}
    for round_ in range(3):
        for task_id, name in ((1, "im0.png"), (2, "im1.png")):
            w, h = sizes[name]
            x, y = (w / 3 + 5 * round_, h / 2)
            payload = {"project": "lru", "label_config": SMART, "tasks": [_task(images / name, task_id)],
                       "params": {"context": {"result": [_click(x, y, w, h)]}}}
            result = backend.predict(payload)["results"][0]
            assert "error" not in result, result
            mask = decode_mask(result["result"][0])
            assert mask.shape == (h, w)
            masks[(task_id, round_)] = mask
    if cache_tasks >= 2:
        assert len(encoded) == len(fetched) == 2  # each task's image downloaded and encoded once
    else:
        assert len(encoded) == len(fetched) == 6  # room for one task: every switch encodes again
    assert len(backend.embeddings) == min(cache_tasks, 2)
    # each answer is the mask the image predictor gives on that image
    predictor = pipeline.predictor
    for (task_id, round_), mask in masks.items():
        name = "im0.png" if task_id == 1 else "im1.png"
        w, h = sizes[name]
        predictor.set_image(np.array(Image.open(images / name)))
        got, iou, _ = predictor.predict(point_coords=np.array([[w / 3 + 5 * round_, h / 2]]), point_labels=np.array([1]),
                                        multimask_output=True)
        assert np.array_equal(mask, got[int(np.argmax(iou))] > 0)


@pytest.mark.slow
def test_a_textarea_caption_runs_the_detector_for_it(pipeline, images) -> None:
    config = _config("BrushLabels", extra='<TextArea name="caption" toName="image" smart="true"/>')
    backend = LabelStudioBackend(pipeline, BackendOptions(local_roots=(images,), pipeline_captions=False))
    image = np.array(Image.open(images / "im0.png"))
    for caption, label in (("a dog", "Dog"), ("DOG", "Dog"), ("a striped animal", "Cat")):  # hint, value, neither
        text = {"type": "textarea", "from_name": "caption", "to_name": "image", "value": {"text": [caption]}}
        payload = {"project": "t", "label_config": config, "tasks": [_task(images / "im0.png")],
                   "params": {"context": {"result": [text]}}}
        results = backend.predict(payload)["results"][0]
        assert "error" not in results, results
        expected = _with_ontology(pipeline, {caption: label}).predict(image)
        assert len(results["result"]) == len(expected) > 0
        for result, mask, score in zip(results["result"], expected.mask, expected.confidence):
            assert result["type"] == "brushlabels" and result["value"]["brushlabels"] == [label]
            assert result["score"] == pytest.approx(float(score))
            assert np.array_equal(decode_mask(result), mask)
    empty = {"type": "textarea", "from_name": "caption", "to_name": "image", "value": {"text": ["  "]}}
    payload = {"project": "t", "label_config": config, "tasks": [_task(images / "im0.png")],
               "params": {"context": {"result": [empty]}}}
    assert "no keypoint, rectangle or text" in backend.predict(payload)["results"][0]["error"]


def test_a_predictor_that_holds_one_image_is_shared_by_the_cache() -> None:
    """Not a PyTorch ImagePredictor (an exported ONNX segmenter holds one image): its entries evict
    one another, and forget() drops them when the pipeline sets another image on it."""
    from grounded_sam.serve import EmbeddingCache

    class OneImage:
        def __init__(self) -> None:
            self.images: list[np.ndarray] = []

        def set_image(self, image: np.ndarray) -> None:
            self.images.append(image)

    shared = OneImage()
    cache = EmbeddingCache(4)
    a, b = np.zeros((5, 7, 3), np.uint8), np.ones((6, 8, 3), np.uint8)
    assert cache.embed("a", shared, a) == (shared, (5, 7))
    assert cache.embed("b", shared, b) == (shared, (6, 8))
    assert cache.get("a") is None and cache.get("b") == (shared, (6, 8)) and len(shared.images) == 2
    cache.forget(shared)
    assert cache.get("b") is None and len(cache) == 0


def test_cache_tasks_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cache_tasks must be at least 1"):
        BackendOptions(cache_tasks=0)


# ---------------------------------------------------------------------------- a real server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_served_by_uvicorn_on_loopback(pipeline, images) -> None:
    import httpx
    import uvicorn

    port = _free_port()
    backend = LabelStudioBackend(pipeline, BackendOptions(model_version="test-v1"))
    server = uvicorn.Server(uvicorn.Config(build_server(backend, token="t"), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health").json()["status"] == "UP"
        answer = httpx.post(f"{base}/setup", json={"project": "1", "schema": BRUSH}, headers={"Authorization": "Bearer t"})
        assert answer.status_code == 200 and answer.json()["model_version"] == "test-v1"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
    assert not thread.is_alive()


# ---------------------------------------------------------------------------- the command
def test_cli_serves_on_loopback_by_default(pipeline, images, monkeypatch) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from grounded_sam.cli import app

    runner = CliRunner()
    answer = runner.invoke(app, ["serve", "label-studio", "--local-root", str(images / "nowhere")])
    assert answer.exit_code == 2 and "--local-root" in answer.output

    built, served = [], {}
    monkeypatch.setattr("grounded_sam.cli.serve.build_pipeline", lambda *a, **k: built.append((a, k)) or pipeline)
    monkeypatch.setattr(uvicorn, "run", lambda app, **k: served.update(k, app=app))
    import grounded_sam.serve

    backends = []

    class Recorded(LabelStudioBackend):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            backends.append(self)

    monkeypatch.setattr(grounded_sam.serve, "LabelStudioBackend", Recorded)
    answer = runner.invoke(app, ["serve", "label-studio", "--local-root", str(images), "--cache-tasks", "3"])
    assert answer.exit_code == 0, answer.output
    assert (served["host"], served["port"]) == ("127.0.0.1", 9090)
    assert backends[0].options.cache_tasks == backends[0].embeddings.size == 3
    assert built[0][0][0] == "object"  # no --prompt: a placeholder; captions come from the labels' hints
    client = TestClient(served["app"])
    schema = _config("BrushLabels", '<Label value="Cat"/>')
    assert client.post("/setup", json={"project": "1", "schema": schema}).status_code == 400  # no hint, no --prompt


def test_a_redirect_off_the_label_studio_host_is_refused(pipeline, images, image_host) -> None:
    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"{image_host}/im0.png")  # another origin: another port
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"http://127.0.0.1:{server.server_address[1]}"
        backend = LabelStudioBackend(pipeline, BackendOptions(hostname=host, access_token="tok"))
        results = backend.predict({"project": "x", "label_config": BRUSH, "tasks": [_task(f"{host}/im0.png")]})
        assert "redirects off the Label Studio host" in results["results"][0]["error"]
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------- cloud URIs
@pytest.mark.slow
def test_s3_uris_are_resolved_through_label_studio(pipeline, images) -> None:
    """A stand-in Label Studio answers /tasks/<id>/resolve/: it streams one file itself, redirects to
    a "presigned" URL on another origin for another, and has no storage for a third."""
    seen: dict[str, str | None] = {}

    class Bucket(http.server.BaseHTTPRequestHandler):  # the presigned URL's server
        def do_GET(self) -> None:
            seen["bucket"] = self.headers.get("Authorization")
            data = (images / "im1.png").read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    class Resolver(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            uri = base64.urlsafe_b64decode(query.removeprefix("fileuri=")).decode()
            seen[uri] = path
            if self.headers.get("Authorization") != "Token ls-token":
                self.send_response(401)
            elif uri == "s3://bucket/proxied.png":
                data = (images / "im0.png").read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            elif uri == "s3://bucket/presigned.png":
                self.send_response(303)
                self.send_header("Location", f"{bucket_url}/signed/im1.png?X-Amz-Signature=abc")
            else:
                self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), h) for h in (Bucket, Resolver)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    bucket_url, host = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
    try:
        backend = LabelStudioBackend(pipeline, BackendOptions(hostname=host, access_token="ls-token",
                                                              pipeline_captions=False))
        tasks = [_task("s3://bucket/proxied.png", 11), _task("s3://bucket/presigned.png", 12),
                 _task("s3://bucket/nowhere.png", 13)]
        results = backend.predict({"project": "c", "label_config": BRUSH, "tasks": tasks})["results"]
        assert seen["s3://bucket/proxied.png"] == "/tasks/11/resolve/"
        assert "error" not in results[0] and "error" not in results[1], results
        for result, name in zip(results[:2], ("im0.png", "im1.png")):
            expected = _with_ontology(pipeline, ONTOLOGY).predict(np.array(Image.open(images / name)))
            assert len(result["result"]) == len(expected) > 0
            assert all(np.array_equal(decode_mask(r), m) for r, m in zip(result["result"], expected.mask))
        assert seen["bucket"] is None  # the presigned URL got no token
        assert "HTTP 404" in results[2]["error"] and "cloud storage" in results[2]["error"]

        wrong = LabelStudioBackend(pipeline, BackendOptions(hostname=host, access_token="wrong",
                                                            pipeline_captions=False))
        result = wrong.predict({"project": "c", "label_config": BRUSH, "tasks": tasks[:1]})["results"][0]
        assert "refused the access token (HTTP 401)" in result["error"]
        closed = LabelStudioBackend(pipeline, BackendOptions(hostname=f"http://127.0.0.1:{_free_port()}",
                                                             pipeline_captions=False))
        result = closed.predict({"project": "c", "label_config": BRUSH, "tasks": tasks[:1]})["results"][0]
        assert "is not reachable" in result["error"]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
