"""segmenter.export (ONNX video): streams, boxes, masks and removals vs our PyTorch predictor, and
GroundedSAM.track on an exported folder.

The suite's shared tiny export (128 px, image + video parts; object scores spread around 0, so
presence changes). Scenarios run the same verbs on :class:`segmenter.VideoPredictor` and on
:class:`segmenter.export.OnnxVideoPredictor` and compare every output: logits within ``TOL``,
identical masks and object ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image

from grounded_sam import GroundedSAM
from grounded_sam.export.annotate import VideoWriter
from segmenter import VideoPredictor
from segmenter.export import ExportError, OnnxVideoPredictor
from tiny import VIDEO_ONNX_SIZE, tiny_video_sam

torch.set_num_threads(1)
TOL = 1e-3
ROUNDING = 1e-6  # a logit this close to 0 is a tie: fp32 rounding of either runtime decides its mask pixel
RED, GREEN = (220, 40, 40), (40, 200, 60)


def clip(n: int = 8, h: int = 120, w: int = 160) -> list[np.ndarray]:
    """A red square moving right, a green one moving left, a blue one hidden on frames 3-4."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    frames = []
    for t in range(n):
        f = base.copy()
        f[20:60, 10 + 4 * t : 50 + 4 * t] = RED
        f[70:110, 100 - 3 * t : 140 - 3 * t] = GREEN
        if not 3 <= t <= 4:
            f[30:50, 110:150] = (50, 50, 230)
        frames.append(f)
    return frames


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _np(x: Any) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)


def stream_scenario(predictor: Any, frames: list[np.ndarray]) -> dict[str, tuple[list, np.ndarray]]:
    """A live stream: boxes on frames 0 and 2, a new object from a mask on 3, a mask correcting object
    1 on 4, object 2 removed on 5; every call's (ids, logits)."""
    state = predictor.init_stream()
    out: dict[str, tuple[list, np.ndarray]] = {}
    h, w = frames[0].shape[:2]
    for t, frame in enumerate(frames):
        idx, ids, logits = predictor.track(state, frame)
        assert idx == t
        out[f"track {t}"] = (list(ids), _np(logits))
        if t == 0:
            _, ids, logits = predictor.add_new_boxes(state, [1, 2], np.array([[10, 20, 50, 60], [100, 70, 140, 110]]))
            out["boxes 0"] = (list(ids), _np(logits))
        elif t == 2:
            out["box masks 2"] = ([], _np(predictor.box_masks(state, [[18, 20, 58, 60], [110, 30, 150, 50]])))
            _, ids, logits = predictor.add_new_boxes(state, [3], [[110, 30, 150, 50]])
            out["boxes 2"] = (list(ids), _np(logits))
        elif t == 3:
            _, ids, logits = predictor.add_new_mask(state, 3, 4, _rect(h, w, 70, 110, 91, 131))
            out["mask 3"] = (list(ids), _np(logits))
            out["pointer 3"] = ([4], _np(state.objects[4].output_at(3, True).obj_ptr))  # (1, C)
        elif t == 4:
            _, ids, logits = predictor.add_new_mask(state, 4, 1, _rect(h, w, 20, 60, 26, 66))
            out["mask 4"] = (list(ids), _np(logits))
            out["pointer 4"] = ([1], _np(state.objects[1].output_at(4, False).obj_ptr))
        elif t == 5:
            ids, updated = predictor.remove_object(state, 2)
            assert [u[0] for u in updated] == [0]
            out["remove 5"] = (list(ids), _np(updated[0][1]))
    return out


