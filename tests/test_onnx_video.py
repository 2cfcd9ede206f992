"""segmenter.export (ONNX, video parts): the whole tracking step on ONNX Runtime vs our PyTorch tracker.

One tiny random SAM 2.1 (128 px) exported once per module with ``parts=("image", "video")``. The
scenario: a 16-frame clip, 3 objects (a box and a click on frame 0, clicks on frame 6: added
mid-video), tracked with ``fifo`` and ``quality``. The object-score head is scaled so that the
objects' presence changes from frame to frame (absent objects take the no-object pointer and
memory embedding).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from segmenter import VideoPredictor
from segmenter.export import ExportError, OnnxVideoPredictor, to_onnx
from segmenter.export.video_runtime import round_bfloat16
from segmenter.video.memory_bank import select_memory
from tiny import VIDEO_ONNX_SIZE, tiny_video_sam

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
IMAGE_SIZE = VIDEO_ONNX_SIZE
TOL = 1e-3
ROUNDING = 1e-6  # a logit this close to 0 is a tie: fp32 rounding of either runtime decides its mask pixel

# shared with the torch-free subprocess: the clip and the prompts, numpy only
SCENARIO = textwrap.dedent(
    """
    import numpy as np

    def clip(n=16, h=120, w=160):
        rng = np.random.default_rng(0)
        base = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        frames = []
        for t in range(n):
            f = base.copy()
            f[20:60, 10 + 4 * t : 50 + 4 * t] = (220, 40, 40)  # moves right
            f[70:110, 100 - 3 * t : 140 - 3 * t] = (40, 200, 60)  # moves left
            if not 5 <= t <= 9:  # hidden on frames 5-9
                f[30:50, 110:150] = (50, 50, 230)
            frames.append(f)
        return frames

    def scenario(predictor, frames):
        state = predictor.init_state(frames)
        out = {}
        for key, t, obj_id, prompt in (
            ("prompt 1", 0, 1, dict(box=[10, 20, 50, 60])),
            ("prompt 2", 0, 2, dict(points=[[120, 90]], labels=[1])),
            ("prompt 3", 6, 3, dict(points=[[60, 40], [20, 100]], labels=[1, 0])),
        ):
            _, ids, masks = predictor.add_new_points_or_box(state, t, obj_id, **prompt)
            out[key] = np.asarray(masks, dtype=np.float32)
        for t, ids, masks in predictor.propagate_in_video(state):
            assert list(ids) == [1, 2, 3]
            out[f"frame {t}"] = np.asarray(masks, dtype=np.float32)
        return out
    """
)
_ns: dict[str, Any] = {}
exec(SCENARIO, _ns)  # noqa: S102 - the same source the subprocess runs
clip, scenario = _ns["clip"], _ns["scenario"]


@pytest.fixture(scope="module")
def exported(tiny_onnx_video) -> tuple[Any, Path]:
    """(PyTorch model, export folder with the video parts): the suite's shared export."""
    return tiny_video_sam(tiny_onnx_video.checkpoint), tiny_onnx_video.folder


_torch_runs: dict[str, dict[str, np.ndarray]] = {}


def _pytorch(model: Any, memory: str) -> dict[str, np.ndarray]:
    if memory not in _torch_runs:
        _torch_runs[memory] = scenario(VideoPredictor(model, memory=memory), clip())
    return _torch_runs[memory]


