"""Drop-in compatibility: the official READMEs' code runs with only its import lines changed.

The samples are quoted verbatim in ``compat_samples.py``; :func:`~compat_samples.adapt` makes
the changes the issue allows (imports, checkpoint paths / hub ids of tiny random checkpoints in
the official formats made here, ``"cuda"`` -> ``"cpu"`` so that the samples'
``torch.autocast("cuda", bfloat16)`` becomes CPU bf16 autocast, a small ``image_size``, the
``<placeholders>``). The adapted code runs with ``exec``; its results must equal our native
API's on the same weights and inputs under the same autocast. The sam2 / segment_anything
samples also run on Meta's installed packages (the same text with the official imports);
measured differences are attached as ``max_abs_diff`` / ``max_rel_diff`` properties.
"""

from __future__ import annotations

import inspect
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from compat_samples import (
    AUTODISTILL,
    AUTODISTILL_IMPORTS,
    CFG,
    OURS_SAM2,
    S2,
    SA_AMG,
    SA_BATCHED,
    SA_IMPORTS,
    SA_PREDICT,
    SAM2_IMAGE,
    SAM2_IMAGE_HF,
    SAM2_VIDEO,
    SAM2_VIDEO_HF,
    adapt,
    run,
    sa_changes,
    sam2_changes,
)
from reference import reference_sam2
from segmenter import AutomaticMaskGenerator, ImagePredictor, VideoPredictor, build_sam
from segmenter.compat import sam2 as compat_sam2
from segmenter.compat import segment_anything as compat_sa
from grounded_sam.assets.samples import SyntheticScene
from checkpoint_fixtures import cache_file as _cache_file
from grounded_sam.assets.samples import shapes_image
from reference import reference_sam1
from reference import cuda_connected_components as _cuda_kernel_restated

S1 = 128  # SAM 1 input size: AMG's 1024 default prompts cost ~S1**2 in the mask decoder


# ----------------------------------------------------------------------------- weights and inputs
@pytest.fixture(scope="module")
def sam2_ckpt(tmp_path_factory):
    """Meta's ``{"model": sd}`` .pt of a randomised SAM 2.1-T; objects "present" so tracking keeps them."""
    sd = {k: v.clone() for k, v in reference_sam2("sam2.1_hiera_tiny", S2).state_dict().items()}
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += 2.0
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sd}, path)
    return path


@pytest.fixture(scope="module")
def sam1(tmp_path_factory):
    """A bare-state-dict ViT-B .pth at 128 px whose masks pass Meta's default AMG filters."""
    ref = reference_sam1(S1)
    with torch.no_grad():
        ref.mask_decoder.iou_prediction_head.layers[-1].bias += 3.0  # predicted IoU ~3 > 0.88
        for mlp in ref.mask_decoder.output_hypernetworks_mlps:  # sharp logits: stability ~1
            mlp.layers[-1].weight.mul_(1000.0)
            mlp.layers[-1].bias.mul_(1000.0)
    path = tmp_path_factory.mktemp("sam1") / "sam_vit_b_01ec64.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


@pytest.fixture(scope="module")
def hub(tmp_path_factory, sam2_ckpt):
    """A Hugging Face cache holding the samples' default hub ids, tiny and random."""
    from tiny_detectors import tiny_grounding_dino

    cache = tmp_path_factory.mktemp("hub")
    _cache_file(cache, "facebook/sam2.1-hiera-tiny", sam2_ckpt, "sam2.1_hiera_tiny.pt")
    torch.manual_seed(0)
    model, proc = tiny_grounding_dino(mm=True)
    with torch.no_grad():  # confident queries, so that the random detector finds boxes
        for name, p in model.named_parameters():
            if "class_embed" in name and name.endswith("bias"):
                p.fill_(1.0)
    folder = tmp_path_factory.mktemp("llmdet")
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    for f in folder.iterdir():
        _cache_file(cache, "iSEE-Laboratory/llmdet_tiny", f, f.name, sha="b" * 40)
    return cache


