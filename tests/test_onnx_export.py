"""segmenter.export (ONNX, image parts): fp32 ONNX Runtime vs PyTorch, the torch-free runtime, the
manifest's checks, ``grounded-sam export``'s input errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import SAM_IMAGE_SIZE, VIDEO_ONNX_SIZE, export_log, tiny_video_sam
from typer.testing import CliRunner

from grounded_sam.cli import app
from segmenter import ImagePredictor, build_sam
from segmenter.export import ExportError, OnnxImagePredictor, to_onnx
from segmenter.export.numpy_transforms import resize_masks_np, resize_to_square_np
from segmenter.modeling.transforms import resize_masks, resize_to_square

torch.set_num_threads(1)
TOL = 1e-4
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exports(tiny_models, tiny_onnx, tiny_onnx_video) -> dict[int, tuple[ImagePredictor, Path]]:
    """image size -> (PyTorch predictor, export folder), both the suite's shared exports: 256 px of the
    tiny checkpoint (``tiny_onnx``: through the CLI, into an existing folder with --overwrite) and
    128 px of another random model (``tiny_onnx_video``'s image graphs)."""
    model256 = build_sam("sam2.1_hiera_tiny", checkpoint=tiny_models.sam, device="cpu", image_size=SAM_IMAGE_SIZE)
    model128 = tiny_video_sam(tiny_onnx_video.checkpoint)
    return {256: (ImagePredictor(model256), tiny_onnx), 128: (ImagePredictor(model128), tiny_onnx_video.folder)}


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[h // 4 : h // 2, w // 3 : 2 * w // 3] = (230, 40, 40)  # some structure
    return img


PROMPTS = {
    "points": dict(point_coords=np.array([[120.0, 90.0], [300.0, 200.0]]), point_labels=np.array([1, 0])),
    "box": dict(box=np.array([60.0, 40.0, 330.0, 250.0])),
    "box+points": dict(box=np.array([60.0, 40.0, 330.0, 250.0]), point_coords=np.array([[150.0, 100.0]]),
                       point_labels=np.array([1])),
    "boxes": dict(box=np.array([[60.0, 40.0, 330.0, 250.0], [0.0, 0.0, 100.0, 80.0], [10.0, 150.0, 399.0, 299.0]])),
}


def _compare(pt, ort, **prompt) -> None:
    """Logits, IoU and low-res logits within TOL; thresholded masks equal wherever the logit is
    farther than TOL from the threshold (closer, float rounding decides either way)."""
    logits_a, iou_a, low_a = pt.predict(return_logits=True, **prompt)
    logits_b, iou_b, low_b = ort.predict(return_logits=True, **prompt)
    assert logits_a.shape == logits_b.shape and iou_a.shape == iou_b.shape and low_a.shape == low_b.shape
    assert np.abs(logits_a - logits_b).max() <= TOL
    assert np.abs(iou_a - iou_b).max() <= TOL
    assert np.abs(low_a - low_b).max() <= TOL
    masks_a, masks_b = pt.predict(**prompt)[0], ort.predict(**prompt)[0]
    assert masks_a.dtype == masks_b.dtype and set(np.unique(masks_b)) <= {0.0, 1.0}
    sure = np.abs(logits_a) > TOL
    assert (masks_a[sure] == masks_b[sure]).all()


@pytest.mark.parametrize("size", [SAM_IMAGE_SIZE, VIDEO_ONNX_SIZE])
def test_onnxruntime_matches_pytorch(exports, size: int) -> None:
    pt, folder = exports[size]
    ort = OnnxImagePredictor(folder, threads=1)
    img = _image(300, 400)
    pt.set_image(img)
    ort.set_image(img)
    # encoder: the same preprocessed input through both
    with torch.inference_mode():
        feats = pt.model.encode_images(pt.model.preprocess([img])[0])
    assert np.abs(pt.get_image_embedding().numpy() - ort.get_image_embedding()).max() <= TOL
    for name, ref in zip(("high_res_feats_0", "high_res_feats_1"), feats.high_res_feats):
        assert np.abs(ref.numpy() - ort.features[name]).max() <= TOL
    # dynamic batch: three images in one encoder call give each one's features
    import onnxruntime

    enc = onnxruntime.InferenceSession(str(folder / "image_encoder.onnx"), providers=["CPUExecutionProvider"])
    x = resize_to_square_np(img, size)
    batched = enc.run(None, {"image": np.concatenate([x, x[:, ::-1], x])})
    assert batched[0].shape[0] == 3 and np.abs(batched[0][2:] - ort.get_image_embedding()).max() <= TOL
    for prompt in PROMPTS.values():
        for multimask in (True, False):
            _compare(pt, ort, multimask_output=multimask, **prompt)
    # a mask prompt: the best low-res logits of a previous call, fed back
    _, iou, low = pt.predict(**PROMPTS["points"])
    again = dict(PROMPTS["points"], mask_input=low[np.argmax(iou)][None], multimask_output=False)
    _compare(pt, ort, **again)
    # object score (what the PyTorch predictor does not return): against the model's heads
    low_o, _, obj = ort.predict_low_res(**PROMPTS["boxes"])
    with torch.inference_mode():
        xy = pt.model.transform_coords(PROMPTS["boxes"]["box"].astype(np.float32).reshape(-1, 2, 2), (300, 400), (size, size))
        labels = torch.tensor([[2, 3]]).expand(3, -1)
        heads = pt.model.sam_heads(feats.image_embed, feats.high_res_feats, (xy, labels), None, True)
    assert np.abs(heads.object_score_logits.numpy() - obj).max() <= TOL
    assert np.abs(heads.low_res.numpy() - low_o).max() <= TOL


class _Counted:
    """An ONNX Runtime session that counts its runs."""

    def __init__(self, session) -> None:  # noqa: ANN001 - an onnxruntime.InferenceSession
        self.session, self.runs = session, 0

    def run(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        self.runs += 1
        return self.session.run(*args, **kwargs)


def test_clicks_reuse_the_image_side_projections(exports) -> None:
    """Points and boxes without a mask input take mask_decoder_cached on decoder_cache's outputs, made
    once per image; the outputs equal mask_decoder's on the same prompts, and a mask input takes it."""
    _, folder = exports[256]
    ort = OnnxImagePredictor(folder, threads=1)
    ort._cache_graph, ort._cached_decoder, ort._decoder = (_Counted(s) for s in (
        ort._cache_graph, ort._cached_decoder, ort._decoder))  # fmt: skip
    img = _image(300, 400)
    ort.set_image(img)
    hw = (SAM_IMAGE_SIZE // 16) ** 2
    assert ort._cache_graph.runs == 1 and {k: v.shape[:2] for k, v in ort._side.items()} == {
        "t2i_keys": (1, hw), "t2i_values": (1, hw), "i2t_queries": (1, hw)}  # fmt: skip
    side = ort._side
    for name, prompt in PROMPTS.items():
        for multimask in (True, False):
            ort._side = side
            cached = ort.predict_low_res(multimask_output=multimask, **prompt)
            ort._side = {}  # the general decoder, a zero mask input switched off
            general = ort.predict_low_res(multimask_output=multimask, **prompt)
            for a, b in zip(cached, general):
                assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5, name
    assert ort._cached_decoder.runs == ort._decoder.runs == 2 * len(PROMPTS) and ort._cache_graph.runs == 1
    ort._side = side
    _, iou, low = ort.predict(**PROMPTS["points"])
    ort.predict(**PROMPTS["points"], mask_input=low[np.argmax(iou)][None], multimask_output=False)
    assert ort._decoder.runs == 2 * len(PROMPTS) + 1 and ort._cached_decoder.runs == 2 * len(PROMPTS) + 1


@pytest.mark.parametrize("hw", [(300, 400), (97, 61), (1080, 1920), (256, 256)])
def test_numpy_transforms_match_torch(hw: tuple[int, int]) -> None:
    img = _image(*hw, seed=3)
    ref = resize_to_square([img], 256, torch.device("cpu")).numpy()
    assert np.abs(ref - resize_to_square_np(img, 256)).max() <= 1e-5
    low = np.random.default_rng(4).normal(0, 8, (2, 3, 64, 64)).astype(np.float32)
    up_ref = resize_masks(torch.from_numpy(low), hw).numpy()
    up = resize_masks_np(low, hw)
    assert np.abs(up_ref - up).max() <= 1e-4  # float32 rounding (last bits) of logits up to ~30
    assert ((up_ref > 0) == (up > 0)).all()


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
    from segmenter.export.runtime import OnnxImagePredictor

    folder, image, out = sys.argv[1:4]
    p = OnnxImagePredictor(folder, threads=1)
    p.set_image(np.load(image))
    masks, iou, low = p.predict(box=np.array([60.0, 40.0, 330.0, 250.0]), multimask_output=False)
    assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
    np.savez(out, masks=masks, iou=iou, low=low)
    """
)


def test_runs_without_torch(exports, tmp_path) -> None:
    pt, folder = exports[256]
    img = _image(300, 400, seed=5)
    np.save(tmp_path / "image.npy", img)
    script = tmp_path / "no_torch.py"
    script.write_text(TORCH_FREE)
    run = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "image.npy"), str(tmp_path / "out.npz")],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr
    got = np.load(tmp_path / "out.npz")
    pt.set_image(img)
    logits, iou, low = pt.predict(box=np.array([60.0, 40.0, 330.0, 250.0]), multimask_output=False, return_logits=True)
    assert np.abs(iou - got["iou"]).max() <= TOL and np.abs(low - got["low"]).max() <= TOL
    sure = np.abs(logits) > TOL
    assert ((logits > 0)[sure] == (got["masks"] > 0)[sure]).all()


def test_from_onnx_is_the_same_predictor(exports) -> None:
    _, folder = exports[256]
    p = ImagePredictor.from_onnx(folder, threads=1)
    assert isinstance(p, OnnxImagePredictor) and p.image_size == SAM_IMAGE_SIZE
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict(box=np.array([0, 0, 10, 10]))


@pytest.mark.parametrize(("env", "threads", "expected"), [
    ("1", None, 1), ("3", None, 3), (None, None, 0), ("auto", None, 0), ("0", None, 0), ("1", 2, 2),
])
def test_threads_follow_omp_num_threads(exports, monkeypatch, env: str | None, threads: int | None,
                                        expected: int) -> None:
    """Sessions take ``OMP_NUM_THREADS`` (as torch does; Ray sets it per worker) unless ``threads`` is given;
    0 is ONNX Runtime's own choice (a thread per core)."""
    _, folder = exports[256]
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    p = OnnxImagePredictor(folder, threads=threads)
    for session in (p._encoder, p._decoder, p._cached_decoder):
        assert session.get_session_options().intra_op_num_threads == expected


def test_cli_export_replaced_the_existing_folder(exports) -> None:
    """The 256 px folder is ``grounded-sam export --overwrite``'s, written over an existing folder."""
    folder = exports[256][1]
    printed = export_log(folder).read_text()
    assert f"exported sam2.1_hiera_tiny ({SAM_IMAGE_SIZE} px) to {folder}: decoder_cache.onnx, image_encoder.onnx, mask_decoder.onnx, mask_decoder_cached.onnx" in printed
    assert "IoU" not in printed  # fp32: nothing converted, nothing to report
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["extra"]["precision"] == {"image_encoder": "fp32", "mask_decoder": "fp32", "decoder_cache": "fp32", "mask_decoder_cached": "fp32"}
    assert not folder.with_name(folder.name + ".partial").exists()


def test_changed_file_is_refused(exports, tmp_path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(exports[256][1], folder)
    with open(folder / "mask_decoder.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ExportError, match="does not match its manifest"):
        OnnxImagePredictor(folder)
    (folder / "mask_decoder.onnx").unlink()
    with pytest.raises(ExportError, match="missing"):
        OnnxImagePredictor(folder)


def test_other_export_version_is_refused(exports, tmp_path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(exports[256][1], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model"] == "sam2.1_hiera_tiny" and manifest["image_size"] == SAM_IMAGE_SIZE
    assert manifest["opset"] >= 17 and manifest["config"]["name"] == "sam2.1_hiera_tiny"
    assert {g["file"] for g in manifest["graphs"].values()} == {"image_encoder.onnx", "mask_decoder.onnx", "decoder_cache.onnx", "mask_decoder_cached.onnx"}
    manifest["export_version"] = 0
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="export version 0"):
        OnnxImagePredictor(folder)
    with pytest.raises(ExportError, match="no manifest.json"):
        OnnxImagePredictor(tmp_path)


def test_bad_requests(exports, tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--model", "sam9_huge", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown --model 'sam9_huge'" in result.output
    assert "sam2.1_hiera_tiny" in result.output  # says what is available
    result = runner.invoke(app, ["export", "--model", "sam2.1_hiera_tiny", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "already exists" in result.output and "--overwrite" in result.output
    result = runner.invoke(app, ["export", "--model", "sam2.1_hiera_tiny", "--format", "tflite", "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "tflite" in result.output
    model = exports[256][0].model
    with pytest.raises(ExportError, match="already exists"):
        to_onnx(model, tmp_path)
    with pytest.raises(ExportError, match="unknown export parts"):
        to_onnx(model, tmp_path / "z", parts=("audio",))
    with pytest.raises(ExportError, match="image encoder"):
        to_onnx(model, tmp_path / "z", parts=("video",))
    assert not (tmp_path / "z").exists()