def _assert_same(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
    assert list(ref) == list(got) and len(ref) == 3 + 16
    for key, a in ref.items():
        b = got[key]
        assert a.shape == b.shape, key
        assert np.abs(a - b).max() <= TOL, (key, float(np.abs(a - b).max()))
        flipped = (a > 0) != (b > 0)  # identical masks, except where float rounding decides the sign
        assert not flipped.any() or np.abs(a[flipped]).max() <= ROUNDING, (key, float(np.abs(a[flipped]).max()))
        assert ((a > 0).any(axis=(1, 2, 3)) == (b > 0).any(axis=(1, 2, 3))).all(), key  # identical presence


@pytest.mark.parametrize("memory", ["fifo", "quality"])
def test_tracking_matches_pytorch(exported, memory: str) -> None:
    model, folder = exported
    ref = _pytorch(model, memory)
    got = scenario(OnnxVideoPredictor(folder, memory=memory, threads=1), clip())
    _assert_same(ref, got)
    # the scenario covers what it claims: object 3 appears on frame 6 only once prompted there,
    # and objects are present on some tracked frames and absent on others
    assert (ref["prompt 2"].shape[0], ref["prompt 3"].shape[0]) == (2, 3)
    presence = np.stack([(ref[f"frame {t}"] > 0).any(axis=(1, 2, 3)) for t in range(16)])  # (16, 3)
    assert presence.any() and not presence.all()
    assert any(0 < presence[:, i].sum() < 16 for i in range(3))


def test_graphs_match_the_tracker(exported) -> None:
    """Each graph against the PyTorch tracker's own step on the same memory (frame 9 of a tracked clip)."""
    import onnxruntime as ort

    model, folder = exported
    pt = VideoPredictor(model)
    state = pt.init_state(clip(), keep_outputs=True)
    pt.add_new_points_or_box(state, 0, 1, box=[10, 20, 50, 60])
    pt.add_new_points_or_box(state, 0, 2, points=[[120, 90]], labels=[1])
    for _ in pt.propagate_in_video(state, max_frame_num_to_track=8):
        pass
    t, mem = 9, model.config.memory
    sels = [
        select_memory(o, t, False, 16, mem.num_maskmem, mem.max_obj_ptrs_in_encoder, mem.use_signed_tpos_enc_to_obj_ptrs)
        for o in state.objects.values()
    ]
    assert sels[0].layout == sels[1].layout == (7, 9)
    sess = {g: ort.InferenceSession(str(folder / f"{g}.onnx"), providers=["CPUExecutionProvider"])
            for g in ("memory_attention", "video_heads", "memory_encoder")}
    with torch.inference_mode():
        feats = pt.frame_features(state, t)
        pix = pt.tracker.condition(feats, sels, 16)
        heads = pt.tracker.heads(pix, feats, multimask=True)
        maskmem = pt.tracker.encode_memory(feats, heads.high_res, heads.object_score_logits, binarize=False)
    vision = feats.vision.numpy()
    memory = np.stack([np.stack([e.maskmem.float().numpy() for _, e in s.memories]) for s in sels])
    (pix_ort,) = sess["memory_attention"].run(None, {
        "vision_features": vision, "memory": memory,
        "memory_slots": np.array([[slot for slot, _ in s.memories] for s in sels], dtype=np.int64),
        "obj_ptrs": np.stack([np.concatenate([p.numpy() for _, p in s.pointers]) for s in sels]),
        "ptr_offsets": np.array([[off for off, _ in s.pointers] for s in sels], dtype=np.float32),
        "ptr_tpos_max": np.array([15.0], np.float32),
    })  # fmt: skip
    assert np.abs(pix_ort - pix.numpy()).max() <= 1e-4
    low_m, iou_m, ptr_m, *_, score = sess["video_heads"].run(None, {
        "pix_feat": pix.numpy(), "high_res_feats_0": feats.high_res[0].numpy(),
        "high_res_feats_1": feats.high_res[1].numpy(), "point_coords": np.zeros((2, 1, 2), np.float32),
        "point_labels": -np.ones((2, 1), np.int64), "mask_input": np.zeros((2, 1, 32, 32), np.float32),
        "has_mask_input": np.zeros(1, np.float32), "present_threshold": np.zeros((2, 1), np.float32),
    })  # fmt: skip
    best = iou_m.argmax(-1)
    assert np.abs(low_m[[0, 1], best][:, None] - heads.low_res.numpy()).max() <= 1e-4
    assert np.abs(ptr_m[[0, 1], best] - heads.obj_ptr.numpy()).max() <= 1e-4
    assert np.abs(score - heads.object_score_logits.numpy()).max() <= 1e-4
    (mm,) = sess["memory_encoder"].run(None, {
        "vision_features": vision, "mask_logits": low_m[[0, 1], best][:, None],
        "object_score_logits": score, "binarize": np.zeros(1, np.float32),
    })  # fmt: skip
    ref = maskmem.float().numpy()
    # stored as bfloat16: equal up to one bfloat16 step where the float32 values straddle a rounding boundary
    assert np.abs(round_bfloat16(mm) - ref).max() <= 1e-4 + np.abs(ref).max() * 2**-7
    assert (round_bfloat16(mm) == ref).mean() > 0.99


def test_bfloat16_rounding_matches_torch() -> None:
    x = torch.randn(4096) * torch.logspace(-3, 3, 4096)
    assert (round_bfloat16(x.numpy()) == x.to(torch.bfloat16).float().numpy()).all()


TORCH_FREE = textwrap.dedent(
    """
    import sys, importlib.abc

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this process")

    sys.meta_path.insert(0, NoTorch())
    sys.modules["torch"] = None
    import numpy as np
    from segmenter.export.video_runtime import OnnxVideoPredictor

    folder, out = sys.argv[1:3]
    got = scenario(OnnxVideoPredictor(folder, memory="quality", threads=1), clip())
    assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
    np.savez(out, **got)
    """
)


def test_runs_without_torch(exported, tmp_path) -> None:
    model, folder = exported
    script = tmp_path / "no_torch.py"
    script.write_text(SCENARIO + TORCH_FREE)
    run = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "out.npz")],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr
    got = dict(np.load(tmp_path / "out.npz"))
    _assert_same(_pytorch(model, "quality"), got)


