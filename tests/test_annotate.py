"""grounded_sam.export.annotate: annotated images (RGB in, RGB out) and H.264 MP4 through PyAV."""

from __future__ import annotations

import av
import numpy as np
import pytest
import supervision as sv

from grounded_sam.export.annotate import VideoWriter, annotate_image, label_texts, plot

H, W = 60, 80
CLASSES = ["dog", "cat"]


def _detections(tracker: bool = False) -> sv.Detections:
    m = np.zeros((2, H, W), dtype=bool)
    m[0, 10:30, 10:40] = True
    m[1, 35:55, 45:75] = True
    return sv.Detections(
        xyxy=np.array([[10, 10, 40, 30], [45, 35, 75, 55]], dtype=np.float32),
        mask=m,
        confidence=np.array([0.87, 0.5], dtype=np.float32),
        class_id=np.array([0, 1]),
        tracker_id=np.array([3, 4]) if tracker else None,
    )


def test_annotate_image_shape_and_changes():
    img = np.full((H, W, 3), 100, dtype=np.uint8)
    out = annotate_image(img, _detections(), CLASSES)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out != img).any()
    np.testing.assert_array_equal(img, 100)  # input untouched
    assert (out[0:5, 0:5] == 100).all()  # far from every detection


def test_mask_colour_is_rgb_not_bgr():
    img = np.zeros((H, W, 3), dtype=np.uint8)
    d = _detections()
    out = annotate_image(img, d, CLASSES, boxes=False, labels=False, opacity=1.0)
    palette = sv.ColorPalette.DEFAULT
    np.testing.assert_array_equal(out[20, 20], palette.by_idx(0).as_rgb())
    np.testing.assert_array_equal(out[45, 60], palette.by_idx(1).as_rgb())
    assert palette.by_idx(0).as_rgb() != palette.by_idx(0).as_bgr()  # the check can tell them apart


def test_empty_and_mismatched():
    img = np.full((H, W, 3), 7, dtype=np.uint8)
    out = annotate_image(img, sv.Detections.empty(), CLASSES)
    np.testing.assert_array_equal(out, img)
    assert out is not img
    with pytest.raises(ValueError, match="image is"):
        annotate_image(np.zeros((H + 2, W, 3), np.uint8), _detections(), CLASSES)


def test_label_texts():
    d = _detections()
    assert label_texts(d, CLASSES) == ["dog 0.87", "cat 0.50"]
    assert label_texts(_detections(tracker=True), CLASSES) == ["#3 dog 0.87", "#4 cat 0.50"]
    d.data["class_name"] = np.array(["hound", "kitty"])
    assert label_texts(d) == ["hound 0.87", "kitty 0.50"]
    d.confidence = None
    d.data = {}
    assert label_texts(d) == ["0", "1"]


def test_plot_raw_and_shown(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    img = np.full((H, W, 3), 50, dtype=np.uint8)
    raw = plot(img, _detections(), CLASSES, raw=True)
    assert raw.shape == img.shape
    shown = []
    monkeypatch.setattr(sv, "plot_image", lambda image, size: shown.append((image.shape, size)))
    assert plot(img, _detections(), CLASSES) is None
    assert shown == [((H, W, 3), (8, 8))]


def _frames(n: int, h: int, w: int) -> list[np.ndarray]:
    frames = []
    for t in range(n):
        f = np.zeros((h, w, 3), dtype=np.uint8)
        f[..., 0] = 220  # red background: catches swapped channels
        f[10:20, t : t + 10] = 255
        frames.append(f)
    return frames


def test_video_writer_h264(tmp_path):
    path = tmp_path / "out.mp4"
    frames = _frames(12, 48, 64)
    with VideoWriter(path, fps=24) as vw:
        for f in frames:
            vw.write(f)
    assert vw.codec == "libx264" and vw.frames_written == 12
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert s.codec_context.pix_fmt == "yuv420p"
        assert (s.width, s.height) == (64, 48)
        assert s.average_rate == 24
        decoded = [fr.to_ndarray(format="rgb24") for fr in c.decode(s)]
    assert len(decoded) == 12
    err = np.abs(decoded[5].astype(int) - frames[5]).mean()
    assert err < 8
    assert decoded[0][40, 5, 0] > 180 and decoded[0][40, 5, 2] < 60  # still red, not blue


def test_video_writer_odd_size_and_errors(tmp_path):
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, fps=10) as vw:
        for f in _frames(3, 45, 63):
            vw.write(f)
        with pytest.raises(ValueError, match="45x63"):
            vw.write(np.zeros((46, 63, 3), np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            vw.write(np.zeros((45, 63, 3), np.float32))
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert (s.width, s.height) == (64, 46)
        assert sum(1 for _ in c.decode(s)) == 3
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "x.mp4", fps=0)
    with VideoWriter(tmp_path / "none.mp4") as vw:
        pass
    assert not (tmp_path / "none.mp4").exists()


def test_video_writer_falls_back_without_libx264(tmp_path, monkeypatch):
    real = av.codec.Codec

    def fake_codec(name, mode="r"):
        if name == "libx264":
            raise av.codec.codec.UnknownCodecError(name)
        return real(name, mode)

    monkeypatch.setattr(av.codec, "Codec", fake_codec)
    with pytest.warns(RuntimeWarning, match="libx264"):
        vw = VideoWriter(tmp_path / "fallback.mp4", fps=5)
    assert vw.codec == "mpeg4"
    with vw:
        for f in _frames(4, 32, 32):
            vw.write(f)
    with av.open(str(tmp_path / "fallback.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "mpeg4"
        assert sum(1 for _ in c.decode(video=0)) == 4
