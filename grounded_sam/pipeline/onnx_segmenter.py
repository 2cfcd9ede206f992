"""An exported ONNX folder as the pipeline's segmenter (``GroundedSAM(..., segmenter="dir/")``).

:class:`OnnxSegmenter` wraps :class:`segmenter.export.runtime.OnnxImagePredictor` in the part of
:class:`segmenter.ImagePredictor` that the pipeline and its users call: ``set_image_batch``,
``predict_low_res(boxes=..., img_idx=...)`` and ``upscale_logits`` (torch tensors in and out, as
the PyTorch predictor's), ``set_image`` / ``predict`` (clicks in the app and the Label Studio
backend), ``mask_threshold``, and a ``fingerprint`` for labeling jobs (the graphs' hashes and
precisions from the manifest). Images of a batch are encoded one at a time, when their boxes
are decoded (the graph's batch dimension would hold every image's features at once; this
keeps one), and an image without boxes is never encoded.

Tracking (``GroundedSAM.track``) runs on the folder's video graphs when it has them (exported
with ``--video``): :meth:`OnnxSegmenter.video_predictor` is the ONNX Runtime video predictor
(``fifo`` and ``quality`` memory), on the same providers; an image-only export refuses with
:data:`NO_VIDEO_GRAPHS`. What needs the PyTorch model refuses with one message
(:data:`IMAGE_ONLY`): the automatic mask generator, the app's video tab.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["IMAGE_ONLY", "NO_VIDEO_GRAPHS", "OnnxSegmenter", "is_onnx_folder", "onnx_segmenter"]

IMAGE_ONLY = ("this segmenter is an exported ONNX folder, which runs its graphs only (set_image / predict, and "
              "GroundedSAM.track with the video graphs); the automatic mask generator and the app's video tab need "
              "the PyTorch segmenter: give its config name and weights instead (segmenter='sam2.1_hiera_tiny', "
              "checkpoint=...)")
NO_VIDEO_GRAPHS = ("this segmenter is an exported ONNX folder with the image graphs only; tracking needs an export "
                   "with the video graphs (grounded-sam export --video) or the PyTorch segmenter: give its config "
                   "name and weights instead (segmenter='sam2.1_hiera_tiny', checkpoint=...)")


def is_onnx_folder(path: Any) -> bool:
    """Whether ``path`` is a folder written by ``grounded-sam export --format onnx`` (it has a manifest)."""
    from segmenter.export.manifest import MANIFEST_NAME

    return isinstance(path, (str, Path)) and (Path(path).expanduser() / MANIFEST_NAME).is_file()


def onnx_segmenter(spec: Any, device: torch.device, image_size: int | None) -> OnnxSegmenter | None:
    """The pipeline's segmenter for ``spec`` when it is an exported folder, an
    :class:`~segmenter.export.runtime.OnnxImagePredictor` or an :class:`OnnxSegmenter`; ``None`` otherwise."""
    from segmenter.export.runtime import (
        OnnxImagePredictor,  # numpy only until a predictor is made
    )

    if isinstance(spec, OnnxSegmenter):
        predictor = spec
    elif isinstance(spec, OnnxImagePredictor):
        predictor = OnnxSegmenter(spec)
    elif is_onnx_folder(spec):
        predictor = OnnxSegmenter.from_folder(spec, device)
    else:
        return None
    if image_size is not None and int(image_size) != predictor.image_size:
        raise ValueError(f"the exported segmenter {str(predictor.folder)!r} takes {predictor.image_size} px inputs, "
                         f"image_size={image_size} was asked for: export again with --image-size {image_size}, "
                         "or leave image_size unset")
    return predictor


class OnnxSegmenter:
    """:class:`segmenter.ImagePredictor`'s pipeline-facing verbs on ONNX Runtime (module docs).

    Args:
        predictor: the ONNX Runtime predictor of an export folder.
    """

    def __init__(self, predictor: Any, providers: list[str] | None = None) -> None:
        self.onnx = predictor
        self.providers = providers  # ONNX Runtime's execution providers (None: its CPU provider)
        self._images: list[np.ndarray] = []
        self._current: int | None = None  # which of _images the ONNX predictor holds

    @classmethod
    def from_folder(cls, folder: str | Path, device: torch.device | str | None = None, **kwargs: Any) -> OnnxSegmenter:
        """Load ``folder`` (manifest hashes checked) on ONNX Runtime's CUDA provider for a CUDA
        ``device`` when this onnxruntime has it, else on its CPU provider."""
        from segmenter.export.runtime import OnnxImagePredictor

        providers = ["CPUExecutionProvider"]
        if device is not None and torch.device(device).type == "cuda":
            import onnxruntime

            if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                providers = ["CUDAExecutionProvider", *providers]
        return cls(OnnxImagePredictor(Path(folder).expanduser(), providers=providers, **kwargs), providers)

    # ------------------------------------------------------------------ what it is
    @property
    def folder(self) -> Path:
        return self.onnx.folder

    @property
    def image_size(self) -> int:
        return int(self.onnx.image_size)

    @property
    def mask_threshold(self) -> float:
        return self.onnx.mask_threshold

    @property
    def device(self) -> torch.device:
        """Where the tensors it returns live (CPU: ONNX Runtime hands back numpy arrays)."""
        return torch.device("cpu")

    @property
    def model(self) -> Any:
        """No PyTorch model behind an exported folder: raises ``ValueError`` (:data:`IMAGE_ONLY`)."""
        raise ValueError(IMAGE_ONLY)

    def video_predictor(self, fill_hole_area: int = 8, memory: str = "fifo") -> Any:
        """The folder's :class:`segmenter.export.OnnxVideoPredictor` (``memory``: ``"fifo"`` or
        ``"quality"``); ``ValueError`` (:data:`NO_VIDEO_GRAPHS`) for an export of the image parts only."""
        from segmenter.export.video_runtime import VIDEO_GRAPHS, OnnxVideoPredictor

        manifest = self.onnx.manifest
        if "video" not in manifest.extra or any(g not in manifest.graphs for g in VIDEO_GRAPHS):
            raise ValueError(NO_VIDEO_GRAPHS)
        # the manifest's hashes were checked when the image graphs were loaded
        return OnnxVideoPredictor(self.folder, fill_hole_area=fill_hole_area, memory=memory, providers=self.providers,
                                  verify=False)

    def fingerprint(self) -> dict[str, Any]:
        """What its masks depend on, for a labeling job: the exported model, the graphs by hash, their
        precisions and the input size (the weights are in the graphs; a re-export with other weights
        or another precision has other hashes)."""
        from segmenter.export.quantize import graph_precisions

        manifest = self.onnx.manifest
        lines = "".join(f"{part}\0{g.sha256}\n" for part, g in sorted(manifest.graphs.items()))
        return {
            "config": manifest.model,
            "backend": "onnxruntime",
            "weights": f"onnx:{hashlib.sha256(lines.encode()).hexdigest()}",
            "precision": graph_precisions(manifest),
            "image_size": int(manifest.image_size),
        }

    # ------------------------------------------------------------------ images
    @property
    def is_image_set(self) -> bool:
        return bool(self._images)

    def reset_predictor(self) -> None:
        self._images, self._current = [], None
        self.onnx.reset_predictor()

    def set_image(self, image: Any) -> None:
        """Embed one RGB image ((H, W, 3) uint8 array or PIL image) now."""
        self.onnx.set_image(image)
        self._images, self._current = [np.asarray(image)], 0

    def set_image_batch(self, image_list: Sequence[Any]) -> None:
        """Remember the images; each is embedded when its prompts are first decoded."""
        from segmenter.image.transforms import as_rgb_array

        if isinstance(image_list, np.ndarray) or not isinstance(image_list, Sequence) or not image_list:
            raise ValueError("set_image_batch expects a non-empty list of images (RGB uint8 arrays or PIL images)")
        images = [as_rgb_array(im, name=f"image_list[{i}]") for i, im in enumerate(image_list)]
        self.reset_predictor()
        self._images = images

    def _select(self, img_idx: int) -> None:
        if not self._images:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        if not 0 <= img_idx < len(self._images):
            raise ValueError(f"img_idx {img_idx} is out of range for {len(self._images)} image(s) set")
        if self._current != img_idx:
            self.onnx.set_image(self._images[img_idx])
            self._current = img_idx

    # ------------------------------------------------------------------ prompts
    def predict_low_res(
        self,
        point_coords: Any = None,
        point_labels: Any = None,
        boxes: Any = None,
        mask_input: Any = None,
        multimask_output: bool = True,
        img_idx: int = 0,
        normalize_coords: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`segmenter.ImagePredictor.predict_low_res`: unclamped low-res logits (B, C, h, w)
        and IoU predictions (B, C), float32 CPU tensors."""
        self._select(img_idx)
        low, iou, _ = self.onnx.predict_low_res(
            _numpy(point_coords), _numpy(point_labels), _numpy(boxes), _numpy(mask_input), multimask_output,
            normalize_coords,
        )
        return torch.from_numpy(low), torch.from_numpy(iou)

    def upscale_logits(self, low_res: torch.Tensor, img_idx: int = 0) -> torch.Tensor:
        """(B, C, h, w) low-res logits -> (B, C, H, W) logits at the size of image ``img_idx``
        (bilinear, as the SAM 2 model's own ``postprocess_masks``)."""
        from segmenter.modeling.transforms import resize_masks

        if not 0 <= img_idx < len(self._images):
            raise ValueError(f"img_idx {img_idx} is out of range for {len(self._images)} image(s) set")
        return resize_masks(low_res.float(), tuple(self._images[img_idx].shape[:2]))

    def predict(self, *args: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`segmenter.export.runtime.OnnxImagePredictor.predict` on the image set (the first of a batch)."""
        self._select(0)
        return self.onnx.predict(*args, **kwargs)


def _numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy() if value.is_floating_point() else value.cpu().numpy()
    return value