def test_bad_requests(exported, tmp_path) -> None:
    model, folder = exported
    with pytest.raises(ValueError, match="fifo' and 'quality"):
        OnnxVideoPredictor(folder, memory="samurai")
    image_only = tmp_path / "image_only"
    shutil.copytree(folder, image_only)
    manifest = json.loads((image_only / "manifest.json").read_text())
    del manifest["graphs"]["memory_attention"]
    (image_only / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="no video graphs"):
        OnnxVideoPredictor(image_only)
    (folder / "memory_encoder.onnx").rename(image_only / "moved.onnx")  # a graph gone: refused on load
    try:
        with pytest.raises(ExportError, match="missing"):
            OnnxVideoPredictor(folder)
    finally:
        (image_only / "moved.onnx").rename(folder / "memory_encoder.onnx")
    with pytest.raises(ExportError, match="image encoder"):
        to_onnx(model, tmp_path / "v", parts=("video",))
    p = OnnxVideoPredictor(folder, threads=1)
    state = p.init_state(clip(n=2))
    with pytest.raises(RuntimeError, match="add inputs first"):
        next(p.propagate_in_video(state))
    with pytest.raises(ValueError, match="out of range"):
        p.add_new_points_or_box(state, 2, 1, box=[0, 0, 10, 10])


def test_video_predictor_from_onnx_is_the_onnx_runtime_predictor(exported) -> None:
    _, folder = exported
    predictor = VideoPredictor.from_onnx(str(folder), memory="quality")
    assert isinstance(predictor, OnnxVideoPredictor)
    with pytest.raises(ValueError, match="supports the memory policies 'fifo' and 'quality'"):
        VideoPredictor.from_onnx(str(folder), memory="samurai")


def test_cli_export_video_parts(exported, tiny_models, tmp_path, monkeypatch) -> None:
    """``grounded-sam export --video`` asks for both parts (the graphs are this module's export, copied:
    one export per file); the folder it leaves tracks; --video with a conversion is refused."""
    from typer.testing import CliRunner

    from grounded_sam.cli import app

    _, folder = exported
    asked = []

    def export_once(model, out, parts, options):  # noqa: ANN001 - to_onnx's signature
        asked.append(parts)
        shutil.copytree(folder, out)

    monkeypatch.setattr("segmenter.export.onnx.to_onnx", export_once)
    base = ["export", "--model", "sam2.1_hiera_tiny", "--checkpoint", str(tiny_models.sam), "--image-size",
            str(IMAGE_SIZE)]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "v"), "--video"])
    assert result.exit_code == 0, result.output
    assert asked == [("image", "video")] and "memory_attention" in result.output
    assert isinstance(VideoPredictor.from_onnx(str(tmp_path / "v")), OnnxVideoPredictor)
    refused = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "w"), "--video", "--quantize", "int8"])
    assert refused.exit_code == 2 and "--video exports fp32 graphs only" in refused.output
    assert asked == [("image", "video")] and not (tmp_path / "w").exists()
