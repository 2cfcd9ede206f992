"""What a pipeline's labels depend on, as JSON: the fingerprint a labeling job keeps.

A rerun of ``label`` into the same folder is accepted only with the same fingerprint
(:mod:`grounded_sam.labeling.store`), so it holds every setting that can change a label, with
defaults filled in (the values in effect, not the arguments as given), and each model's weights
by content (:mod:`grounded_sam.pipeline.weights`): the same weights at another path are the same weights.

Left out on purpose: the device and autocast (the same model on CPU and CUDA labels alike up to
bf16 rounding), batch sizes and other speed-only options. A new option that can change a label
joins the fingerprint in the same change, or a rerun could mix it into a dataset: tiled detection
(:mod:`grounded_sam.pipeline.tiling`) adds a ``"tiling"`` entry, left out when off so that jobs
labeled before tiling existed still match; masks from windows (:mod:`grounded_sam.pipeline.windows`)
add a ``"windows"`` entry (:func:`~grounded_sam.pipeline.windows.windows_fingerprint`) wherever they
can be used: with ``windows=True``, or by default on a tiled pipeline (so a tiled job labeled before
windows existed is refused rather than mixed with window masks).
"""

from __future__ import annotations

from typing import Any

from grounded_sam.pipeline.weights import module_weights_id, weights_id

__all__ = ["FINGERPRINT_VERSION", "detector_fingerprint", "segmenter_fingerprint"]

FINGERPRINT_VERSION = 2  # 1: ontology, detector class and path, segmenter name, multimask, postprocess


def detector_fingerprint(detector: Any) -> dict[str, Any]:
    """A detector's family, its output-changing options (``detector.settings()`` when it has one)
    and its weights: the checkpoint it was loaded from, or the tensors of a model built by hand."""
    settings = getattr(detector, "settings", None)
    out: dict[str, Any] = dict(settings()) if callable(settings) else {"family": type(detector).__qualname__}
    out["weights"] = _detector_weights(detector)
    return out


def _detector_weights(detector: Any) -> str | None:
    import torch

    from detectors import DetectorSpec

    spec = getattr(detector, "build_spec", None)
    source = getattr(detector, "model_id", None) or getattr(spec, "model_id", None)
    if isinstance(spec, DetectorSpec) and source:  # loaded by load_detector from a hub id or folder
        return weights_id(source)
    model = getattr(detector, "model", None)
    return module_weights_id(model) if isinstance(model, torch.nn.Module) else None


def segmenter_fingerprint(predictor: Any, multimask: bool) -> dict[str, Any]:
    """An :class:`segmenter.ImagePredictor`'s model config, weights, input size, mask threshold
    and whether the best of 3 masks is kept."""
    from segmenter import ModelSpec

    own = getattr(predictor, "fingerprint", None)  # a segmenter that is no torch model (an exported ONNX folder)
    if callable(own):
        return {**own(), "mask_threshold": float(predictor.mask_threshold), "multimask": bool(multimask)}
    model = predictor.model
    spec = getattr(model, "build_spec", None)
    return {
        "config": getattr(getattr(model, "config", None), "name", type(model).__qualname__),
        "weights": weights_id(spec.checkpoint) if isinstance(spec, ModelSpec) else module_weights_id(model),
        "image_size": int(model.image_size),
        "mask_threshold": float(predictor.mask_threshold),
        "multimask": bool(multimask),
    }