def video_scenario(predictor: Any, frames: list[np.ndarray]) -> dict[str, tuple[list, np.ndarray]]:
    """An offline video: a box, clicks on two frames, a mask; the second clicks cleared, propagation,
    the mask's object removed."""
    h, w = frames[0].shape[:2]
    state = predictor.init_state(frames)
    out: dict[str, tuple[list, np.ndarray]] = {}
    for key, call in (
        ("box 0", lambda: predictor.add_new_points_or_box(state, 0, 1, box=[10, 20, 50, 60])),
        ("clicks 0", lambda: predictor.add_new_points_or_box(state, 0, 2, points=[[120, 90]], labels=[1])),
        ("clicks 3", lambda: predictor.add_new_points_or_box(state, 3, 2, points=[[105, 85]], labels=[1])),
        ("mask 1", lambda: predictor.add_new_mask(state, 1, 3, _rect(h, w, 30, 50, 110, 150))),
        ("clear 3", lambda: predictor.clear_all_prompts_in_frame(state, 3, 2)),
    ):
        _, ids, logits = call()
        out[key] = (list(ids), _np(logits))
    for t, ids, logits in predictor.propagate_in_video(state):
        out[f"frame {t}"] = (list(ids), _np(logits))
    ids, updated = predictor.remove_object(state, 3)
    out["remove 3"] = (list(ids), _np(updated[0][1]))
    return out


def _assert_same(ref: dict[str, tuple[list, np.ndarray]], got: dict[str, tuple[list, np.ndarray]]) -> float:
    """Same keys, ids, shapes and masks; logits (and object pointers) within TOL. Returns the largest
    difference."""
    assert list(ref) == list(got)
    worst = 0.0
    for key, (ids, a) in ref.items():
        got_ids, b = got[key]
        assert ids == got_ids and a.shape == b.shape, key
        if a.size:
            worst = max(worst, float(np.abs(a - b).max()))
            assert np.abs(a - b).max() <= TOL, (key, float(np.abs(a - b).max()))
        if not key.startswith("pointer"):  # identical masks, except where float rounding decides the sign
            flipped = (a > 0) != (b > 0)
            assert not flipped.any() or np.abs(a[flipped]).max() <= ROUNDING, (key, float(np.abs(a[flipped]).max()))
    return worst


@pytest.fixture(scope="module")
def exported(tiny_onnx_video) -> tuple[Any, Path]:
    """(PyTorch model, export folder): the suite's shared export."""
    return tiny_video_sam(tiny_onnx_video.checkpoint), tiny_onnx_video.folder


