"""SAM 1 (ViT-B/L/H) vs ``segment_anything==1.0`` and transformers' ``SamModel`` on identical random weights.

The reference is ``_build_sam``'s network at a reduced ``img_size`` (256 px: the ViT-B encoder costs
~0.5 s instead of ~15 s at 1024 px on one CPU thread); ours loads its weights through the real
loader from a bare ``.pth`` state dict, as Meta ships them.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.build_sam import sam_model_registry
from segment_anything.modeling.image_encoder import get_rel_pos

from reference import randomize_, reference_sam1
from segmenter import ImagePredictor, SAM1Model, build_sam, from_pretrained, load_model_config
from segmenter.checkpoints.read import infer_config_name, read_state_dict
from segmenter.config import SAM1Config, ViTConfig
from segmenter.modeling.sam1.image_encoder import rel_pos_lookup
from segmenter.checkpoints.sam1 import sam1_to_official
from checkpoint_fixtures import cache_file as _cache_file

TOL = 1e-4
SIZE = 256
def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / (7 + 3 * c)) + np.cos(yy / (5 + 2 * c)) for c in range(3)], -1)
    img = (base - base.min()) / (np.ptp(base) + 1e-9) * 200 + rng.integers(0, 55, (h, w, 3))
    return img.astype(np.uint8)


def _max_diff(a, b) -> float:
    a, b = (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x for x in (a, b))
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def _compare(ref_out, our_out, what: str) -> None:
    """(masks logits, iou, low-res) triples."""
    assert all(tuple(r.shape) == tuple(o.shape) for r, o in zip(ref_out, our_out, strict=True)), what
    d = [_max_diff(r, o) for r, o in zip(ref_out, our_out, strict=True)]
    print(f"{what}: max|d masks| {d[0]:.2e}  max|d iou| {d[1]:.2e}  max|d low-res| {d[2]:.2e}")
    assert max(d) < TOL, (what, d)


def _same_bool_masks(ref_masks: np.ndarray, our_masks: np.ndarray, ref_logits: np.ndarray) -> None:
    assert our_masks.dtype == ref_masks.dtype == np.bool_
    differ = ref_masks != our_masks  # only where the logit sits on the threshold
    assert np.all(np.abs(ref_logits[differ]) < 1e-3), int(differ.sum())


IMAGE_HW = (240, 320)  # non-square: exercises resize-longest-side and the padding
PROMPTS = {
    "point": dict(point_coords=np.array([[120.0, 90.0]]), point_labels=np.array([1])),
    "points_with_negatives": dict(
        point_coords=np.array([[120.0, 90.0], [40.0, 30.0], [200.0, 150.0]]), point_labels=np.array([1, 0, 0])
    ),
    "box": dict(box=np.array([30.0, 20.0, 210.0, 160.0])),
    "box_and_point": dict(
        box=np.array([30.0, 20.0, 210.0, 160.0]),
        point_coords=np.array([[100.0, 80.0]]),
        point_labels=np.array([0]),
    ),
    "box_and_points": dict(
        box=np.array([60.0, 40.0, 300.0, 230.0]),
        point_coords=np.array([[150.5, 120.25], [70.0, 200.0]]),
        point_labels=np.array([1, 0]),
    ),
}


@pytest.fixture(scope="module")
def pth(tmp_path_factory):
    """The reference and its weights as Meta ships them: a bare state dict in a ``.pth``."""
    ref = reference_sam1(SIZE)
    path = tmp_path_factory.mktemp("ckpt") / "sam_vit_b_01ec64.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


@pytest.fixture(scope="module")
def predictors(pth):
    ref, path = pth
    ours = build_sam("sam_vit_b", checkpoint=path, device="cpu", image_size=SIZE)
    r, o = SamPredictor(ref), ImagePredictor(ours)
    img = _image(*IMAGE_HW)
    r.set_image(img)
    o.set_image(img)
    return r, o


def test_embedding_matches(predictors) -> None:
    ref, ours = predictors
    d = _max_diff(ref.get_image_embedding(), ours.get_image_embedding())
    print(f"image embedding max|d| {d:.2e}")
    assert ours.get_image_embedding().shape == (1, 256, SIZE // 16, SIZE // 16)
    assert d < TOL
    assert ours._features.input_hw == [tuple(ref.input_size)]


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_predict_matches(predictors, prompt: str, multimask: bool) -> None:
    ref, ours = predictors
    kwargs = dict(PROMPTS[prompt], multimask_output=multimask)
    r_logits = ref.predict(**kwargs, return_logits=True)
    _compare(r_logits, ours.predict(**kwargs, return_logits=True), f"{prompt} mm={multimask}")
    r_masks, r_iou, r_low = ref.predict(**kwargs)
    o_masks, o_iou, o_low = ours.predict(**kwargs)
    _same_bool_masks(r_masks, o_masks, r_logits[0])
    assert o_masks.shape == (3 if multimask else 1, *IMAGE_HW)
    assert o_iou.dtype == r_iou.dtype and o_low.dtype == r_low.dtype == np.float32


def test_mask_input(predictors) -> None:
    ref, ours = predictors
    _, iou, low = ref.predict(**PROMPTS["point"], multimask_output=True)
    mask_input = low[np.argmax(iou)][None]  # (1, 64, 64): SAM 1 does not clamp it
    for kwargs, what in (
        (dict(PROMPTS["points_with_negatives"], mask_input=mask_input, multimask_output=False), "points + mask"),
        (dict(PROMPTS["box"], mask_input=mask_input, multimask_output=True), "box + mask"),
        (dict(mask_input=mask_input, multimask_output=False), "mask only"),
    ):
        _compare(ref.predict(**kwargs, return_logits=True), ours.predict(**kwargs, return_logits=True), what)


@pytest.mark.parametrize("multimask", [True, False])
def test_batched_boxes_through_predict_torch(predictors, multimask: bool) -> None:
    ref, ours = predictors
    boxes = torch.tensor([[30.0, 20.0, 210.0, 160.0], [0.0, 0.0, 60.0, 60.0], [150.0, 100.0, 319.0, 239.0]])
    points = torch.tensor([[[100.0, 80.0]], [[20.0, 20.0]], [[200.0, 200.0]]])
    labels = torch.tensor([[1], [0], [1]], dtype=torch.int32)
    # the reference wants prompts already in its resized frame; ours takes original pixels
    r_boxes = ref.transform.apply_boxes_torch(boxes, IMAGE_HW)
    r_points = ref.transform.apply_coords_torch(points, IMAGE_HW)
    for r_kw, o_kw, what in (
        (dict(point_coords=None, point_labels=None, boxes=r_boxes), dict(boxes=boxes), "batched boxes"),
        (
            dict(point_coords=r_points, point_labels=labels, boxes=r_boxes),
            dict(point_coords=points, point_labels=labels, boxes=boxes),
            "batched boxes + points",
        ),
    ):
        r = ref.predict_torch(**r_kw, multimask_output=multimask, return_logits=True)
        o = ours.predict_torch(**o_kw, multimask_output=multimask, return_logits=True)
        assert o[0].shape == (3, 3 if multimask else 1, *IMAGE_HW)
        _compare(r, o, f"{what} mm={multimask}")
    # the numpy verb decodes the same batch in one call
    masks, iou, low = ours.predict(box=boxes.numpy(), multimask_output=multimask)
    assert masks.dtype == np.bool_ and masks.shape == (3, 3 if multimask else 1, *IMAGE_HW)


@pytest.mark.slow
def test_batch_of_images_equals_one_by_one(pth) -> None:
    ours = ImagePredictor(build_sam("sam_vit_b", checkpoint=pth[1], device="cpu", image_size=SIZE))
    imgs = [_image(*IMAGE_HW, seed=1), _image(300, 200, seed=2)]
    boxes = [np.array([10.0, 10.0, 150.0, 120.0]), np.array([20.0, 30.0, 180.0, 260.0])]
    ours.set_image_batch(imgs)
    batched = ours.predict_batch(box_batch=boxes, return_logits=True)
    for i, img in enumerate(imgs):
        ours.set_image(img)
        single = ours.predict(box=boxes[i], return_logits=True)
        assert max(_max_diff(b[i], s) for b, s in zip(batched, single)) < 1e-5


@pytest.mark.slow
def test_pth_loads_and_config_is_inferred(pth, tmp_path) -> None:
    ref, path = pth
    model = from_pretrained(path, device="cpu", image_size=SIZE)
    assert isinstance(model, SAM1Model) and model.config.name == "sam_vit_b"
    ref_sd = ref.state_dict()
    assert set(model.state_dict()) == set(ref_sd)
    assert all(torch.equal(v, ref_sd[k]) for k, v in model.state_dict().items())
    # exports that carry the reference's pixel statistics load too
    extra = tmp_path / "with_constants.pth"
    torch.save({**ref_sd, "pixel_mean": ref.pixel_mean, "pixel_std": ref.pixel_std}, extra)
    assert set(read_state_dict(extra)) == set(ref_sd)
    # a SAM 1 checkpoint given to a SAM 2 config names the right one
    with pytest.raises(ValueError, match="looks like sam_vit_b"):
        build_sam("sam2.1_hiera_tiny", checkpoint=path, device="cpu", image_size=SIZE)


@pytest.mark.slow
def test_checkpoint_at_another_image_size_is_resized(pth) -> None:
    ref, path = pth
    ref_sd = ref.state_dict()
    for size in (128, 512):
        model = build_sam("sam_vit_b", checkpoint=path, device="cpu", image_size=size)
        g = size // 16
        sd = model.state_dict()
        assert sd["image_encoder.pos_embed"].shape == (1, g, g, 768)
        for block in (2, 0):  # a global block (table resized) and a windowed one (unchanged)
            for axis in ("h", "w"):
                key = f"image_encoder.blocks.{block}.attn.rel_pos_{axis}"
                want = get_rel_pos(g if block == 2 else 14, g if block == 2 else 14, ref_sd[key])
                got = rel_pos_lookup(sd[key], g if block == 2 else 14)
                assert torch.allclose(got, want, atol=1e-6), key
        with torch.inference_mode():
            x, _ = model.preprocess([_image(100, 150)])
            assert model.embed_images(x).shape == (1, 256, g, g)


@pytest.mark.parametrize("name", ["sam_vit_b", "sam_vit_l", "sam_vit_h"])
def test_configs_have_the_official_keys_and_shapes(name: str) -> None:
    registry = {"sam_vit_b": "vit_b", "sam_vit_l": "vit_l", "sam_vit_h": "vit_h"}[name]
    with torch.device("meta"):  # shapes only: no memory, no time
        ref = sam_model_registry[registry]()
        ours = SAM1Model(load_model_config(name))
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == ref_shapes
    assert infer_config_name(ref.state_dict()) == name
    cfg = load_model_config(name)
    assert cfg.family == "sam1" and cfg.image_size == 1024 and cfg.embed_size == 64
    assert cfg.checkpoint_filename.startswith(name) and cfg.checkpoint_filename.endswith(".pth")
    with pytest.raises(ValueError, match="multiple of 16"):
        load_model_config(name, image_size=250)


# ----------------------------------------------------------------------------- transformers SamModel


@functools.lru_cache(maxsize=2)
def _hf_model(hidden: int, depth: int, heads: int, global_idx: tuple[int, ...]):
    from transformers import SamConfig, SamModel

    cfg = SamConfig(
        vision_config=dict(
            hidden_size=hidden,
            num_hidden_layers=depth,
            num_attention_heads=heads,
            global_attn_indexes=list(global_idx),
            image_size=SIZE,
        ),
        prompt_encoder_config=dict(image_size=SIZE),
        # transformers' two-way blocks use LayerNorm eps 1e-6 where segment_anything (and we)
        # use PyTorch's 1e-5, a ~1e-4 difference in the logits; align it to compare the weights
        mask_decoder_config=dict(layer_norm_eps=1e-5),
    )
    torch.manual_seed(3)
    return randomize_(SamModel(cfg), seed=3).eval()


@pytest.mark.slow
def test_transformers_layout_gives_transformers_outputs(tmp_path, monkeypatch) -> None:
    hf = _hf_model(768, 12, 12, (2, 5, 8, 11))
    folder = tmp_path / "hf"
    hf.save_pretrained(folder)
    ours = build_sam("sam_vit_b", checkpoint=folder, device="cpu", image_size=SIZE)
    # the hub id resolves to the cached transformers files (no sam_vit_b_01ec64.pth in that repo)
    cache = tmp_path / "hub"
    for name in ("model.safetensors", "config.json"):
        _cache_file(cache, "facebook/sam-vit-base", folder / name, name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    inferred = from_pretrained("facebook/sam-vit-base", device="cpu", image_size=SIZE)
    assert inferred.config.name == "sam_vit_b"
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    pts = torch.tensor([[[[100.0, 80.0], [30.0, 200.0]]]])
    lab = torch.tensor([[[1, 0]]])
    box = torch.tensor([[[20.0, 30.0, 200.0, 180.0]]])
    with torch.inference_mode():
        emb = ours.embed_images(x)
        d_emb = _max_diff(hf.get_image_embeddings(x), emb)
        print(f"transformers SamModel embedding max|d| {d_emb:.2e}")
        assert d_emb < TOL
        assert torch.equal(inferred.embed_images(x), emb)
        point_kw = dict(input_points=pts, input_labels=lab)
        for kw in (point_kw, dict(input_boxes=box), dict(point_kw, input_boxes=box)):
            for mm in (True, False):
                out = hf(pixel_values=x, multimask_output=mm, **kw)
                points = (pts[0], lab[0]) if "input_points" in kw else None
                boxes = box[0] if "input_boxes" in kw else None
                low, iou = ours.decode_masks(emb, points=points, boxes=boxes, multimask_output=mm)
                d = (_max_diff(out.pred_masks[0], low), _max_diff(out.iou_scores[0], iou))
                print(f"transformers {sorted(kw)} mm={mm}: max|d low-res| {d[0]:.2e}  max|d iou| {d[1]:.2e}")
                assert max(d) < TOL


def test_transformers_key_map_on_a_tiny_config() -> None:
    hf = _hf_model(64, 3, 2, (1,))
    sd = sam1_to_official(hf.state_dict())
    cfg = SAM1Config(
        name="tiny", vit=ViTConfig(embed_dim=64, depth=3, num_heads=2, global_attn_indexes=(1,)), image_size=SIZE
    )
    ours = SAM1Model(cfg).eval()
    assert {k: tuple(v.shape) for k, v in sd.items()} == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ours.load_state_dict(sd, strict=True)
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        out = hf(pixel_values=x, input_boxes=torch.tensor([[[10.0, 20.0, 120.0, 200.0]]]), multimask_output=True)
        low, iou = ours.decode_masks(ours.embed_images(x), boxes=torch.tensor([[10.0, 20.0, 120.0, 200.0]]))
    assert max(_max_diff(out.pred_masks[0], low), _max_diff(out.iou_scores[0], iou)) < TOL
    with pytest.raises(ValueError, match="no official SAM 1 counterpart"):
        sam1_to_official({**hf.state_dict(), "vision_encoder.extra.weight": torch.zeros(1)})
