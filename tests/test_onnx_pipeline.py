"""An exported ONNX folder as GroundedSAM's segmenter (grounded_sam.pipeline.onnx_segmenter), in
Python and through the CLI: the same boxes and masks as the PyTorch segmenter it was exported
from, image-only refusals, and ``grounded-sam export`` / ``segment``'s bad-input errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny import SAM_IMAGE_SIZE
from typer.testing import CliRunner

from grounded_sam import GroundedSAM
from grounded_sam.cli import app
from grounded_sam.export.records import record_to_detections
from grounded_sam.pipeline.hub import models_needed
from grounded_sam.pipeline.onnx_segmenter import OnnxSegmenter
from segmenter.export import ExportError, OnnxImagePredictor

ONTOLOGY = {"a cat": "cat", "kitten": "cat", "a dog": "dog"}


@pytest.fixture(scope="module")
def folder(tiny_onnx) -> Path:
    """The suite's tiny SAM 2.1 checkpoint exported (fp32; shared by the run, read-only)."""
    return tiny_onnx


@pytest.fixture(scope="module")
def torch_pipeline(tiny_models) -> GroundedSAM:
    return GroundedSAM(ONTOLOGY, detector=str(tiny_models.owl), segmenter="sam2.1_hiera_tiny", checkpoint=tiny_models.sam,
                       image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0, nms_iou=0.3)


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for h, w in [(90, 120), (200, 150), (64, 64)]:
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        img[h // 4 : h // 2, w // 3 : 2 * w // 3] = (230, 40, 40)
        out.append(img)
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else (a & b).sum() / union


@pytest.mark.parametrize("multimask", [False, True])
def test_onnx_folder_gives_the_pytorch_masks(folder, tiny_models, torch_pipeline, multimask: bool) -> None:
    onnx = GroundedSAM(ONTOLOGY, detector=str(tiny_models.owl), segmenter=str(folder), device="cpu",
                       box_threshold=0.0, nms_iou=0.3, multimask=multimask)
    assert isinstance(onnx.predictor, OnnxSegmenter) and onnx.predictor.image_size == SAM_IMAGE_SIZE
    pt = GroundedSAM(ONTOLOGY, detector=torch_pipeline.detector, segmenter=torch_pipeline.predictor, device="cpu",
                     box_threshold=0.0, nms_iou=0.3, multimask=multimask)
    images = _images()
    total = 0
    for a, b in zip(pt.predict_batch(images), onnx.predict_batch(images)):
        assert len(a) == len(b) > 0
        total += len(a)
        assert np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.class_id, b.class_id)
        assert np.array_equal(a.confidence, b.confidence) and list(a.data["caption"]) == list(b.data["caption"])
        assert b.mask.dtype == bool and b.mask.shape == a.mask.shape
        assert min(_iou(x, y) for x, y in zip(a.mask, b.mask)) >= 0.999
        np.testing.assert_allclose(a.data["mask_score"], b.data["mask_score"], atol=1e-4)
    assert total >= 3
    # one image at a time: the same as in a batch
    single = onnx.predict(images[1])
    again = onnx.predict_batch(images)[1]
    assert np.array_equal(single.mask, again.mask)


def test_what_an_onnx_segmenter_is_and_is_not(folder, tiny_models, torch_pipeline, tmp_path) -> None:
    gs = GroundedSAM(ONTOLOGY, detector=torch_pipeline.detector, segmenter=folder, device="cpu", box_threshold=0.0)
    fp = gs.fingerprint()["segmenter"]
    assert fp["backend"] == "onnxruntime" and fp["config"] == "sam2.1_hiera_tiny" and fp["weights"].startswith("onnx:")
    assert fp["precision"] == {"image_encoder": "fp32", "mask_decoder": "fp32", "decoder_cache": "fp32", "mask_decoder_cached": "fp32"} and fp["image_size"] == SAM_IMAGE_SIZE
    assert fp != torch_pipeline.fingerprint()["segmenter"]
    (need,) = [n for n in models_needed(str(tiny_models.owl), None, str(folder), None) if n.role == "segmenter"]
    assert need.local and need.name == "exported ONNX"  # what the CLI's model checks list
    # an OnnxImagePredictor is accepted as it is
    same = GroundedSAM(ONTOLOGY, detector=torch_pipeline.detector, segmenter=OnnxImagePredictor(folder), device="cpu")
    assert same.fingerprint()["segmenter"] == fp
    # clicks (the app, Label Studio) go through set_image / predict
    img = _images()[0]
    gs.predictor.set_image(img)
    masks, iou, _ = gs.predictor.predict(point_coords=np.array([[60.0, 30.0]]), point_labels=np.array([1]))
    assert masks.shape == (3, 90, 120) and iou.shape == (3,)
    # video needs the PyTorch model: refused, saying why and what to give instead
    for run in (lambda: gs.make_tracker("sam2"), lambda: next(iter(gs.track([img, img])))):
        with pytest.raises(ValueError, match="exported ONNX folder.*PyTorch segmenter"):
            run()
    with pytest.raises(ValueError, match="takes 256 px inputs.*--image-size 512"):
        GroundedSAM(ONTOLOGY, detector=torch_pipeline.detector, segmenter=folder, image_size=512, device="cpu")
    with pytest.raises(ValueError, match="checkpoint does not apply"):
        GroundedSAM(ONTOLOGY, detector=torch_pipeline.detector, segmenter=folder, checkpoint=tiny_models.sam, device="cpu")