@pytest.fixture()
def offline_hub(hub, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    return hub


@pytest.fixture()
def reference_cuda_ops(monkeypatch):
    """Meta's CUDA-only connected components (hole filling), restated on the CPU (see test_postprocess)."""
    import sam2.utils.misc as misc

    monkeypatch.setattr(misc, "get_connected_components", _cuda_kernel_restated)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    """A folder of ``<int>.jpg`` frames, the layout Meta's predictor reads."""
    scene = SyntheticScene((96, 128), objects=2, seed=1)
    folder = tmp_path_factory.mktemp("video")
    for t in range(5):
        Image.fromarray(scene.frame(t)).save(folder / f"{t}.jpg")
    return str(folder)


IMAGE = shapes_image(120, 160)
PROMPTS = dict(
    point_coords=np.array([[60.0, 40.0], [30.0, 90.0]]), point_labels=np.array([1, 0]), box=np.array([10, 5, 100, 80])
)
VIDEO_PROMPTS = dict(frame_idx=0, obj_id=1, points=np.array([[60, 50]], np.float32), labels=np.array([1], np.int32))


def _amp():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _max_diff(a, b) -> float:
    a, b = (x.float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64) for x in (a, b))
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def _ref_image_predictor(sam_model, **kwargs):
    """Meta's SAM2ImagePredictor; its feature sizes are hard-coded for 1024 px: set them for the model's."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    pred = SAM2ImagePredictor(sam_model, **kwargs)
    s = sam_model.image_size
    pred._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return pred


# ----------------------------------------------------------------------------- sam2
def test_sam2_readme_image(sam2_ckpt, offline_hub, reference_cuda_ops, record_property) -> None:
    ours = run(adapt(SAM2_IMAGE, sam2_changes(SAM2_IMAGE, sam2_ckpt, OURS_SAM2)), image=IMAGE, prompts=PROMPTS)
    native = ImagePredictor(build_sam("sam2.1_hiera_tiny", checkpoint=sam2_ckpt, device="cpu", image_size=S2))
    with torch.inference_mode(), _amp():
        native.set_image(IMAGE)
        want = native.predict(**PROMPTS)
        got = ours["predictor"].predict(**PROMPTS)  # all outputs, not only the sample's masks
    assert isinstance(ours["predictor"], compat_sam2.SAM2ImagePredictor)
    assert np.array_equal(ours["masks"], want[0]) and ours["masks"].shape == (3, *IMAGE.shape[:2])
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    # from the hub: the same weights, the same masks
    hf = run(adapt(SAM2_IMAGE_HF, sam2_changes(SAM2_IMAGE_HF, sam2_ckpt, OURS_SAM2)), image=IMAGE, prompts=PROMPTS)
    assert np.array_equal(hf["masks"], want[0])
    # Meta's package on the same text, only the imports changed
    shim = {"from sam2.sam2_image_predictor import SAM2ImagePredictor\n": ""}  # _ref_image_predictor instead
    official = adapt(SAM2_IMAGE, sam2_changes(SAM2_IMAGE, sam2_ckpt, shim))
    ref = run(official, image=IMAGE, prompts=PROMPTS, SAM2ImagePredictor=_ref_image_predictor)
    assert np.array_equal(ref["masks"], ours["masks"])
    # hole / speck removal (CUDA-only in Meta's package, restated on the CPU for the reference)
    for kw in (dict(max_hole_area=40.0), dict(max_sprinkle_area=40.0), dict(max_hole_area=8.0, max_sprinkle_area=30.0)):
        pair = [
            compat_sam2.SAM2ImagePredictor(ours["predictor"].model, **kw),
            _ref_image_predictor(ref["predictor"].model, **kw),
        ]
        with torch.inference_mode(), _amp():
            outs = []
            for p in pair:
                p.set_image(IMAGE)
                outs.append(p.predict(**PROMPTS, return_logits=True))
        d = max(_max_diff(a, b) for a, b in zip(*outs))
        record_property(f"max_abs_diff[{kw}]", d)
        assert d == 0.0, kw
        assert not np.array_equal(outs[0][0] > 0, want[0].astype(bool)), f"{kw} changed nothing"


def _track(predictor, video: str, **init) -> list:
    with torch.inference_mode(), _amp():
        state = predictor.init_state(video, **init)
        predictor.add_new_points_or_box(state, **VIDEO_PROMPTS)
        return list(predictor.propagate_in_video(state))


@pytest.mark.slow
def test_sam2_readme_video(sam2_ckpt, video, offline_hub, reference_cuda_ops, record_property) -> None:
    names = dict(video=video, prompts=VIDEO_PROMPTS, results=[])
    ours = run(adapt(SAM2_VIDEO, sam2_changes(SAM2_VIDEO, sam2_ckpt, OURS_SAM2)), **names)
    native = VideoPredictor(build_sam("sam2.1_hiera_tiny", checkpoint=sam2_ckpt, device="cpu", image_size=S2))
    want = _track(native, video, keep_outputs=True)
    assert isinstance(ours["predictor"], compat_sam2.SAM2VideoPredictor) and ours["predictor"].fill_hole_area == 8
    assert len(ours["results"]) == len(want) == 5
    for (f, ids, m), (wf, wids, wm) in zip(ours["results"], want):
        assert (f, list(ids)) == (wf, list(wids)) and torch.equal(m, wm)
    hf = run(adapt(SAM2_VIDEO_HF, sam2_changes(SAM2_VIDEO_HF, sam2_ckpt, OURS_SAM2)), **{**names, "results": []})
    assert all(torch.equal(a[2], b[2]) for a, b in zip(hf["results"], want))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference's tqdm / deprecation chatter
        ref = run(adapt(SAM2_VIDEO, sam2_changes(SAM2_VIDEO, sam2_ckpt, {})), **{**names, "results": []})
    assert len(ref["results"]) == 5
    d = max(_max_diff(a[2], b[2]) for a, b in zip(ref["results"], ours["results"]))
    record_property("max_abs_diff[video logits vs sam2]", d)
    assert d == 0.0 and all(list(a[1]) == list(b[1]) for a, b in zip(ref["results"], ours["results"]))


def _param_defaults(fn) -> list[tuple[str, object]]:
    sig = inspect.signature(fn)
    return [(n, p.default) for n, p in sig.parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def _same_leading_params(ours, theirs) -> None:
    """Meta's parameters come first in ours, in Meta's order, with Meta's defaults."""
    want = _param_defaults(theirs)
    got = _param_defaults(ours)[: len(want)]
    assert got == want, f"{ours.__qualname__}: {got} != {want}"


