"""segmenter.export.quantize: ``grounded-sam export --quantize int8`` / ``--precision fp16`` on a tiny
random SAM 2.1 (256 px): the converted graphs run in ONNX Runtime, the export's accuracy report is
the IoU the test recomputes against the fp32 graphs, and the manifest names the new files, their
hashes and precisions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from tiny import SAM_IMAGE_SIZE, export_log
from typer.testing import CliRunner

from grounded_sam.cli import app
from segmenter.export import ExportError, ExportManifest, OnnxImagePredictor
from segmenter.export.manifest import sha256_file
from segmenter.export.quantize import accuracy_sample, convert_precision


@pytest.fixture(scope="module")
def fp32(tiny_onnx) -> Path:
    """The tiny checkpoint exported by the CLI at fp32 (the suite's shared ``tiny_onnx``, read-only: each
    test converts a copy)."""
    assert "IoU" not in export_log(tiny_onnx).read_text()  # nothing converted, nothing to report
    return tiny_onnx


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else (a & b).sum() / union


def _recomputed_ious(reference: Path, converted: Path) -> list[float]:
    """The sample's masks through both folders, IoU per prompt, computed here from the predictors' outputs."""
    ref, new = OnnxImagePredictor(reference, threads=1), OnnxImagePredictor(converted, threads=1)
    images, prompts = accuracy_sample()
    out, current = [], None
    for p in prompts:
        if p.image != current:
            current = p.image
            for predictor in (ref, new):
                predictor.set_image(images[p.image])
        kw = {"box": p.box} if p.box is not None else {"point_coords": p.point, "point_labels": np.array([1])}
        masks = [pr.predict(multimask_output=False, **kw)[0][0] > 0.5 for pr in (ref, new)]
        assert masks[0].shape == images[p.image].shape[:2]
        out.append(_iou(*masks))
    return out


def test_int8_export_reports_its_iou(fp32, tiny_models, tmp_path, monkeypatch) -> None:
    manifest32 = json.loads((fp32 / "manifest.json").read_text())
    assert manifest32["extra"]["precision"] == {"image_encoder": "fp32", "mask_decoder": "fp32", "decoder_cache": "fp32", "mask_decoder_cached": "fp32"}
    out = tmp_path / "int8"

    def export_once(model, folder, parts, options):  # the fp32 graphs of the fixture (the same model): one export per file
        assert parts == ("image",) and options.model_name == "sam2.1_hiera_tiny" and model.image_size == SAM_IMAGE_SIZE
        shutil.copytree(fp32, folder)

    monkeypatch.setattr("segmenter.export.onnx.to_onnx", export_once)
    args = ["export", "--model", "sam2.1_hiera_tiny", "--checkpoint", str(tiny_models.sam),
            "--image-size", str(SAM_IMAGE_SIZE), "--out", str(out), "--quantize", "int8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = ExportManifest.read(out)  # hashes verified
    data = json.loads((out / "manifest.json").read_text())
    assert data["extra"]["precision"] == {"image_encoder": "int8", "mask_decoder": "fp32", "decoder_cache": "fp32", "mask_decoder_cached": "fp32"}
    enc = manifest.graphs["image_encoder"]
    assert enc.file == "image_encoder.int8.onnx" and enc.sha256 == sha256_file(out / enc.file)
    assert sorted(p.name for p in out.iterdir()) == ["decoder_cache.onnx", "image_encoder.int8.onnx", "manifest.json",
                                                       "mask_decoder.onnx", "mask_decoder_cached.onnx"]
    assert manifest.graphs["mask_decoder"].sha256 == manifest32["graphs"]["mask_decoder"]["sha256"]
    # int8 weights in the graph, a quarter of the fp32 size or so
    model = onnx.load(str(out / enc.file))
    assert any(init.data_type == onnx.TensorProto.INT8 for init in model.graph.initializer)
    assert (out / enc.file).stat().st_size < 0.5 * (fp32 / "image_encoder.onnx").stat().st_size
    # the report: printed, stored, and the IoU recomputed here from both folders
    acc = data["extra"]["accuracy"]
    ious = _recomputed_ious(fp32, out)
    assert len(ious) == acc["prompts"] == 18 and acc["images"] == 3
    assert 0.0 <= acc["min_iou"] <= acc["mean_iou"] <= 1.0
    assert acc["mean_iou"] == pytest.approx(np.mean(ious), abs=1e-9)
    assert acc["min_iou"] == pytest.approx(np.min(ious), abs=1e-9)
    assert f"mean {acc['mean_iou']:.4f}" in result.output and "vs fp32" in result.output
    # the int8 encoder's features differ from fp32 (it is not the fp32 graph under another name)
    ref, new = OnnxImagePredictor(fp32, threads=1), OnnxImagePredictor(out, threads=1)
    img = accuracy_sample()[0][0]
    ref.set_image(img)
    new.set_image(img)
    diff = np.abs(ref.get_image_embedding() - new.get_image_embedding())
    assert 0 < diff.max() < 0.5 * np.abs(ref.get_image_embedding()).max()
    # a changed int8 file is refused like any other
    with open(out / enc.file, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ExportError, match="does not match its manifest"):
        OnnxImagePredictor(out)


def test_fp16_graphs_run_on_the_cpu_provider(fp32, tmp_path) -> None:
    folder = _copy(fp32, tmp_path / "fp16")
    manifest, report = convert_precision(folder, precision="fp16")
    assert ExportManifest.read(folder).graphs == manifest.graphs  # hashes verified on read
    assert manifest.extra["precision"] == {"image_encoder": "fp16", "mask_decoder": "fp16", "decoder_cache": "fp16", "mask_decoder_cached": "fp16"}
    for part, spec in manifest.graphs.items():
        assert spec.file == f"{part}.fp16.onnx"
        graph = onnx.load(str(folder / spec.file)).graph
        kinds = {init.data_type for init in graph.initializer}
        assert onnx.TensorProto.FLOAT16 in kinds  # weights in fp16
        assert all(t.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 for t in [*graph.input, *graph.output])
    # same verbs and dtypes for the caller; masks close to fp32
    ref, half = OnnxImagePredictor(fp32, threads=1), OnnxImagePredictor(folder, threads=1)
    img = accuracy_sample()[0][1]
    box = np.array([40.0, 60.0, 300.0, 400.0])
    ref.set_image(img)
    half.set_image(img)
    (m32, iou32, low32), (m16, iou16, low16) = (p.predict(box=box, return_logits=True) for p in (ref, half))
    assert m16.dtype == np.float32 and m16.shape == m32.shape and low16.shape == low32.shape
    assert np.abs(iou16 - iou32).max() < 0.05 and np.abs(low16 - low32).max() < 0.05 * np.abs(low32).max() + 0.05
    assert report is not None and manifest.extra["accuracy"]["mean_iou"] == report.mean_iou
    assert 0.0 <= report.min_iou <= report.mean_iou <= 1.0 and report.prompts == 18
    assert report.precision == {"image_encoder": "fp16", "mask_decoder": "fp16", "decoder_cache": "fp16", "mask_decoder_cached": "fp16"}
    with pytest.raises(ExportError, match="converted already"):
        convert_precision(folder, quantize="int8")


def test_bad_precision_requests(fp32, tmp_path) -> None:
    runner = CliRunner()
    base = ["export", "--model", "sam2.1_hiera_tiny", "--out", str(tmp_path / "x")]
    result = runner.invoke(app, [*base, "--precision", "int4"])
    assert result.exit_code == 2 and "--precision 'int4'" in result.output and "fp16" in result.output
    result = runner.invoke(app, [*base, "--quantize", "uint4"])
    assert result.exit_code == 2 and "--quantize 'uint4'" in result.output and "int8" in result.output
    result = runner.invoke(app, [*base, "--precision", "fp16", "--quantize", "int8"])
    assert result.exit_code == 2 and "choose one" in result.output
    assert not (tmp_path / "x").exists()
    folder = _copy(fp32, tmp_path / "copy")
    with pytest.raises(ExportError, match="not both"):
        convert_precision(folder, precision="fp16", quantize="int8")
    before = sha256_file(folder / "image_encoder.onnx")
    with open(folder / "image_encoder.onnx", "ab") as f:  # a damaged fp32 export is not converted
        f.write(b"\0")
    with pytest.raises(ExportError, match="does not match its manifest"):
        convert_precision(folder, quantize="int8")
    assert sha256_file(folder / "image_encoder.onnx") != before and not (tmp_path / "copy.converting").exists()