def _without_mask_downsample(folder: Path, out: Path) -> Path:
    """An export as made before the manifest recorded ``mask_downsample``: graphs linked, entry removed."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for graph in manifest["graphs"].values():
        (out / graph["file"]).symlink_to(folder / graph["file"])
    del manifest["extra"]["video"]["mask_downsample"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _run(make: Callable[[], Any], scenario: Callable, frames: list[np.ndarray]) -> dict:
    with torch.inference_mode():
        return scenario(make(), frames)


@pytest.mark.parametrize("memory", ["fifo", "quality"])
def test_stream_matches_pytorch(exported, memory: str) -> None:
    model, folder = exported
    frames = clip()
    ref = _run(lambda: VideoPredictor(model, memory=memory), stream_scenario, frames)
    got = stream_scenario(OnnxVideoPredictor(folder, memory=memory, threads=1), frames)
    assert _assert_same(ref, got) <= TOL
    # the scenario covers what it claims: the objects of each step, and presence that changes
    assert ref["track 0"][1].shape == (0, 1, 120, 160) and ref["boxes 0"][0] == [1, 2]
    assert ref["mask 3"][0] == [1, 2, 3, 4] and ref["track 5"][0] == [1, 2, 3, 4]
    assert ref["remove 5"][0] == [1, 3, 4] and ref["track 7"][0] == [1, 3, 4]
    assert ref["box masks 2"][1].shape == (2, 1, 120, 160) and (ref["box masks 2"][1] > 0).any()
    presence = np.concatenate([(ref[f"track {t}"][1] > 0).any(axis=(1, 2, 3)) for t in range(1, 8)])
    assert presence.any() and not presence.all()


def test_video_edits_match_pytorch(exported) -> None:
    model, folder = exported
    frames = clip(n=6)
    ref = _run(lambda: VideoPredictor(model), video_scenario, frames)
    got = video_scenario(OnnxVideoPredictor(folder, threads=1), frames)
    _assert_same(ref, got)
    assert ref["mask 1"][0] == [1, 2, 3] and ref["remove 3"][0] == [1, 2] and ref["remove 3"][1].shape[0] == 2
    # clearing object 2's clicks on frame 3 changed what frame 3 reports for it
    assert not np.array_equal(ref["clicks 3"][1][1], ref["clear 3"][1][1])


def test_stream_bad_requests(exported, tmp_path) -> None:
    _, folder = exported
    p = OnnxVideoPredictor(folder, threads=1)
    state = p.init_stream()
    with pytest.raises(RuntimeError, match="no new frame"):
        p.track(state)
    with pytest.raises(ValueError, match="give frame_idx"):
        p.box_masks(state, [[0, 0, 10, 10]])
    p.track(state, clip(n=1)[0])
    p.add_new_boxes(state, [1], [[10, 20, 50, 60]])
    with pytest.raises(ValueError, match="already used"):
        p.add_new_boxes(state, [1], [[10, 20, 50, 60]])
    with pytest.raises(ValueError, match="2 boxes for 1 object ids"):
        p.add_new_boxes(state, [5], [[10, 20, 50, 60], [0, 0, 5, 5]])
    with pytest.raises(ValueError, match="size 10x10"):
        p.track(state, np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="init_stream"):
        p.track(p.init_state(clip(n=1)))
    with pytest.raises(FileNotFoundError, match="clip.mp4"):
        p.init_state("clip.mp4")
    with pytest.raises(ValueError, match="init_stream"):  # an iterator's length is unknown
        p.init_state(iter(clip(n=2)))
    with pytest.raises(ValueError, match="frame list is empty"):
        p.init_state([])
    # an older export without the mask_downsample weights: add_new_mask says what is missing
    plain = OnnxVideoPredictor(_without_mask_downsample(folder, tmp_path), threads=1)
    state = plain.init_state(clip(n=1))
    with pytest.raises(ExportError, match="mask_downsample"):
        plain.add_new_mask(state, 0, 1, np.ones((120, 160), bool))


NO_TORCH = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # any import of torch fails
    import numpy as np
    from segmenter.export.video_runtime import OnnxVideoPredictor

    p = OnnxVideoPredictor(sys.argv[1], threads=1)
    state = p.init_stream()
    frame = np.zeros((60, 80, 3), np.uint8)
    frame[10:30, 10:40] = 200
    p.track(state, frame)
    _, ids, logits = p.add_new_boxes(state, [7], [[10, 10, 40, 30]])
    masks = p.box_masks(state, [[10, 10, 40, 30]])
    _, _, mask_logits = p.add_new_mask(state, 0, 8, frame[..., 0] > 0)
    t, ids, tracked = p.track(state, frame)
    assert (t, ids, tracked.shape, masks.shape) == (1, [7, 8], (2, 1, 60, 80), (1, 1, 60, 80)), (t, ids)

    # videos as files and folders: decoded without torch, tracked as the same frames given as a list
    from segmenter.video.frames import open_video

    def run(video):
        state = p.init_state(video)
        p.add_new_points_or_box(state, 0, 1, box=[10, 10, 40, 30])
        return [logits for _, _, logits in p.propagate_in_video(state)]

    for video in sys.argv[2:]:  # an mp4 file, a folder of PNG frames
        frames = list(open_video(video))
        got, want = run(video), run(frames)
        assert len(got) == len(frames) == 3 and all(np.array_equal(a, b) for a, b in zip(got, want)), video
    assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
    print("ok")
    """
)