def test_sam2_signatures_and_hub_table_are_meta_s() -> None:
    import sam2.automatic_mask_generator as amg
    import sam2.build_sam as bs
    import sam2.sam2_image_predictor as ip
    import sam2.sam2_video_predictor as vp

    assert compat_sam2.HF_MODEL_ID_TO_FILENAMES == bs.HF_MODEL_ID_TO_FILENAMES
    for name in ("build_sam2", "build_sam2_video_predictor"):
        _same_leading_params(getattr(compat_sam2, name), getattr(bs, name))
    _same_leading_params(compat_sam2.SAM2ImagePredictor.__init__, ip.SAM2ImagePredictor.__init__)
    _same_leading_params(compat_sam2.SAM2AutomaticMaskGenerator.__init__, amg.SAM2AutomaticMaskGenerator.__init__)
    for verb in ("set_image", "set_image_batch", "predict", "predict_batch", "get_image_embedding", "reset_predictor"):
        _same_leading_params(getattr(compat_sam2.SAM2ImagePredictor, verb), getattr(ip.SAM2ImagePredictor, verb))
    for verb in ("add_new_points_or_box", "add_new_mask", "propagate_in_video", "clear_all_prompts_in_frame",
                 "remove_object", "reset_state", "propagate_in_video_preflight"):
        _same_leading_params(getattr(compat_sam2.SAM2VideoPredictor, verb), getattr(vp.SAM2VideoPredictor, verb))
    _same_leading_params(compat_sam2.SAM2VideoPredictor.init_state, vp.SAM2VideoPredictor.init_state)


