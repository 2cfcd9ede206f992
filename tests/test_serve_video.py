"""Label Studio video tasks: VideoRectangle configs and tracks as videorectangle regions."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from grounded_sam.serve.video import parse_video_controls, track_regions, video_ontology

VIDEO_CONFIG = """
<View>
  <Video name="video" value="$clip" framerate="10"/>
  <VideoRectangle name="box" toName="video"/>
  <Labels name="videoLabels" toName="video">
    <Label value="Car" hint="a car"/>
    <Label value="Person"/>
  </Labels>
</View>
"""


def test_parse_video_controls_with_hints_and_server_captions() -> None:
    controls, problems = parse_video_controls(VIDEO_CONFIG, {"Person": ["a person", "a pedestrian"]})
    assert problems == []
    (c,) = controls
    assert (c.name, c.to_name, c.data_key, c.labels_from, c.labels) == ("box", "video", "clip", "videoLabels",
                                                                       ("Car", "Person"))
    assert video_ontology(controls) == {"a car": "Car", "a person": "Person", "a pedestrian": "Person"}


def test_parse_video_controls_problems() -> None:
    _, problems = parse_video_controls(VIDEO_CONFIG)
    assert len(problems) == 1 and 'label "Person" has no caption' in problems[0]
    no_labels = '<View><Video name="v" value="$v"/><VideoRectangle name="b" toName="v"/></View>'
    controls, problems = parse_video_controls(no_labels)
    assert controls == [] and "no <Labels" in problems[0]
    assert "not valid XML" in parse_video_controls("<View>")[1][0]
    image_only = '<View><Image name="i" value="$i"/><RectangleLabels name="r" toName="i"/></View>'
    assert parse_video_controls(image_only) == ([], [])


def _det(boxes, tids, classes, scores, hw=(100, 200), masks=None) -> sv.Detections:
    n = len(boxes)
    return sv.Detections(xyxy=np.array(boxes, np.float32).reshape(n, 4), tracker_id=np.array(tids, int),
                         class_id=np.array(classes, int), confidence=np.array(scores, np.float32), mask=masks)


def test_track_regions_keyframes_gaps_and_labels() -> None:
    controls, _ = parse_video_controls(VIDEO_CONFIG, {"Person": ["a person"]})
    classes = ["Car", "Person", "Dog"]
    mask = np.zeros((1, 100, 200), bool)
    mask[0, 10:30, 40:90] = True  # tight box (40, 10, 90, 30), inside the tracker's box
    frames = [
        (0, _det([[20, 10, 60, 50], [0, 0, 10, 10]], [1, 9], [0, 2], [0.9, 0.8])),  # track 9 is a Dog: left out
        (1, _det([[22, 10, 62, 50], [100, 50, 150, 100]], [1, 2], [0, 1], [0.7, 0.6])),
        (2, _det([[100, 50, 150, 100]], [2], [1], [0.5])),
        (3, _det([[30, 5, 95, 40]], [1], [0], [0.5], masks=mask)),  # track 1 is back after a gap
        (4, _det(np.zeros((0, 4)), [], [], [])),
    ]
    regions = track_regions(iter(frames), classes, controls, (100, 200), fps=10.0)
    assert [r["id"] for r in regions] == ["box-track1", "box-track2"]
    car, person = regions
    assert car["type"] == "videorectangle" and car["from_name"] == "box" and car["to_name"] == "video"
    assert car["value"]["labels"] == ["Car"] and person["value"]["labels"] == ["Person"]
    assert car["value"]["framesCount"] == 5 and car["value"]["duration"] == pytest.approx(0.5)
    seq = car["value"]["sequence"]
    assert [f["frame"] for f in seq] == [1, 2, 4]
    assert [f["enabled"] for f in seq] == [True, False, False]  # gap after frame 2; the last ends the lifespan
    assert seq[0]["x"] == pytest.approx(10.0) and seq[0]["y"] == pytest.approx(10.0)
    assert seq[0]["width"] == pytest.approx(20.0) and seq[0]["height"] == pytest.approx(40.0)
    assert seq[1]["time"] == pytest.approx(0.1)
    # frame 4 (index 3) has a mask: its tight box, not the tracker's box
    assert (seq[2]["x"], seq[2]["y"], seq[2]["width"], seq[2]["height"]) == pytest.approx((20.0, 10.0, 25.0, 20.0))
    assert car["score"] == pytest.approx(np.mean([0.9, 0.7, 0.5]))
    assert [f["enabled"] for f in person["value"]["sequence"]] == [True, False]


@pytest.mark.slow
def test_predict_video_equals_the_trackers_frames(tiny_models, tmp_path) -> None:
    """Each region is one track of GroundedSAM.track: a keyframe per frame it is present in, its box the
    mask's tight box in percent of the frame, its score the mean of the track's scores."""
    from grounded_sam import GroundedSAM
    from grounded_sam.assets.samples import write_synthetic_video
    from grounded_sam.serve.video import predict_video
    from tiny import SAM_IMAGE_SIZE

    owl, sam = tiny_models
    pipe = GroundedSAM({"a car": "Car", "a person": "Person"}, detector=str(owl), segmenter="sam2.1_hiera_tiny",
                       checkpoint=sam, image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0, nms_iou=0.1)
    video = tmp_path / "clip.mp4"
    write_synthetic_video(video, num_frames=6, size=(48, 64), fps=12.0)
    controls, _ = parse_video_controls(VIDEO_CONFIG, {"Person": ["a person"]})
    regions = predict_video(pipe, str(video), controls, redetect_every=3)
    expected: dict[int, list[tuple[int, tuple[float, ...], float]]] = {}
    for t, det in pipe.track(str(video), redetect_every=3):
        for k in range(len(det)):
            ys, xs = np.nonzero(det.mask[k])
            box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else tuple(det.xyxy[k])
            pct = (100 * box[0] / 64, 100 * box[1] / 48, 100 * (box[2] - box[0]) / 64, 100 * (box[3] - box[1]) / 48)
            expected.setdefault(int(det.tracker_id[k]), []).append((t + 1, pct, float(det.confidence[k])))
    assert expected and len(regions) == len(expected)
    for region in regions:
        tid = int(region["id"].rsplit("track", 1)[1])
        seq = region["value"]["sequence"]
        assert [f["frame"] for f in seq] == [e[0] for e in expected[tid]]
        for f, (_, pct, _) in zip(seq, expected[tid]):
            assert (f["x"], f["y"], f["width"], f["height"]) == pytest.approx(pct)
            assert f["time"] == pytest.approx((f["frame"] - 1) / 12.0)
        assert region["score"] == pytest.approx(np.mean([e[2] for e in expected[tid]]))
        assert region["value"]["framesCount"] == 6 and region["value"]["duration"] == pytest.approx(0.5)
        assert region["value"]["labels"][0] in ("Car", "Person")


@pytest.mark.slow
def test_a_video_task_is_tracked_through_the_backend(tiny_models, tmp_path) -> None:
    """A VideoRectangle project: /setup accepts it (no <Image> needed), /predict fetches the video from the
    Label Studio host (with its token) and answers predict_video's regions; a video outside the host or
    the local roots fails that task alone; a label without a caption is an error at /setup."""
    import functools
    import http.server
    import threading

    from starlette.testclient import TestClient

    from grounded_sam import GroundedSAM
    from grounded_sam.assets.samples import write_synthetic_video
    from grounded_sam.serve.app import build_server
    from grounded_sam.serve.backend import BackendOptions, LabelStudioBackend
    from grounded_sam.serve.video import predict_video
    from tiny import SAM_IMAGE_SIZE

    owl, sam = tiny_models
    pipe = GroundedSAM({"a car": "Car", "a person": "Person"}, detector=str(owl), segmenter="sam2.1_hiera_tiny",
                       checkpoint=sam, image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0, nms_iou=0.1)
    folder = tmp_path / "host"
    folder.mkdir()
    write_synthetic_video(folder / "clip.mp4", num_frames=5, size=(48, 64), fps=10.0)
    seen_auth: list[str | None] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen_auth.append(self.headers.get("Authorization"))
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        backend = LabelStudioBackend(pipe, BackendOptions(model_version="v", hostname=host, access_token="a" * 40,
                                                          track_options={"redetect_every": 2}))
        client = TestClient(build_server(backend))
        bike = VIDEO_CONFIG.replace('<Label value="Person"/>', '<Label value="Person"/><Label value="Bike"/>')
        refused = client.post("/setup", json={"project": "7", "schema": bike})
        assert refused.status_code == 400 and 'label "Bike" has no caption' in refused.json()["errors"][0]
        config = VIDEO_CONFIG  # Person's caption comes from the server's ontology
        assert client.post("/setup", json={"project": "7", "schema": config}).status_code == 200
        tasks = [{"id": 1, "data": {"clip": f"{host}/clip.mp4"}}, {"id": 2, "data": {"clip": "http://example.com/clip.mp4"}}]
        answer = client.post("/predict", json={"project": "7", "label_config": config, "tasks": tasks}).json()
    finally:
        server.shutdown()
        server.server_close()
    first, second = answer["results"]
    assert seen_auth == [f"Token {'a' * 40}"]
    controls, _ = parse_video_controls(config, {"Person": ["a person"]})
    expected = predict_video(pipe, str(folder / "clip.mp4"), controls, redetect_every=2)
    assert first["result"] == expected and len(expected) > 0
    assert first["score"] == pytest.approx(np.mean([r["score"] for r in expected]))
    assert second["result"] == [] and "not on the Label Studio host" in second["error"]
