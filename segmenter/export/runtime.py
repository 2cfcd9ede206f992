"""The ONNX Runtime image predictor: the verbs of :class:`segmenter.ImagePredictor`, without torch.

``OnnxImagePredictor(folder)`` loads a folder written by :func:`segmenter.export.to_onnx` (its
manifest's version and file hashes checked first) and runs ``set_image`` / ``predict`` with
numpy pre- and post-processing (:mod:`segmenter.export.numpy_transforms`). It imports numpy and
onnxruntime only (``pip install grounded-sam[onnx]``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segmenter.export.manifest import ExportError, ExportManifest
from segmenter.export.numpy_transforms import (
    coords_to_square_np,
    resize_masks_np,
    resize_to_square_np,
)

__all__ = ["OnnxImagePredictor"]

BOX_LABELS = np.array([2, 3], dtype=np.int64)  # a box enters the decoder as its two corners


class OnnxImagePredictor:
    """``set_image`` runs the exported image encoder; ``predict`` the exported prompt encoder + decoder.

    Args:
        folder: an export folder (``grounded-sam export --format onnx``).
        mask_threshold: logits above it are foreground.
        providers: ONNX Runtime execution providers (default: CPU).
        verify: check the manifest's SHA-256 of every graph before loading (refuse changed files).
        threads: ONNX Runtime intra-op threads (default: ``OMP_NUM_THREADS`` when set, else its own choice).
    """

    def __init__(
        self,
        folder: str | Path,
        mask_threshold: float = 0.0,
        providers: list[str] | None = None,
        verify: bool = True,
        threads: int | None = None,
    ) -> None:
        require_onnxruntime()
        self.folder = Path(folder)
        self.manifest = ExportManifest.read(self.folder, verify=verify)
        missing = {"image_encoder", "mask_decoder"} - set(self.manifest.graphs)
        if missing:
            raise ExportError(f"{str(folder)!r} has no {sorted(missing)} graph(s); export with parts=('image',)")
        self.mask_threshold = float(mask_threshold)
        self.image_size = self.manifest.image_size
        # decoder_cache + mask_decoder_cached: clicks without a mask input reuse per-image work (older
        # exports lack them and decode every prompt with mask_decoder)
        cached = all(g in self.manifest.graphs for g in CACHED_GRAPHS)
        graphs = ("image_encoder", "mask_decoder", *(CACHED_GRAPHS if cached else ()))
        sessions = open_sessions(self.folder, self.manifest, graphs, providers, threads)
        self._encoder, self._decoder = sessions["image_encoder"], sessions["mask_decoder"]
        self._cache_graph, self._cached_decoder = sessions.get("decoder_cache"), sessions.get("mask_decoder_cached")
        self._side: dict[str, np.ndarray] = {}  # decoder_cache's outputs for the image set
        spec = {t.name: t for t in self.manifest.graphs["mask_decoder"].inputs}
        self._low_hw = tuple(int(d) for d in spec["mask_input"].shape[-2:])
        self._features: dict[str, np.ndarray] | None = None
        self._orig_hw: tuple[int, int] | None = None

    # ------------------------------------------------------------------ state
    @property
    def is_image_set(self) -> bool:
        return self._features is not None

    def reset_predictor(self) -> None:
        self._features = None
        self._side = {}
        self._orig_hw = None

    def set_image(self, image: Any) -> None:
        """Embed one RGB image ((H, W, 3) uint8 array or PIL image)."""
        self.reset_predictor()
        img = np.asarray(image)  # a PIL image converts itself
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
            raise ValueError(f"image must be an (H, W, 3) uint8 RGB array or PIL image, got {img.dtype} {img.shape}")
        x = resize_to_square_np(img, self.image_size)  # (1, 3, S, S)
        embed, f0, f1 = self._encoder.run(["image_embed", "high_res_feats_0", "high_res_feats_1"], {"image": x})
        self._features = {"image_embed": embed, "high_res_feats_0": f0, "high_res_feats_1": f1}
        if self._cache_graph is not None:
            names = [t.name for t in self.manifest.graphs["decoder_cache"].outputs]
            self._side = dict(zip(names, self._cache_graph.run(names, {"image_embed": embed})))
        self._orig_hw = (int(img.shape[0]), int(img.shape[1]))

    @property
    def features(self) -> dict[str, np.ndarray]:
        """The image encoder's outputs for the image set, by name (see the manifest)."""
        return dict(self._require_features())

    def get_image_embedding(self) -> np.ndarray:
        """The (1, C, h, w) embedding of the image set."""
        return self._require_features()["image_embed"]

    def _require_features(self) -> dict[str, np.ndarray]:
        if self._features is None:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        return self._features

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`segmenter.ImagePredictor.predict`: masks (C, H, W) or (B, C, H, W) float 0/1
        (logits with ``return_logits``), IoU (C,) / (B, C), low-res logits clamped as the model's
        predictor does. Needs at least one point or box."""
        low, iou, _ = self.predict_low_res(point_coords, point_labels, box, mask_input, multimask_output,
                                           normalize_coords)
        masks = resize_masks_np(low, self._orig_hw)  # (B, C, H, W)
        if not return_logits:
            masks = (masks > self.mask_threshold).astype(np.float32)
        clamp = self.manifest.low_res_clamp
        if clamp is not None:
            low = np.clip(low, -clamp, clamp)
        if low.shape[0] == 1:
            return masks[0], iou[0], low[0]
        return masks, iou, low

    def predict_low_res(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unclamped low-res logits (B, C, h, w), IoU (B, C) and object score logits (B, 1)."""
        feats = self._require_features()
        coords, labels = self._prompts(point_coords, point_labels, box, normalize_coords)  # (P, N, 2), (P, N)
        p = coords.shape[0]
        if mask_input is None and self._side:
            multi_low, multi_iou, single_low, single_iou, obj = self._cached_decoder.run(
                None, {**feats, "point_coords": coords, "point_labels": labels, **self._side}
            )
            return (multi_low, multi_iou, obj) if multimask_output else (single_low, single_iou, obj)
        if mask_input is None:
            masks_in = np.zeros((p, 1, *self._low_hw), dtype=np.float32)
            has_mask = np.zeros(1, dtype=np.float32)
        else:
            masks_in = np.asarray(mask_input, dtype=np.float32)
            masks_in = masks_in[None] if masks_in.ndim == 3 else masks_in
            if masks_in.ndim != 4 or masks_in.shape[1:] != (1, *self._low_hw) or masks_in.shape[0] not in (1, p):
                raise ValueError(
                    f"mask_input must have shape (1, {self._low_hw[0]}, {self._low_hw[1]}) or ({p}, 1, "
                    f"{self._low_hw[0]}, {self._low_hw[1]}) (low-res logits of a previous predict), got {np.shape(mask_input)}"
                )
            masks_in = np.ascontiguousarray(np.broadcast_to(masks_in, (p, 1, *self._low_hw)))
            has_mask = np.ones(1, dtype=np.float32)
        out = self._decoder.run(
            None,
            {**feats, "point_coords": coords, "point_labels": labels, "mask_input": masks_in, "has_mask_input": has_mask},
        )
        multi_low, multi_iou, single_low, single_iou, obj = out
        return (multi_low, multi_iou, obj) if multimask_output else (single_low, single_iou, obj)

    def _prompts(
        self, point_coords: Any, point_labels: Any, box: Any, normalize_coords: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Points and boxes -> coords (P, N, 2) float32 in model-input pixels, labels (P, N) int64."""
        orig_hw, s, normalized = self._orig_hw, self.image_size, not normalize_coords
        coords = labels = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords (1 = foreground, 0 = background)")
            c = np.asarray(point_coords, dtype=np.float32)
            lab = np.asarray(point_labels)
            if c.ndim not in (2, 3) or c.shape[-1] != 2 or lab.shape != c.shape[:-1] or c.shape[-2] == 0:
                raise ValueError(f"point_coords (N, 2) / (B, N, 2) and point_labels (N,) / (B, N), got {c.shape}, {lab.shape}")
            if not np.isin(lab, (0, 1)).all():
                raise ValueError("point_labels must be 0 (background) or 1 (foreground)")
            coords = coords_to_square_np(c, orig_hw, s, normalized)
            labels = lab.astype(np.int64)
            if coords.ndim == 2:
                coords, labels = coords[None], labels[None]
        if box is not None:
            b = np.asarray(box, dtype=np.float32)
            b = b[None] if b.shape == (4,) else b
            if b.ndim != 2 or b.shape[1] != 4 or b.shape[0] == 0:
                raise ValueError(f"box must have shape (4,) or (B, 4) in xyxy format, got {np.shape(box)}")
            corners = coords_to_square_np(b.reshape(-1, 2, 2), orig_hw, s, normalized)  # (B, 2, 2)
            corner_labels = np.broadcast_to(BOX_LABELS, (len(corners), 2))
            if coords is None:
                coords, labels = corners, corner_labels
            else:
                if coords.shape[0] not in (1, len(corners)):
                    raise ValueError(f"{len(corners)} boxes but {coords.shape[0]} point sets; "
                                     "give one point set per box or a single shared one")
                coords = np.broadcast_to(coords, (len(corners), *coords.shape[1:]))
                labels = np.broadcast_to(labels, (len(corners), labels.shape[1]))
                coords = np.concatenate([corners, coords], axis=1)
                labels = np.concatenate([corner_labels, labels], axis=1)
        if coords is None:
            raise ValueError("the ONNX predictor needs at least one point or box prompt")
        return np.ascontiguousarray(coords, dtype=np.float32), np.ascontiguousarray(labels, dtype=np.int64)


CACHED_GRAPHS = ("decoder_cache", "mask_decoder_cached")


def open_sessions(
    folder: Path, manifest: ExportManifest, graphs: Sequence[str], providers: list[str] | None, threads: int | None
) -> dict[str, Any]:
    """One ONNX Runtime session per graph of ``manifest`` named in ``graphs`` (default provider: CPU;
    ``threads``: intra-op threads, else :func:`env_threads`, else ONNX Runtime's choice: one per core).
    Warnings stay quiet (fp16 graphs on the CPU note the ops left unfolded)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    threads = threads if threads is not None else env_threads()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    providers = providers or ["CPUExecutionProvider"]
    # On the CPU, ONNX Runtime's fused Add + LayerNorm kernel is slower than the two ops it replaces
    # (the decoder's 4096-token layer norms: ~9 ms vs ~2 ms each at 1024 px, one thread).
    off = CPU_DISABLED_OPTIMIZERS if providers[0] == "CPUExecutionProvider" else ()
    return {g: ort.InferenceSession(str(Path(folder) / manifest.graphs[g].file), opts, providers=providers,
                                    disabled_optimizers=list(off))
            for g in graphs}


CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def env_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a thread count, or None when unset or not a positive integer.

    The CPU build of ONNX Runtime has its own thread pool and ignores the variable, which torch
    follows and which Ray sets to each worker's CPUs; without it, a session in a one-CPU Ray worker
    would start a spinning thread on every core of the node.
    """
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def require_onnxruntime() -> None:
    """Raise a clear ImportError where onnxruntime is not installed."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ImportError("the ONNX Runtime predictor needs onnxruntime: pip install 'grounded-sam[onnx]'") from None