@pytest.mark.parametrize(
    ("config", "ours"),
    [
        ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large"),
        ("configs/sam2/sam2_hiera_b+.yaml", "sam2_hiera_base_plus"),
        ("sam2_hiera_s.yaml", "sam2_hiera_small"),  # the legacy top-level names
        ("sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny"),
        ("sam2.1_hiera_base_plus", "sam2.1_hiera_base_plus"),
    ],
)
def test_config_names(config: str, ours: str) -> None:
    assert compat_sam2.config_name(config) == ours


def test_builder_and_from_pretrained_arguments(offline_hub) -> None:
    """Meta's from_pretrained hands its kwargs to the builder and the class: both kinds work here."""
    size = [f"++model.image_size={S2}"]
    pred = compat_sam2.SAM2ImagePredictor.from_pretrained(
        "facebook/sam2.1-hiera-tiny", device="cpu", hydra_overrides_extra=size, mask_threshold=0.5, max_hole_area=4.0
    )
    assert (pred.mask_threshold, pred.max_hole_area, pred.model.image_size) == (0.5, 4.0, S2)
    with pytest.raises(TypeError, match="colour"):
        compat_sam2.SAM2ImagePredictor.from_pretrained("facebook/sam2.1-hiera-tiny", device="cpu", colour="red")
    trained = compat_sam2.build_sam2_hf("facebook/sam2.1-hiera-tiny", device="cpu", mode="train",
                                        hydra_overrides_extra=size)
    assert trained.training and not pred.model.training


def test_bad_config_names_and_arguments(sam2_ckpt, monkeypatch) -> None:
    for bad in ("configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml", "sam_vit_b", "hiera_l.yaml"):
        with pytest.raises(ValueError, match="unknown SAM 2 config .*configs/sam2.1/sam2.1_hiera_"):
            compat_sam2.build_sam2(bad, device="cpu")
    with pytest.raises(TypeError, match="unsupported keyword arguments: colour"):
        compat_sam2.build_sam2(CFG, device="cpu", colour="red")
    with pytest.raises(ValueError, match="unknown SAM 2 hub id 'facebook/sam-vit-base'"):
        compat_sam2.build_sam2_hf("facebook/sam-vit-base", device="cpu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compat_sam2.build_sam2(CFG, "./checkpoints/sam2.1_hiera_large.pt", device="cpu")
    # Meta's default device is CUDA: without it, a clear error and no silent switch to the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for call in (
        lambda: compat_sam2.build_sam2(CFG, sam2_ckpt),
        lambda: compat_sam2.build_sam2_video_predictor(CFG, sam2_ckpt),
        lambda: compat_sam2.SAM2ImagePredictor.from_pretrained("facebook/sam2.1-hiera-tiny"),
    ):
        with pytest.raises(RuntimeError, match="CUDA is not available.*device='cpu'"):
            call()


VIDEO_FLAGS = (
    "fill_hole_area", "non_overlap_masks", "add_all_frames_to_correct_as_cond", "binarize_mask_from_pts_for_mem_enc"
)


def _settings(model, predictor, video: bool) -> dict:
    """What the builders' overrides decide, read from Meta's model / our model and predictor."""
    dec = model.sam_mask_decoder
    out = {
        "image_size": model.image_size,
        "dynamic": dec.dynamic_multimask_via_stability,
        "delta": dec.dynamic_multimask_stability_delta,
        "thresh": dec.dynamic_multimask_stability_thresh,
    }
    return out | ({k: getattr(predictor, k) for k in VIDEO_FLAGS} if video else {})


