"""Precision of an exported folder: fp16 graphs for GPU providers, an int8 image encoder for CPUs.

A post-processing step on a folder written by :func:`segmenter.export.to_onnx` (fp32):
:func:`convert_precision` rewrites its graphs and manifest, and reports what the change costs:
the mask IoU of the converted graphs against the fp32 ones on a fixed synthetic sample (a few
images with box and point prompts, :func:`accuracy_sample`).

* ``precision="fp16"``: every graph converted with ONNX Runtime's own converter
  (``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``): inputs and
  outputs stay float32, so :class:`~segmenter.export.runtime.OnnxImagePredictor` and its callers
  do not change. Meant for GPU providers (CUDA, TensorRT, DirectML); the CPU provider runs it too,
  mostly slower than fp32.
* ``quantize="int8"``: the image encoder's weights quantized with
  ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations quantized per call);
  the decoder stays fp32 (it is small and its logits are what the masks are thresholded from).

The manifest (written through :class:`~segmenter.export.manifest.ExportManifest`) names the new
files and their SHA-256; its ``extra`` holds ``"precision"`` (part -> ``"fp32"`` / ``"fp16"`` /
``"int8"``) and ``"accuracy"`` (:class:`AccuracyReport` as a dict). The folder is rewritten beside
and swapped into place: a failed conversion leaves the fp32 export as it was.

Needs onnx and onnxruntime (the ``[onnx]`` extra); no torch.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segmenter.export.manifest import ExportError, ExportManifest, sha256_file

__all__ = ["PRECISIONS", "QUANTIZATIONS", "AccuracyReport", "SamplePrompt", "accuracy_sample", "convert_precision",
           "graph_precisions", "measure_accuracy"]

PRECISIONS = ("fp32", "fp16")
QUANTIZATIONS = ("none", "int8")
QUANTIZED_PARTS = ("image_encoder",)  # what --quantize int8 quantizes


@dataclass(frozen=True)
class AccuracyReport:
    """Masks of the converted graphs against the fp32 graphs on :func:`accuracy_sample`.

    Attributes:
        mean_iou, min_iou: over every prompt of the sample (IoU of the thresholded full-size
            masks; two empty masks count as 1.0).
        images, prompts: the sample's size.
        reference: what was compared against (``"fp32"``).
        provider: the ONNX Runtime provider both ran on.
        precision: part -> precision of the graphs measured.
    """

    mean_iou: float
    min_iou: float
    images: int
    prompts: int
    reference: str
    provider: str
    precision: dict[str, str]

    def summary(self) -> str:
        kinds = ", ".join(f"{part} {p}" for part, p in sorted(self.precision.items()))
        return (f"mask IoU vs {self.reference}: mean {self.mean_iou:.4f}, min {self.min_iou:.4f} over "
                f"{self.prompts} prompts on {self.images} sample images ({kinds}; {self.provider})")


@dataclass(frozen=True, eq=False)
class SamplePrompt:
    """One prompt of the accuracy sample: a box (4,) xyxy, or one foreground click (1, 2)."""

    image: int  # index into the sample's images
    box: np.ndarray | None = None
    point: np.ndarray | None = None


def accuracy_sample(seed: int = 0) -> tuple[list[np.ndarray], list[SamplePrompt]]:
    """Three synthetic RGB images (a smooth background with coloured rectangles and discs, some
    noise) and, per shape, a box around it and a click on it. Fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    prompts: list[SamplePrompt] = []
    for i, (h, w) in enumerate([(480, 640), (512, 384), (300, 300)]):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([xx / w, yy / h, 1 - xx / w], axis=-1) * 160 + 40  # (H, W, 3) gradient
        img = base + rng.normal(0, 8, (h, w, 3))
        for k in range(3):
            cw, ch = int(rng.integers(w // 6, w // 3)), int(rng.integers(h // 6, h // 3))
            x0, y0 = int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))
            color = rng.integers(0, 256, 3)
            if k % 2:  # a disc in the rectangle
                inside = ((xx - x0 - cw / 2) / (cw / 2)) ** 2 + ((yy - y0 - ch / 2) / (ch / 2)) ** 2 <= 1
                img[inside] = color
            else:
                img[y0 : y0 + ch, x0 : x0 + cw] = color
            prompts.append(SamplePrompt(i, box=np.array([x0, y0, x0 + cw, y0 + ch], dtype=np.float32)))
            prompts.append(SamplePrompt(i, point=np.array([[x0 + cw / 2, y0 + ch / 2]], dtype=np.float32)))
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    return images, prompts