def test_cli_segment_with_an_onnx_folder(folder, tiny_models, torch_pipeline, tmp_path) -> None:
    img = _images()[1]
    Image.fromarray(img).save(tmp_path / "a.png")
    args = ["segment", str(tmp_path / "a.png"), "--prompt", "a cat:cat, a dog:dog", "--detector", str(tiny_models.owl),
            "--device", "cpu", "--box-threshold", "0.0", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*args, "--segmenter", str(folder)])
    assert result.exit_code == 0, result.output
    got = record_to_detections(json.loads((tmp_path / "out" / "a.json").read_text()))
    expected = GroundedSAM({"a cat": "cat", "a dog": "dog"}, detector=torch_pipeline.detector,
                           segmenter=torch_pipeline.predictor, device="cpu", box_threshold=0.0).predict(img)
    assert len(got) == len(expected) > 0 and np.allclose(got.xyxy, expected.xyxy, atol=1e-3)
    assert min(_iou(x, y) for x, y in zip(got.mask, expected.mask)) >= 0.999
    # a folder from another export version: a clear error, before any image is read
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["export_version"] = 0
    (old / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(app, [*args, "--segmenter", str(old)])
    assert result.exit_code == 2 and "export version 0" in result.output and "export the model again" in result.output
    with pytest.raises(ExportError, match="export version 0"):
        OnnxImagePredictor(old)
    # automatic masks need the PyTorch model: a clear error, no traceback
    result = CliRunner().invoke(app, ["auto", str(tmp_path / "a.png"), "--segmenter", str(folder), "--device", "cpu",
                                      "--out", str(tmp_path / "auto")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output


def test_export_bad_inputs(tiny_models, tmp_path) -> None:
    runner = CliRunner()
    # a checkpoint for another config: says which config it fits
    result = runner.invoke(app, ["export", "--model", "sam2_hiera_tiny", "--checkpoint", str(tiny_models.sam),
                                 "--image-size", str(SAM_IMAGE_SIZE), "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "does not fit the sam2_hiera_tiny model" in result.output
    assert "looks like sam2.1_hiera_tiny" in result.output and not (tmp_path / "a").exists()
    result = runner.invoke(app, ["export", "--model", "sam2.1_hiera_small", "--checkpoint", str(tiny_models.sam),
                                 "--image-size", str(SAM_IMAGE_SIZE), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "does not fit the sam2.1_hiera_small model" in result.output
    # an unknown model, a missing checkpoint, a SAM 1 model, an existing folder
    result = runner.invoke(app, ["export", "--model", "sam2.1_hiera_huge", "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "unknown --model 'sam2.1_hiera_huge'" in result.output
    result = runner.invoke(app, ["export", "--model", "sam2.1_hiera_tiny", "--checkpoint", str(tmp_path / "no.pt"),
                                 "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "no.pt" in result.output
    result = runner.invoke(app, ["export", "--model", "sam_vit_b", "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "SAM 2 / SAM 2.1 models only" in result.output
    (tmp_path / "f").mkdir()
    result = runner.invoke(app, ["export", "--model", "sam2.1_hiera_tiny", "--checkpoint", str(tiny_models.sam),
                                 "--out", str(tmp_path / "f")])
    assert result.exit_code == 2 and "already exists" in result.output and "--overwrite" in result.output
    assert not any(p.name != "f" for p in tmp_path.iterdir() if p.name.startswith("f"))


NO_TORCH = '''
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this process")

sys.meta_path.insert(0, NoTorch())
sys.modules["torch"] = None
'''


def test_readme_onnx_runtime_example_runs_without_torch(folder, tmp_path) -> None:
    """README's Export example (fenced ``py``: tests/test_readme.py runs the ``python`` blocks in a
    process with torch), as written, in a process where torch cannot be imported."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    export = readme[readme.index("\n## Export\n"):]
    (snippet,) = re.findall(r"```py\n(.*?)```", export[: export.index("\n## ", 5)], flags=re.DOTALL)
    assert 'OnnxImagePredictor("sam2.1_tiny_onnx/")' in snippet and len(snippet.strip().splitlines()) <= 12
    shutil.copytree(folder, tmp_path / "sam2.1_tiny_onnx")
    img = np.random.default_rng(7).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "photo.jpg")
    check = ("\nassert masks.shape == (1, 50, 70) and clicks.shape == (3, 50, 70) and refined.shape == (1, 50, 70)"
             "\nassert not [m for m in sys.modules if m.split('.')[0] == 'torch' and sys.modules[m] is not None]"
             "\nprint('no torch')")
    (tmp_path / "example.py").write_text(NO_TORCH + snippet + check)
    run = subprocess.run([sys.executable, "example.py"], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin",
                              "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("no torch") and "(1, 50, 70)" in run.stdout