@pytest.mark.parametrize(
    ("video", "overrides", "post"),
    [
        (False, [], True),
        (False, [], False),
        (False, ["++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=false"], True),  # Meta's wins
        (False, ["++model.image_size=512", "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.1"],
         False),
        (True, [], True),
        (True, ["++model.fill_hole_area=0", "++model.non_overlap_masks=true"], True),  # fill_hole_area: Meta's 8 wins
        (True, ["+model.add_all_frames_to_correct_as_cond=True", "++model.image_size=512"], False),
    ],
)
def test_overrides_give_meta_s_settings(video: bool, overrides: list[str], post: bool) -> None:
    import sam2.build_sam as bs

    builder = "build_sam2_video_predictor" if video else "build_sam2"
    kw = dict(device="cpu", hydra_overrides_extra=overrides, apply_postprocessing=post)
    ref = getattr(bs, builder)(CFG, None, **kw)
    ours = getattr(compat_sam2, builder)(CFG, None, **kw)
    model = ours.model if video else ours
    assert _settings(model, ours, video) == _settings(ref, ref, video)
    assert model.config.image_size == ref.image_size and not model.training


def test_unsupported_overrides_are_errors() -> None:
    cases = {
        "++model.num_maskmem=9": "unknown key",
        "++model.fill_hole_area=0": "video predictor only",  # build_sam2 makes no video predictor
        "++model.image_size=big": "bad value",
        "~model.image_size": "deleting",
        "++model.compile_image_encoder=true": "torch.compile",
        "++model.memory_attention.layer.self_attention.feat_sizes=[32,32]": "does not match the image size",
    }
    for entry, why in cases.items():
        with pytest.raises(ValueError, match=why) as err:
            compat_sam2.build_sam2(CFG, device="cpu", hydra_overrides_extra=[entry])
        if "feat_sizes" not in entry:
            assert "Supported keys:" in str(err.value) and "model.image_size" in str(err.value)
    with pytest.raises(ValueError, match="a list of strings"):
        compat_sam2.build_sam2(CFG, device="cpu", hydra_overrides_extra="++model.image_size=512")
    with pytest.raises(ValueError, match="clear_non_cond_mem_around_input"):
        compat_sam2.build_sam2_video_predictor(
            CFG, device="cpu", hydra_overrides_extra=["++model.clear_non_cond_mem_around_input=true"]
        )
    model = compat_sam2.build_sam2(
        CFG,
        device="cpu",
        hydra_overrides_extra=[f"++model.image_size={S2}", "++model.memory_attention.layer.cross_attention.feat_sizes=[16,16]"],
    )
    assert model.image_size == S2
    with pytest.warns(UserWarning, match="vos_optimized"):
        compat_sam2.build_sam2_video_predictor(
            CFG, device="cpu", vos_optimized=True, hydra_overrides_extra=[f"++model.image_size={S2}"]
        )


@pytest.mark.slow
def test_video_without_postprocessing_matches_meta(sam2_ckpt, video, reference_cuda_ops, record_property) -> None:
    """apply_postprocessing=False: no hole filling, no dynamic multimask, soft masks in prompted frames' memory."""
    import sam2.build_sam as bs

    kw = dict(device="cpu", hydra_overrides_extra=[f"++model.image_size={S2}"], apply_postprocessing=False)
    ours = compat_sam2.build_sam2_video_predictor(CFG, sam2_ckpt, **kw)
    assert not ours.binarize_mask_from_pts_for_mem_enc and ours.fill_hole_area == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _track(bs.build_sam2_video_predictor(CFG, str(sam2_ckpt), **kw), video)
    got = _track(ours, video)
    d = max(_max_diff(a[2], b[2]) for a, b in zip(got, ref))
    record_property("max_abs_diff[video, no postprocessing]", d)
    assert d == 0.0
    binarized = _track(compat_sam2.SAM2VideoPredictor(ours.model, fill_hole_area=0), video)
    assert any(not torch.equal(a[2], b[2]) for a, b in zip(got[1:], binarized[1:]))  # the option matters


