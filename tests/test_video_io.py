"""Video input: lazy bounded decoding of files / folders / lists / iterators, reference preprocessing."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segmenter.video import decoder as video_file
from grounded_sam.assets.samples import SyntheticScene, write_synthetic_video
from segmenter.modeling.transforms import IMAGENET_MEAN, IMAGENET_STD
from segmenter.video.frames import (
    ArraySource,
    FolderSource,
    FrameDroppedError,
    IteratorSource,
    open_video,
    preprocess_video_frame,
)

ROOT = Path(__file__).resolve().parents[1]
SIZE = (96, 128)
NUM = 200


def _digest(frame: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(frame).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, list[str]]:
    """200-frame H.264 file with B-frames and a 30-frame GOP, its boxes, and per-frame digests."""
    path = tmp_path_factory.mktemp("video") / "moving.mp4"
    boxes = write_synthetic_video(path, NUM, size=SIZE, objects=3, seed=1, keyframe_interval=30, bframes=2)
    with open_video(path) as src:
        digests = [_digest(f) for f in src]
    return path, boxes, digests


def test_file_roundtrip(mp4: tuple[Path, np.ndarray, list[str]]) -> None:
    path, boxes, digests = mp4
    scene = SyntheticScene(SIZE, objects=3, seed=1)
    assert boxes.shape == (NUM, 3, 4)
    assert np.array_equal(boxes[17], scene.boxes(17))
    masks = scene.masks(17)
    ys, xs = np.nonzero(masks[0])
    assert boxes[17, 0].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
    assert len(set(digests)) > NUM // 2  # the objects move
    with open_video(path) as src:
        assert src.backend == "pyav"
        assert (src.num_frames, src.height, src.width) == (NUM, *SIZE)
        assert src.fps == pytest.approx(24.0)
        for t in (0, 17, 101, NUM - 1):
            frame = src.get(t)
            assert frame.shape == (*SIZE, 3) and frame.dtype == np.uint8
            err = np.abs(frame.astype(np.int16) - scene.frame(t)).mean()
            assert err < 6  # lossy coding, but the right frame ...
            assert err < np.abs(frame.astype(np.int16) - scene.frame(t + 5)).mean()  # ... in order


def test_sequential_decoding_decodes_each_frame_once(mp4: tuple[Path, np.ndarray, list[str]]) -> None:
    path, _, digests = mp4
    with open_video(path, cache_size=4) as src:
        for t in range(NUM):
            assert _digest(src.get(t)) == digests[t]
            assert src.decoded_frames == t + 1
            if t:
                src.get(t - 1)  # the previous frame is still cached
        assert src.decoded_frames == NUM
        assert len(src._cache) <= 4


def test_first_access_is_lazy(mp4: tuple[Path, np.ndarray, list[str]]) -> None:
    path, _, digests = mp4
    with open_video(path) as src:
        assert _digest(src.get(5)) == digests[5]
        assert src.decoded_frames <= 6


def test_backward_and_random_access_match_sequential(mp4: tuple[Path, np.ndarray, list[str]]) -> None:
    path, _, digests = mp4
    cache = 8
    with open_video(path, cache_size=cache) as src:
        src.get(NUM - 1)
        start = src.decoded_frames
        for t in reversed(range(NUM)):  # reverse tracking
            assert _digest(src.get(t)) == digests[t], t
            assert len(src._cache) <= cache
        # one seek per `cache` frames, each decoding at most a GOP (30) plus the window
        assert src.decoded_frames - start <= (NUM // cache + 1) * (30 + cache + 2)
        rng = np.random.default_rng(0)
        for t in rng.permutation(NUM)[:40]:
            assert _digest(src.get(int(t))) == digests[t], t
        with pytest.raises(IndexError, match=f"frame index {NUM} is out of range"):
            src.get(NUM)
        with pytest.raises(IndexError, match="negative"):
            src.get(-1)


def test_container_without_frame_count(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    write_synthetic_video(path, 30, size=(64, 64), keyframe_interval=10)
    with open_video(path, cache_size=4) as src:
        assert src.num_frames is None  # Matroska stores no frame count
        src.get(12)
        assert src.count_frames() == 30 and src.num_frames == 30  # decoded by a second reader ...
        assert np.array_equal(src.get(13), src.get(13)) and src.decoded_frames == 14  # ... not this one
    with open_video(path, cache_size=4) as src:
        frames = [f.copy() for f in src]
        assert len(frames) == 30 and src.num_frames == 30  # learnt at the end
        with pytest.raises(IndexError, match="has 30 frames"):
            src.get(30)
        assert np.array_equal(src.get(3), frames[3])


def test_bytes_input(mp4: tuple[Path, np.ndarray, list[str]]) -> None:
    path, _, digests = mp4
    with open_video(path.read_bytes()) as src:
        assert src.num_frames == NUM
        assert _digest(src.get(150)) == digests[150]
        assert _digest(src.get(10)) == digests[10]


def test_opencv_fallback(mp4: tuple[Path, np.ndarray, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    path, _, _ = mp4

    def refuse(video: object) -> None:
        raise ValueError("PyAV refused")

    with open_video(path) as av_src:
        expected = {t: av_src.get(t).copy() for t in (0, 120, 40, 39)}
    monkeypatch.setattr(video_file, "_PyAVReader", refuse)
    with open_video(path, cache_size=4) as src:
        assert src.backend == "opencv" and src.num_frames == NUM
        for t, frame in expected.items():  # forward, then backwards (reopens)
            assert np.abs(src.get(t).astype(np.int16) - frame).mean() < 1.0


def _write_frames(folder: Path, names: list[str], size: tuple[int, int] = (8, 12), step: int = 10) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((*size, 3), step * i, np.uint8)).save(folder / name)


def _values(src: FolderSource) -> list[int]:
    return [int(src.get(i)[0, 0, 0]) // 10 for i in range(src.num_frames)]


def test_folder_ordering(tmp_path: Path) -> None:
    numeric = [f"{i}.png" for i in range(12)]  # written in numeric order: value = 10 * index
    _write_frames(tmp_path / "a", numeric)
    (tmp_path / "a" / "notes.txt").write_text("not a frame")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"")
    (tmp_path / "a" / "sub").mkdir()
    src = open_video(tmp_path / "a")
    assert isinstance(src, FolderSource) and src.num_frames == 12
    assert [p.name for p in src.paths][8:] == ["8.png", "9.png", "10.png", "11.png"]
    assert _values(src) == list(range(12))

    natural = ["frame_1.jpg", "frame_2.JPG", "frame_10.jpeg", "frame_100.bmp"]
    _write_frames(tmp_path / "b", natural)
    src = open_video(str(tmp_path / "b"))
    assert [p.name for p in src.paths] == natural
    with pytest.raises(IndexError, match="has 4 frames"):
        src.get(4)


def test_folder_is_random_access_and_cached(tmp_path: Path) -> None:
    _write_frames(tmp_path, [f"{i:05d}.png" for i in range(40)], step=5)
    with open_video(tmp_path, cache_size=3) as src:
        assert (src.height, src.width) == (8, 12)
        assert [int(src.get(i)[0, 0, 0]) // 5 for i in (39, 0, 20, 21)] == [39, 0, 20, 21]
        assert len(src._cache) == 3


def test_list_sources() -> None:
    scene = SyntheticScene((32, 48), objects=2)
    frames = [scene.frame(t) for t in range(6)]
    src = open_video(frames)
    assert isinstance(src, ArraySource) and src.num_frames == 6
    assert src.get(4) is frames[4]  # no copy
    assert (src.height, src.width) == (32, 48)
    pil = open_video(tuple(Image.fromarray(f) for f in frames))
    assert np.array_equal(pil.get(5), frames[5])
    stacked = open_video(np.stack(frames))
    assert np.array_equal(stacked.get(2), frames[2])
    with pytest.raises(IndexError, match="has 6 frames"):
        stacked.get(6)


def test_iterator_source_is_forward_only_with_a_window() -> None:
    scene = SyntheticScene((32, 48), objects=2)
    pulled = []

    def live():  # noqa: ANN202
        for t in range(20):
            pulled.append(t)
            yield scene.frame(t)

    src = open_video(live(), cache_size=4)
    assert isinstance(src, IteratorSource)
    assert src.num_frames is None and pulled == [0]
    assert np.array_equal(src.get(9), scene.frame(9)) and pulled[-1] == 9
    assert np.array_equal(src.get(7), scene.frame(7))  # inside the window
    with pytest.raises(FrameDroppedError, match="frame 2 .* forward-only"):
        src.get(2)
    with pytest.raises(FrameDroppedError):
        list(src)  # iterating starts at frame 0, long gone
    with pytest.raises(ValueError, match="unknown until"):
        src.count_frames()
    src2 = open_video(scene.frames(5))
    assert sum(1 for _ in src2) == 5 and src2.num_frames == 5
    with pytest.raises(IndexError, match="has 5 frames"):
        src2.get(5)
    gen = live()
    with open_video(gen):
        pass
    with pytest.raises(StopIteration):
        next(gen)  # closed with the source


def test_preprocessing_matches_the_reference_jpeg_loader(tmp_path: Path) -> None:
    from sam2.utils.misc import load_video_frames_from_jpg_images

    scene = SyntheticScene((90, 130), objects=3, seed=2)
    rng = np.random.default_rng(0)
    for t in range(11):  # "10.jpg" must come after "9.jpg" for the comparison to hold
        noisy = scene.frame(t).astype(np.int16) + rng.integers(-30, 30, (90, 130, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(tmp_path / f"{t}.jpg", quality=85)
    for size in (64, 256):
        ref, h, w = load_video_frames_from_jpg_images(
            str(tmp_path), size, offload_video_to_cpu=True, compute_device=torch.device("cpu")
        )
        with open_video(tmp_path) as src:
            ours = torch.stack([preprocess_video_frame(src.get(i), size) for i in range(src.num_frames)])
            assert (src.height, src.width) == (h, w)
        assert ours.dtype == torch.float32 and ours.shape == ref.shape
        assert torch.equal(ours, ref), (ours - ref).abs().max()


def test_preprocessing_of_arrays_matches_the_reference_arithmetic(tmp_path: Path) -> None:
    from sam2.utils.misc import _load_img_as_tensor

    rng = np.random.default_rng(1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    for shape in ((37, 53, 3), (300, 200, 3)):
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(frame).save(tmp_path / "f.png")  # lossless: the reference sees the same pixels
        img, h, w = _load_img_as_tensor(str(tmp_path / "f.png"), 96)
        ref = torch.zeros(3, 96, 96)
        ref[:] = img
        ref -= mean
        ref /= std
        ours = preprocess_video_frame(frame, 96)
        assert (h, w) == shape[:2]
        assert torch.equal(ours, ref), (ours - ref).abs().max()
        restated = np.array(Image.fromarray(frame).resize((96, 96))) / 255.0
        restated = (torch.from_numpy(restated).permute(2, 0, 1).float() - mean) / std
        assert torch.equal(ours, restated)
    with pytest.raises(ValueError, match="image_size"):
        preprocess_video_frame(frame, 0)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_video_frame(frame.astype(np.float32), 64)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frame list is empty"):
        open_video([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no frame images .* found in folder .*empty"):
        open_video(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        open_video(tmp_path / "missing.mp4")
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="zero.mp4"):
        open_video(tmp_path / "zero.mp4")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(ValueError, match="cannot read video file .*text.mp4"):
        open_video(tmp_path / "text.mp4")
    with pytest.raises(ValueError, match="iterator yielded no frames"):
        open_video(iter([]))
    with pytest.raises(ValueError, match="single image"):
        _write_frames(tmp_path / "one", ["0.png"])
        open_video(tmp_path / "one" / "0.png")
    with pytest.raises(ValueError, match="Tensor"):
        open_video(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))


def test_bad_frames_are_named_by_index(tmp_path: Path) -> None:
    good = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="frame 2 .* is 8x16 .* frame 0 is 16x16"):
        open_video([good, good, np.zeros((8, 16, 3), np.uint8)])
    with pytest.raises(ValueError, match="frame 1 .* uint8"):
        open_video([good, good.astype(np.float32)])
    with pytest.raises(ValueError, match="frame 1 .* shape"):
        open_video([good, good[..., 0]])
    src = open_video(iter([good, good, good[:8]]))  # learnt on reading
    src.get(1)
    with pytest.raises(ValueError, match="frame 2 .* is 8x16"):
        src.get(2)
    _write_frames(tmp_path / "mixed", ["0.png", "1.png"])
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "mixed" / "2.png")
    (tmp_path / "mixed" / "3.png").write_text("broken")
    folder = open_video(tmp_path / "mixed")
    with pytest.raises(ValueError, match="frame 2 .* is 5x5"):
        folder.get(2)
    with pytest.raises(ValueError, match=r"cannot read frame 3 \(.*3.png\)"):
        folder.get(3)


_MEMORY_PROBE = textwrap.dedent(
    """
    import resource, sys
    from segmenter.video.frames import open_video, preprocess_video_frame
    path, n = sys.argv[1], int(sys.argv[2])
    with open_video(path) as src:
        preprocess_video_frame(src.get(0), 256)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for i in range(n):
            preprocess_video_frame(src.get(i), 256)
        assert src.decoded_frames == n
        print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