def test_stream_runs_without_torch(exported, tmp_path) -> None:
    _, folder = exported
    frames = [np.roll(np.full((60, 80, 3), 40, np.uint8), 3 * t, axis=1) for t in range(3)]
    for f in frames:
        f[10:30, 10:40] = 200
    with VideoWriter(tmp_path / "clip.mp4", fps=10) as writer:
        for f in frames:
            writer.write(f)
    (tmp_path / "frames").mkdir()
    for t, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "frames" / f"{t}.png")
    repo = Path(__file__).resolve().parents[1]
    args = [str(folder), str(tmp_path / "clip.mp4"), str(tmp_path / "frames")]
    run = subprocess.run([sys.executable, "-c", NO_TORCH, *args], check=False, capture_output=True, text=True,
                         timeout=120, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


class ColourDetector:
    """Finds the clip's red ("cat") and green ("dog") squares by their colour."""

    def detect(self, images: list[np.ndarray], ontology: Any) -> list[sv.Detections]:
        out = []
        for img in images:
            boxes, classes = [], []
            for class_id, colour in enumerate((RED, GREEN)):
                ys, xs = np.nonzero((img == colour).all(axis=-1))
                if len(xs):
                    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                    classes.append(class_id)
            names = np.array(["cat", "dog"])[classes]
            out.append(sv.Detections(
                xyxy=np.array(boxes, np.float32).reshape(-1, 4), confidence=np.full(len(boxes), 0.9, np.float32),
                class_id=np.array(classes, int), data={"class_name": names, "caption": np.char.add("a ", names)},
            ))  # fmt: skip
        return out


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_grounded_track_with_an_onnx_folder(exported, tiny_onnx_video) -> None:
    _, folder = exported
    onto = {"a cat": "cat", "a dog": "dog"}
    frames = clip()
    onnx = GroundedSAM(onto, detector=ColourDetector(), segmenter=str(folder), device="cpu")
    torch_gs = GroundedSAM(onto, detector=ColourDetector(), segmenter="sam2.1_hiera_tiny",
                           checkpoint=tiny_onnx_video.checkpoint, image_size=VIDEO_ONNX_SIZE, device="cpu")
    # what GroundedSAM.track runs (make_tracker(...).frames), keeping the tracker to compare retired tracks
    runs = []
    for gs in (torch_gs, onnx):
        tracker = gs.make_tracker("sam2", redetect_every=1, max_lost=3)
        runs.append(([(t, det) for t, _, det in tracker.frames(frames)], sorted(tracker.tracks),
                     [tr.tracker_id for tr in tracker.retired]))
    (ref, ref_live, ref_retired), (got, got_live, got_retired) = runs
    assert [t for t, _ in got] == [t for t, _ in ref] == list(range(8))
    for (t, a), (_, b) in zip(ref, got):
        assert a.tracker_id.tolist() == b.tracker_id.tolist(), t
        assert a.data["class_name"].tolist() == b.data["class_name"].tolist(), t
        assert all(_mask_iou(x, y) >= 0.99 for x, y in zip(a.mask, b.mask)), t
        assert np.allclose(a.data["mask_score"], b.data["mask_score"], atol=1e-3), t
    assert (ref_live, ref_retired) == (got_live, got_retired)
    # both classes were tracked, tracks were lost and retired (removed from the predictor), new ones started
    assert {n for _, d in ref for n in d.data["class_name"]} == {"cat", "dog"}
    assert len(ref_retired) >= 2 and max(ref_live + ref_retired) > 4


def test_grounded_track_refusals(exported, tiny_onnx_video) -> None:
    _, folder = exported
    gs = GroundedSAM({"a cat": "cat"}, detector=ColourDetector(), segmenter=str(folder), device="cpu")
    with pytest.raises(ValueError, match="supports the memory policies 'fifo' and 'quality'"):
        next(iter(gs.track(clip(n=1), memory="samurai")))
    # the memory policy reaches the ONNX Runtime predictor
    assert gs.make_tracker("sam2", memory="quality").predictor.memory.name == "quality"