def test_sam2_amg_from_pretrained(offline_hub, sam2_ckpt) -> None:
    kw = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    amg = compat_sam2.SAM2AutomaticMaskGenerator.from_pretrained("facebook/sam2.1-hiera-tiny", device="cpu",
                                                                hydra_overrides_extra=[f"++model.image_size={S2}"], **kw)
    native = AutomaticMaskGenerator(build_sam("sam2.1_hiera_tiny", checkpoint=sam2_ckpt, device="cpu", image_size=S2), **kw)
    got, want = amg.generate(IMAGE), native.generate(IMAGE)
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        assert np.array_equal(g.pop("segmentation"), w.pop("segmentation")) and g == w


# ----------------------------------------------------------------------------- segment_anything
def _reference_registry(sam1) -> dict:
    """Meta's builders make 1024-px models; this one returns the reference at the checkpoint's 128 px."""
    ref, path = sam1

    def build(checkpoint):
        assert checkpoint == str(path)
        return ref

    return {"vit_b": build}


def _close(a, b) -> float:
    """max |a - b| relative to the logits' scale (this checkpoint's logits are ~1e3)."""
    a, b = (x.float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64) for x in (a, b))
    return float(np.abs(a - b).max() / (1.0 + np.abs(b).max()))


@pytest.mark.slow
def test_segment_anything_readme_predictor(sam1, record_property) -> None:
    from segment_anything import SamPredictor as RefPredictor

    _, path = sam1
    ours = run(adapt(SA_PREDICT, SA_IMPORTS | sa_changes(SA_PREDICT, path)), image=IMAGE, prompts=PROMPTS)
    sam, predictor = ours["sam"], ours["predictor"]
    assert isinstance(predictor, compat_sa.SamPredictor) and sam.image_size == S1  # the checkpoint's size
    native = ImagePredictor(build_sam("sam_vit_b", checkpoint=path, device="cpu", image_size=S1))
    native.set_image(IMAGE)
    want = native.predict(**PROMPTS)
    assert ours["masks"].dtype == np.bool_ and np.array_equal(ours["masks"], want[0])
    shim = {"from segment_anything import SamPredictor, sam_model_registry\n": ""}  # Meta's classes, at 128 px
    ref = run(adapt(SA_PREDICT, sa_changes(SA_PREDICT, path) | shim),
              image=IMAGE, prompts=PROMPTS, SamPredictor=RefPredictor, sam_model_registry=_reference_registry(sam1))
    r = ref["predictor"]
    assert (predictor.original_size, predictor.input_size) == (tuple(r.original_size), tuple(r.input_size))
    d = _close(predictor.features, r.features)
    logits = [p.predict(**PROMPTS, return_logits=True) for p in (predictor, r)]
    d = max([d] + [_close(a, b) for a, b in zip(*logits)])
    record_property("max_rel_diff[segment_anything predictor]", d)
    assert d < 1e-5
    # BGR input, the torch-image entry point
    bgr = compat_sa.SamPredictor(sam)
    bgr.set_image(np.ascontiguousarray(IMAGE[..., ::-1]), image_format="BGR")
    assert torch.equal(bgr.get_image_embedding(), predictor.get_image_embedding())
    resized = torch.as_tensor(predictor.transform.apply_image(IMAGE)).permute(2, 0, 1)[None]
    bgr.set_torch_image(resized, IMAGE.shape[:2])
    assert torch.equal(bgr.features, predictor.features) and bgr.input_size == predictor.input_size
    with pytest.raises(ValueError, match="image_format must be 'RGB' or 'BGR'"):
        bgr.set_image(IMAGE, image_format="rgb")
    bgr.reset_image()
    assert not bgr.is_image_set and bgr.features is None and bgr.original_size is None
    with pytest.raises(ValueError, match="SAM 1 model"):
        compat_sa.SamPredictor(build_sam("sam2.1_hiera_tiny", device="cpu", image_size=S2))