@pytest.mark.slow
def test_decoding_memory_does_not_grow_with_length(tmp_path: Path) -> None:
    path = tmp_path / "hd.mp4"
    h, w = 720, 1280
    write_synthetic_video(path, 300, size=(h, w), keyframe_interval=60)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    probes = {
        n: subprocess.Popen(
            [sys.executable, "-c", _MEMORY_PROBE, str(path), str(n)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for n in (50, 300)
    }
    peaks = {}
    for n, probe in probes.items():
        out, err = probe.communicate(timeout=300)
        assert probe.returncode == 0, err
        base, peak = (int(v) for v in out.split())  # KiB
        peaks[n] = (base, peak)
    (base50, peak50), (base300, peak300) = peaks[50], peaks[300]
    assert peak300 < 1.2 * peak50, peaks
    frame_kib = h * w * 3 / 1024
    # the growth past start-up may differ by allocator noise, not by frames kept
    assert (peak300 - base300) - (peak50 - base50) < 10 * frame_kib, peaks


def test_frame_folders_use_the_image_decoder(tmp_path: Path) -> None:
    """Frames of a folder decode like every image of the project: RGB files as PIL reads them,
    EXIF-rotated ones upright, transparent ones over white."""
    import io

    rng = np.random.default_rng(3)
    upright = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(upright).save(folder / "0.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored a quarter turn left; displayed upright
    Image.fromarray(np.ascontiguousarray(np.rot90(upright))).save(folder / "1.png", exif=exif)
    Image.fromarray(np.dstack([upright, np.zeros((12, 20), np.uint8)]), "RGBA").save(folder / "2.png")
    with open_video(folder) as src:
        with Image.open(folder / "0.jpg") as jpg:
            assert np.array_equal(src.get(0), np.array(jpg.convert("RGB")))
        assert np.array_equal(src.get(1), upright)
        assert np.array_equal(src.get(2), np.full_like(upright, 255))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.rot90(upright))).save(buf, format="PNG", exif=exif)
    with open_video([upright, Image.open(buf)]) as src:  # PIL frames in a list: decoded when read
        assert np.array_equal(src.get(1), upright)
