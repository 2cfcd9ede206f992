"""SAM 2 / SAM 2.1 image parts to ONNX: the image encoder and the prompt encoder + mask decoder.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript). It captures the
graph with symbolic batch / prompt dimensions and fails loudly where Python control flow would
bake a shape into the graph, where the TorchScript tracer would silently record the traced
branch; it is also the exporter PyTorch maintains (the TorchScript one is deprecated).

Graphs (see the manifest for names and shapes):

* ``image_encoder.onnx``: ``image`` (B, 3, S, S) normalised -> ``image_embed`` (B, C, h, w)
  (no-memory embedding added), ``high_res_feats_0`` (B, C/8, 4h, 4w), ``high_res_feats_1``
  (B, C/4, 2h, 2w); B is dynamic.
* ``mask_decoder.onnx``: one image's features, ``point_coords`` (P, N, 2) in model-input pixels,
  ``point_labels`` (P, N) int64 (0/1 clicks, 2/3 box corners, -1 padding), ``mask_input``
  (P, 1, 4h, 4w) and ``has_mask_input`` (1,) -> multimask and single-mask low-res logits and IoU
  scores and ``object_score_logits`` (P, 1); P prompt sets and N points are dynamic. Both mask
  outputs come from one decoder pass (single-mask applies the model's stability fallback).
* ``decoder_cache.onnx``: ``image_embed`` (1, C, h, w) -> ``t2i_keys``, ``t2i_values``,
  ``i2t_queries`` (1, hw, C_i): the decoder's first-block projections of the image tokens, which
  no point or box changes; run once per image.
* ``mask_decoder_cached.onnx``: ``mask_decoder.onnx`` without the mask input, on those three
  tensors instead of recomputing them: the same outputs with about a fifth less work per click.

Video parts (``parts=("image", "video")``; the tracking step's tensor math, see
:mod:`segmenter.export.video_graphs`; the image encoder's ``vision_features`` output feeds them):

* ``memory_attention.onnx``: ``vision_features`` (1, C, h, w), ``memory`` (B, F, HW, D),
  ``memory_slots`` (B, F) int64, ``obj_ptrs`` (B, P, C), ``ptr_offsets`` (B, P), ``ptr_tpos_max``
  (1,) -> ``pix_feat`` (B, C, h, w); B objects, F memory frames and P pointers are dynamic.
* ``video_heads.onnx``: ``pix_feat`` (B, C, h, w), the high-res features, prompts (B, N, ...),
  ``mask_input``, ``has_mask_input``, ``present_threshold`` (B, 1) -> gated multimask / single
  logits, IoUs and object pointers, ``object_score_logits``.
* ``memory_encoder.onnx``: ``vision_features``, ``mask_logits`` (B, 1, 4h, 4w),
  ``object_score_logits`` (B, 1), ``binarize`` (1,) -> ``maskmem`` (B, HW, D).

fp32 only.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from segmenter.export.manifest import (
    EXPORT_VERSION,
    ExportError,
    ExportManifest,
    GraphSpec,
    TensorSpec,
    sha256_file,
)
from segmenter.export.image_graphs import (
    CACHE_OUT,
    CACHED_DECODER_IN,
    DECODER_IN,
    DECODER_OUT,
    ENCODER_IN,
    ENCODER_OUT,
    CachedMaskDecoderGraph,
    DecoderCacheGraph,
    ImageEncoderGraph,
    MaskDecoderGraph,
)
from segmenter.export.video_graphs import (
    MemoryAttentionGraph,
    MemoryEncoderGraph,
    VideoHeadsGraph,
)
from segmenter.modeling.sam2 import SAM2Model
from segmenter.video.tracking import NO_OBJ_SCORE

__all__ = ["ImageEncoderGraph", "MaskDecoderGraph", "OnnxExportOptions", "to_onnx"]

PARTS = ("image", "video")


@dataclass(frozen=True)
class OnnxExportOptions:
    """How :func:`to_onnx` exports.

    Attributes:
        opset: ONNX opset of the graphs.
        overwrite: replace an existing output folder (refused otherwise).
        model_name: recorded in the manifest (default: the config's name).
    """

    opset: int = 18
    overwrite: bool = False
    model_name: str | None = None


def to_onnx(
    model: SAM2Model,
    out: str | Path,
    parts: Sequence[str] = ("image",),
    options: OnnxExportOptions | None = None,
) -> ExportManifest:
    """Export ``model``'s ``parts`` as fp32 ONNX graphs into the new folder ``out``.

    ``"image"``: image encoder + prompt encoder / mask decoder; ``"video"`` (needs ``"image"`` and a
    model with memory modules): memory attention, memory encoder and the tracking heads
    (:mod:`segmenter.export.video_graphs`).

    Returns the manifest written as ``out/manifest.json``. The folder must not exist unless
    ``options.overwrite``; it is written beside and renamed into place, so a failed export leaves
    no half-written folder.
    """
    opts = options or OnnxExportOptions()
    if not isinstance(model, SAM2Model):
        raise ExportError(f"ONNX export supports SAM 2 / SAM 2.1 models, got {type(model).__name__}")
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ExportError(f"unknown export parts {unknown or list(parts)}; available: {list(PARTS)}")
    if "video" in parts and "image" not in parts:
        raise ExportError("the video parts run on the image encoder's features: export parts=('image', 'video')")
    if "video" in parts and not getattr(model, "with_memory", False):
        raise ExportError("video parts need a SAM 2 model with its memory modules (memory attention / encoder)")
    out = Path(out)
    if out.exists() and not opts.overwrite:
        raise ExportError(f"output folder {str(out)!r} already exists; choose another or pass overwrite (--overwrite)")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())):
        raise ExportError(f"{str(out)!r} is not an export folder (no manifest.json); overwrite replaces only those")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = _export_image_parts(model, tmp, opts, video="video" in parts)
        manifest.write(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _export_image_parts(model: SAM2Model, folder: Path, opts: OnnxExportOptions, video: bool) -> ExportManifest:
    m = copy.deepcopy(model).float().cpu().eval()
    s, cfg = m.image_size, m.config
    e = cfg.embed_size
    dim = cfg.decoder.transformer_dim
    c0, c1 = m.sam_mask_decoder.conv_s0.out_channels, m.sam_mask_decoder.conv_s1.out_channels

    batch = torch.export.Dim("batch", min=1, max=64)
    prompts = torch.export.Dim("num_prompts", min=1, max=1024)
    points = torch.export.Dim("num_points", min=1, max=256)
    image = torch.randn(2, 3, s, s)
    enc = ImageEncoderGraph(m).eval()
    dec = MaskDecoderGraph(m).eval()
    with torch.no_grad():
        embed, f0, f1, _ = enc(image[:1])
    dec_args = (
        embed, f0, f1,
        torch.rand(2, 3, 2) * s, torch.tensor([[2, 3, 1], [2, 3, 0]]),
        torch.randn(2, 1, 4 * e, 4 * e), torch.ones(1),
    )
    dyn = {
        "image_embed": None, "high_res_feats_0": None, "high_res_feats_1": None,
        "point_coords": {0: prompts, 1: points}, "point_labels": {0: prompts, 1: points},
        "mask_input": {0: prompts}, "has_mask_input": None,
    }
    # exported with grad mode on: the CPU inference fast paths (token chunking, which picks
    # its chunks from the batch size) stay off and the graph has no shape-dependent branches
    with torch.enable_grad():
        _export(enc, (image,), {"image": {0: batch}}, ENCODER_IN, ENCODER_OUT, folder / "image_encoder.onnx", opts)
        _export(dec, dec_args, dyn, DECODER_IN, DECODER_OUT, folder / "mask_decoder.onnx", opts)
        cache = DecoderCacheGraph(m).eval()
        _export(cache, (embed,), {"image_embed": None}, DECODER_IN[:1], CACHE_OUT, folder / "decoder_cache.onnx", opts)
        with torch.no_grad():
            side = cache(embed)
        cached_dyn = {**{k: dyn[k] for k in DECODER_IN[:5]}, **dict.fromkeys(CACHE_OUT)}
        _export(CachedMaskDecoderGraph(m).eval(), (*dec_args[:5], *side), cached_dyn, CACHED_DECODER_IN, DECODER_OUT,
                folder / "mask_decoder_cached.onnx", opts)
    _check_dims(folder / "image_encoder.onnx", {"image": [0]})
    _check_dims(folder / "mask_decoder.onnx", {"point_coords": [0, 1], "point_labels": [0, 1], "mask_input": [0]})
    _check_dims(folder / "mask_decoder_cached.onnx", {"point_coords": [0, 1], "point_labels": [0, 1]})

    f32 = "float32"
    enc_spec = GraphSpec(
        file="image_encoder.onnx",
        sha256=sha256_file(folder / "image_encoder.onnx"),
        inputs=[TensorSpec("image", ["batch", 3, s, s], f32)],
        outputs=[
            TensorSpec("image_embed", ["batch", dim, e, e], f32),
            TensorSpec("high_res_feats_0", ["batch", c0, 4 * e, 4 * e], f32),
            TensorSpec("high_res_feats_1", ["batch", c1, 2 * e, 2 * e], f32),
            TensorSpec("vision_features", ["batch", dim, e, e], f32),
        ],
    )
    dec_spec = GraphSpec(
        file="mask_decoder.onnx",
        sha256=sha256_file(folder / "mask_decoder.onnx"),
        inputs=[
            TensorSpec("image_embed", [1, dim, e, e], f32),
            TensorSpec("high_res_feats_0", [1, c0, 4 * e, 4 * e], f32),
            TensorSpec("high_res_feats_1", [1, c1, 2 * e, 2 * e], f32),
            TensorSpec("point_coords", ["num_prompts", "num_points", 2], f32),
            TensorSpec("point_labels", ["num_prompts", "num_points"], "int64"),
            TensorSpec("mask_input", ["num_prompts", 1, 4 * e, 4 * e], f32),
            TensorSpec("has_mask_input", [1], f32),
        ],
        outputs=[
            TensorSpec("low_res_masks_multi", ["num_prompts", 3, 4 * e, 4 * e], f32),
            TensorSpec("iou_predictions_multi", ["num_prompts", 3], f32),
            TensorSpec("low_res_masks_single", ["num_prompts", 1, 4 * e, 4 * e], f32),
            TensorSpec("iou_predictions_single", ["num_prompts", 1], f32),
            TensorSpec("object_score_logits", ["num_prompts", 1], f32),
        ],
    )
    ci = m.sam_mask_decoder.transformer.layers[0].cross_attn_token_to_image.internal_dim
    side_specs = [TensorSpec(n, [1, e * e, ci], f32) for n in CACHE_OUT]
    cache_spec = GraphSpec(
        file="decoder_cache.onnx",
        sha256=sha256_file(folder / "decoder_cache.onnx"),
        inputs=dec_spec.inputs[:1],
        outputs=side_specs,
    )
    cached_spec = GraphSpec(
        file="mask_decoder_cached.onnx",
        sha256=sha256_file(folder / "mask_decoder_cached.onnx"),
        inputs=[*dec_spec.inputs[:5], *side_specs],
        outputs=dec_spec.outputs,
    )
    graphs = {"image_encoder": enc_spec, "mask_decoder": dec_spec, "decoder_cache": cache_spec,
              "mask_decoder_cached": cached_spec}
    extra: dict[str, object] = {}
    if video:
        with torch.no_grad():
            vision_pos = m.encode_images(image[:1]).vision_pos_enc  # (1, C, h, w), the same for every image
        graphs.update(_export_video_parts(m, folder, opts, vision_pos))
        mem = cfg.memory
        extra["video"] = {
            "num_maskmem": mem.num_maskmem,
            "max_obj_ptrs": mem.max_obj_ptrs_in_encoder,
            "signed_ptr_pos": mem.use_signed_tpos_enc_to_obj_ptrs,
            "mem_dim": mem.mem_dim,
            "hidden_dim": dim,
            "no_obj_score": NO_OBJ_SCORE,
            # add_new_mask's 4x4 stride-4 conv (mask -> low-res logits), applied by the numpy runtime
            "mask_downsample": {"weight": m.mask_downsample.weight.detach().reshape(4, 4).tolist(),
                                "bias": float(m.mask_downsample.bias.detach()[0])},
        }
    return ExportManifest(
        model=opts.model_name or cfg.name,
        image_size=s,
        opset=opts.opset,
        config=_jsonable(dataclasses.asdict(cfg)),
        graphs=graphs,
        extra=extra,
        exporter=f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        low_res_clamp=m.output_style.low_res_clamp,
        export_version=EXPORT_VERSION,
    )


MEM_ATTN_IN = ("vision_features", "memory", "memory_slots", "obj_ptrs", "ptr_offsets", "ptr_tpos_max")
HEADS_IN = ("pix_feat", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels", "mask_input",
            "has_mask_input", "present_threshold")
HEADS_OUT = ("low_res_masks_multi", "iou_predictions_multi", "obj_ptr_multi", "low_res_masks_single",
             "iou_predictions_single", "obj_ptr_single", "object_score_logits")
MEM_ENC_IN = ("vision_features", "mask_logits", "object_score_logits", "binarize")


def _export_video_parts(
    m: SAM2Model, folder: Path, opts: OnnxExportOptions, vision_pos: torch.Tensor
) -> dict[str, GraphSpec]:
    """memory_attention.onnx, video_heads.onnx, memory_encoder.onnx (``m``: the export's own copy)."""
    s, cfg = m.image_size, m.config
    e, dim, d = cfg.embed_size, cfg.decoder.transformer_dim, cfg.memory.mem_dim
    c0, c1 = m.sam_mask_decoder.conv_s0.out_channels, m.sam_mask_decoder.conv_s1.out_channels
    hw = e * e
    # traced with 2+ of everything: a size-1 example would specialise the dimension
    objs = torch.export.Dim("num_objects", min=1, max=256)
    frames = torch.export.Dim("num_mem_frames", min=1, max=64)
    ptrs = torch.export.Dim("num_ptrs", min=1, max=64)
    points = torch.export.Dim("num_points", min=1, max=256)
    attn, heads, enc = MemoryAttentionGraph(m, vision_pos).eval(), VideoHeadsGraph(m).eval(), MemoryEncoderGraph(m).eval()
    vision = torch.randn(1, dim, e, e)
    attn_args = (
        vision, torch.randn(2, 3, hw, d), torch.tensor([[6, 0, 1], [6, 4, 5]]), torch.randn(2, 4, dim),
        torch.tensor([[0.0, 1.0, 2.0, 3.0], [2.0, 1.0, 2.0, 3.0]]), torch.tensor([15.0]),
    )
    attn_dyn = {"vision_features": None, "memory": {0: objs, 1: frames}, "memory_slots": {0: objs, 1: frames},
                "obj_ptrs": {0: objs, 1: ptrs}, "ptr_offsets": {0: objs, 1: ptrs}, "ptr_tpos_max": None}
    heads_args = (
        torch.randn(2, dim, e, e), torch.randn(1, c0, 4 * e, 4 * e), torch.randn(1, c1, 2 * e, 2 * e),
        torch.rand(2, 3, 2) * s, torch.tensor([[2, 3, 1], [1, 0, -1]]), torch.randn(2, 1, 4 * e, 4 * e),
        torch.ones(1), torch.zeros(2, 1),
    )
    heads_dyn = {"pix_feat": {0: objs}, "high_res_feats_0": None, "high_res_feats_1": None,
                 "point_coords": {0: objs, 1: points}, "point_labels": {0: objs, 1: points},
                 "mask_input": {0: objs}, "has_mask_input": None, "present_threshold": {0: objs}}
    enc_args = (vision, torch.randn(2, 1, 4 * e, 4 * e) * 5, torch.tensor([[1.0], [-1.0]]), torch.zeros(1))
    enc_dyn = {"vision_features": None, "mask_logits": {0: objs}, "object_score_logits": {0: objs}, "binarize": None}
    with torch.enable_grad():  # as for the image parts: no CPU inference fast paths in the graphs
        _export(attn, attn_args, attn_dyn, MEM_ATTN_IN, ("pix_feat",), folder / "memory_attention.onnx", opts)
        _export(heads, heads_args, heads_dyn, HEADS_IN, HEADS_OUT, folder / "video_heads.onnx", opts)
        _export(enc, enc_args, enc_dyn, MEM_ENC_IN, ("maskmem",), folder / "memory_encoder.onnx", opts)
    _check_dims(folder / "memory_attention.onnx", {"memory": [0, 1], "obj_ptrs": [0, 1]})
    _check_dims(folder / "video_heads.onnx", {"pix_feat": [0], "point_coords": [0, 1]})
    _check_dims(folder / "memory_encoder.onnx", {"mask_logits": [0]})

    f32, i64 = "float32", "int64"
    low = ["num_objects", 1, 4 * e, 4 * e]
    feat = ["num_objects", dim, e, e]

    def spec(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> GraphSpec:
        return GraphSpec(f"{name}.onnx", sha256_file(folder / f"{name}.onnx"), inputs, outputs)

    return {
        "memory_attention": spec(
            "memory_attention",
            [
                TensorSpec("vision_features", [1, dim, e, e], f32),
                TensorSpec("memory", ["num_objects", "num_mem_frames", hw, d], f32),
                TensorSpec("memory_slots", ["num_objects", "num_mem_frames"], i64),
                TensorSpec("obj_ptrs", ["num_objects", "num_ptrs", dim], f32),
                TensorSpec("ptr_offsets", ["num_objects", "num_ptrs"], f32),
                TensorSpec("ptr_tpos_max", [1], f32),
            ],
            [TensorSpec("pix_feat", feat, f32)],
        ),
        "video_heads": spec(
            "video_heads",
            [
                TensorSpec("pix_feat", feat, f32),
                TensorSpec("high_res_feats_0", [1, c0, 4 * e, 4 * e], f32),
                TensorSpec("high_res_feats_1", [1, c1, 2 * e, 2 * e], f32),
                TensorSpec("point_coords", ["num_objects", "num_points", 2], f32),
                TensorSpec("point_labels", ["num_objects", "num_points"], i64),
                TensorSpec("mask_input", low, f32),
                TensorSpec("has_mask_input", [1], f32),
                TensorSpec("present_threshold", ["num_objects", 1], f32),
            ],
            [
                TensorSpec("low_res_masks_multi", ["num_objects", 3, 4 * e, 4 * e], f32),
                TensorSpec("iou_predictions_multi", ["num_objects", 3], f32),
                TensorSpec("obj_ptr_multi", ["num_objects", 3, dim], f32),
                TensorSpec("low_res_masks_single", low, f32),
                TensorSpec("iou_predictions_single", ["num_objects", 1], f32),
                TensorSpec("obj_ptr_single", ["num_objects", dim], f32),
                TensorSpec("object_score_logits", ["num_objects", 1], f32),
            ],
        ),
        "memory_encoder": spec(
            "memory_encoder",
            [
                TensorSpec("vision_features", [1, dim, e, e], f32),
                TensorSpec("mask_logits", low, f32),
                TensorSpec("object_score_logits", ["num_objects", 1], f32),
                TensorSpec("binarize", [1], f32),
            ],
            [TensorSpec("maskmem", ["num_objects", hw, d], f32)],
        ),
    }


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    dynamic: dict[str, dict[int, torch.export.Dim] | None],
    input_names: Sequence[str],
    output_names: Sequence[str],
    path: Path,
    opts: OnnxExportOptions,
) -> None:
    with warnings.catch_warnings():
        # the exporter's notes on cached grids (plain constants in the graph) and on axis names
        warnings.filterwarnings("ignore", message=".*(were assigned during export|will not be used, since it shares).*")
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            opset_version=opts.opset,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dynamic,
            optimize=True,
            verbose=False,
        )
    program.save(str(path), external_data=False)


def _check_dims(path: Path, dynamic: dict[str, list[int]]) -> None:
    """Refuse a graph whose dynamic input dims came out fixed (the exporter may specialise silently)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    for inp in graph.input:
        dims = inp.type.tensor_type.shape.dim
        fixed = [i for i in dynamic.get(inp.name, []) if not dims[i].dim_param]
        if fixed:
            raise ExportError(f"{path.name}: input {inp.name!r} dims {fixed} were exported as fixed sizes")


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