@pytest.mark.slow
def test_segment_anything_notebook_batched_boxes(sam1, record_property) -> None:
    from segment_anything import SamPredictor as RefPredictor

    ref_model, path = sam1
    image = shapes_image(1200, 1800)  # truck.jpg's size: the notebook's boxes fit it
    sam = compat_sa.sam_model_registry["vit_b"](checkpoint=path)
    outs = []
    for predictor in (compat_sa.SamPredictor(sam), RefPredictor(ref_model)):
        predictor.set_image(image)
        outs.append(run(SA_BATCHED, predictor=predictor, image=image, torch=torch))
    ours, ref = outs
    assert ours["masks"].shape == (4, 1, 1200, 1800) and ours["masks"].dtype == torch.bool
    assert torch.equal(ours["transformed_boxes"], ref["transformed_boxes"])
    flips = (ours["masks"] != ref["masks"]).float().mean().item()
    record_property("mask_pixels_differing[notebook batched boxes]", flips)
    assert flips < 1e-4  # logits ~1e3 here: only pixels on the threshold may differ
    # the same boxes in original pixels through the native API
    native = ImagePredictor(sam)
    native.set_image(image)
    want = native.predict(box=ref["input_boxes"].numpy(), multimask_output=False, return_logits=True)
    compat = compat_sa.SamPredictor(sam)
    compat.set_image(image)
    got = compat.predict_torch(None, None, boxes=ours["transformed_boxes"], multimask_output=False, return_logits=True)
    d = max(_close(g, w) for g, w in zip(got, want))
    record_property("max_rel_diff[predict_torch vs native predict]", d)
    assert d < 1e-5


@pytest.mark.slow
def test_segment_anything_readme_amg(sam1) -> None:
    _, path = sam1
    image = shapes_image(60, 80)
    ours = run(adapt(SA_AMG, SA_IMPORTS | sa_changes(SA_AMG, path)), image=image)
    native = AutomaticMaskGenerator(ours["sam"], pred_iou_thresh=0.88)  # Meta's SAM 1 default (SAM 2's: 0.8)
    want = native.generate(image)
    assert len(ours["masks"]) == len(want) > 0  # the checkpoint passes the default filters
    for g, w in zip(ours["masks"], want):
        assert np.array_equal(g.pop("segmentation"), w.pop("segmentation")) and g == w
    assert isinstance(ours["mask_generator"], compat_sa.SamAutomaticMaskGenerator)