def graph_precisions(manifest: ExportManifest) -> dict[str, str]:
    """Part -> precision recorded in ``manifest`` (a folder never converted is fp32 throughout)."""
    recorded = manifest.extra.get("precision") or {}
    return {part: str(recorded.get(part, "fp32")) for part in manifest.graphs}


def convert_precision(
    folder: str | Path,
    precision: str = "fp32",
    quantize: str = "none",
    providers: list[str] | None = None,
    seed: int = 0,
) -> tuple[ExportManifest, AccuracyReport | None]:
    """Convert the fp32 export in ``folder`` in place; returns its new manifest and the accuracy
    report (``None`` when nothing changed: fp32 and no quantization, which still records the
    precision of each graph in the manifest).

    ``providers``: where the report's two runs go (default: CPU; the fp16 figures on the CPU
    provider stand in for a GPU's, whose fp16 kernels round differently).
    """
    if precision not in PRECISIONS:
        raise ExportError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"quantize {quantize!r} is not one of {', '.join(QUANTIZATIONS)}")
    if precision == "fp16" and quantize == "int8":
        raise ExportError("choose fp16 (GPU providers) or int8 quantization (CPUs), not both: "
                          "int8 dynamic quantization runs on ONNX Runtime's CPU provider")
    folder = Path(folder)
    manifest = ExportManifest.read(folder)
    before = graph_precisions(manifest)
    if any(p != "fp32" for p in before.values()):
        raise ExportError(f"{str(folder)!r} was converted already ({before}); convert a fresh fp32 export")
    target = {part: ("int8" if quantize == "int8" and part in QUANTIZED_PARTS else precision) for part in manifest.graphs}
    if all(p == "fp32" for p in target.values()):
        manifest = dataclasses.replace(manifest, extra={**manifest.extra, "precision": target})
        manifest.write(folder)
        return manifest, None

    staging = folder.with_name(folder.name + ".converting")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    old = folder.with_name(folder.name + ".fp32")
    try:
        graphs = {}
        for part, spec in manifest.graphs.items():
            src = folder / spec.file
            if target[part] == "fp32":
                dst = staging / spec.file
                shutil.copyfile(src, dst)
            else:
                dst = staging / f"{Path(spec.file).stem}.{target[part]}.onnx"
                _convert(src, dst, target[part])
            graphs[part] = dataclasses.replace(spec, file=dst.name, sha256=sha256_file(dst))
        converted = dataclasses.replace(manifest, graphs=graphs, extra={**manifest.extra, "precision": target})
        converted.write(staging)
        report = measure_accuracy(folder, staging, providers, seed)
        converted = dataclasses.replace(converted, extra={**converted.extra, "accuracy": dataclasses.asdict(report)})
        converted.write(staging)
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
        try:
            staging.rename(folder)
        except OSError:
            old.rename(folder)  # the fp32 export back in place
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return converted, report


def _convert(src: Path, dst: Path, precision: str) -> None:
    import onnx

    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(model, str(dst))
    elif precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quiet = logging.getLogger()  # the tool logs a "consider pre-processing" hint on the root logger
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        finally:
            quiet.setLevel(level)
    else:  # pragma: no cover - checked by the caller
        raise ExportError(f"no conversion to {precision!r}")


def measure_accuracy(reference: str | Path, converted: str | Path, providers: list[str] | None = None,
                     seed: int = 0) -> AccuracyReport:
    """Masks of the export folder ``converted`` against those of ``reference`` on :func:`accuracy_sample`."""
    from segmenter.export.runtime import OnnxImagePredictor

    providers = providers or ["CPUExecutionProvider"]
    ref = OnnxImagePredictor(reference, providers=providers)
    new = OnnxImagePredictor(converted, providers=providers)
    images, prompts = accuracy_sample(seed)
    ious: list[float] = []
    for i, image in enumerate(images):
        ref.set_image(image)
        new.set_image(image)
        for p in (p for p in prompts if p.image == i):
            kw: dict[str, Any] = ({"box": p.box} if p.box is not None
                                  else {"point_coords": p.point, "point_labels": np.ones(len(p.point), np.int64)})
            a = ref.predict(multimask_output=False, **kw)[0][0] > 0
            b = new.predict(multimask_output=False, **kw)[0][0] > 0
            union = np.logical_or(a, b).sum()
            ious.append(1.0 if union == 0 else float(np.logical_and(a, b).sum() / union))
    return AccuracyReport(
        mean_iou=float(np.mean(ious)), min_iou=float(np.min(ious)), images=len(images), prompts=len(ious),
        reference="fp32", provider=providers[0], precision=graph_precisions(new.manifest),
    )