def test_segment_anything_signatures_and_transform() -> None:
    import segment_anything as sa
    from segment_anything.utils.transforms import ResizeLongestSide

    assert set(compat_sa.sam_model_registry) == set(sa.sam_model_registry)
    _same_leading_params(compat_sa.SamAutomaticMaskGenerator.__init__, sa.SamAutomaticMaskGenerator.__init__)
    for verb in ("set_image", "set_torch_image", "predict", "predict_torch", "get_image_embedding", "reset_image"):
        _same_leading_params(getattr(compat_sa.SamPredictor, verb), getattr(sa.SamPredictor, verb))
    for name in ("build_sam_vit_b", "build_sam_vit_l", "build_sam_vit_h", "build_sam"):
        _same_leading_params(getattr(compat_sa, name), getattr(sa, name))
    ours, ref = compat_sa.ResizeLongestSide(128), ResizeLongestSide(128)
    rng = np.random.default_rng(0)
    for hw in ((120, 160), (333, 97), (128, 128)):
        coords = rng.uniform(0, max(hw), (5, 3, 2))
        boxes = rng.uniform(0, max(hw), (4, 4))
        assert ours.get_preprocess_shape(*hw, 128) == ref.get_preprocess_shape(*hw, 128)
        assert np.array_equal(ours.apply_coords(coords, hw), ref.apply_coords(coords, hw))
        assert np.array_equal(ours.apply_boxes(boxes, hw), ref.apply_boxes(boxes, hw))
        coords_t, boxes_t = torch.tensor(coords), torch.tensor(boxes).int()
        assert torch.equal(ours.apply_coords_torch(coords_t, hw), ref.apply_coords_torch(coords_t, hw))
        assert torch.equal(ours.apply_boxes_torch(boxes_t, hw), ref.apply_boxes_torch(boxes_t, hw))
        image = rng.integers(0, 255, (*hw, 3), dtype=np.uint8)
        assert np.array_equal(ours.apply_image(image), ref.apply_image(image))
    # Meta's apply_image_torch reads (B, C) as the image size (a bug); ours resizes (H, W)
    assert ours.apply_image_torch(torch.rand(2, 3, 100, 50)).shape == (2, 3, 128, 64)


# ----------------------------------------------------------------------------- autodistill
@pytest.mark.slow
def test_autodistill_readme(offline_hub, tmp_path, monkeypatch) -> None:
    """The sample's defaults (LLMDet-T, SAM 2.1-T) come from the offline cache: no code is patched."""
    import json

    import matplotlib
    import matplotlib.pyplot as plt
    import supervision as sv
    from pycocotools import mask as mask_utils

    from grounded_sam.export.annotate import annotate_image

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    photo = shapes_image(90, 120)
    Image.fromarray(photo).save("logistics.jpeg", quality=95)
    (tmp_path / "context_images").mkdir()
    shutil.copy("logistics.jpeg", "context_images/a.jpeg")
    plt.close("all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Agg cannot show figures
        scope = run(adapt(AUTODISTILL, AUTODISTILL_IMPORTS))
    results, base_model = scope["results"], scope["base_model"]
    assert isinstance(results, sv.Detections) and len(results) > 0  # the cached random detector finds boxes
    assert base_model.ontology.classes() == ["person", "shipping container"]
    rgb = np.array(Image.open("logistics.jpeg"))
    assert results.mask.shape == (len(results), *rgb.shape[:2]) and set(results.class_id) <= {0, 1}
    # the masks are our native segmenter's on the detector's boxes
    native = ImagePredictor(build_sam("sam2.1_hiera_tiny", checkpoint="facebook/sam2.1-hiera-tiny", device="cpu"))
    native.set_image(rgb)
    masks, _, _ = native.predict(box=results.xyxy, multimask_output=False)
    assert np.array_equal(masks.reshape(results.mask.shape).astype(bool), results.mask)
    # plot showed the annotated image (grounded_sam treats arrays as RGB; cv2.imread gives BGR: see the report)
    shown = plt.gcf().axes[0].images[0].get_array()
    bgr = rgb[..., ::-1]
    classes = base_model.ontology.classes()
    assert np.array_equal(np.asarray(shown), annotate_image(np.ascontiguousarray(bgr), results, classes))
    plt.close("all")
    # label() wrote a dataset next to the input folder, with the same detections
    coco = json.loads((tmp_path / "context_images_labeled" / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["person", "shipping container"]
    anns = coco["annotations"]
    assert len(anns) == len(results)
    cat_ids = {c["name"]: c["id"] for c in coco["categories"]}
    labelled = sorted((cat_ids[classes[k]], m.tobytes()) for k, m in zip(results.class_id, results.mask))
    decoded = []
    for a in anns:
        rle = a["segmentation"]
        counts = rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]
        rle = {"size": rle["size"], "counts": counts}
        decoded.append((a["category_id"], mask_utils.decode(rle).astype(bool).tobytes()))
    assert sorted(decoded) == labelled
