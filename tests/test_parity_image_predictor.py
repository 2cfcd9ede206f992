"""ImagePredictor vs the official SAM2ImagePredictor on identical random weights (fp32 CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference import reference_sam2
from segmenter import ImagePredictor, build_sam

TOL = 1e-4  # the bar; measured values are printed by -s and are ~1e-6


def _reference_predictor(model):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    pred = SAM2ImagePredictor(model)
    s = model.image_size
    pred._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]  # hard-coded 1024 upstream
    return pred


def _pair(config: str, image_size: int, tmp_path_factory):
    ref = reference_sam2(config, image_size)
    path = tmp_path_factory.mktemp("ckpt") / f"{config}.pt"
    torch.save({"model": ref.state_dict()}, path)
    ours = build_sam(config, checkpoint=path, device="cpu", image_size=image_size)
    return _reference_predictor(ref), ImagePredictor(ours)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth blobs + noise, so that resizing and masks are not trivial
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / (7 + 3 * c)) + np.cos(yy / (5 + 2 * c)) for c in range(3)], -1)
    img = (base - base.min()) / (np.ptp(base) + 1e-9) * 200 + rng.integers(0, 55, (h, w, 3))
    return img.astype(np.uint8)


def _max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def _compare(ref_out, our_out, what: str) -> None:
    r_masks, r_iou, r_low = ref_out
    o_masks, o_iou, o_low = our_out
    assert o_masks.shape == r_masks.shape and o_masks.dtype == r_masks.dtype, what
    assert o_iou.shape == r_iou.shape and o_low.shape == r_low.shape, what
    d_low, d_iou = _max_diff(r_low, o_low), _max_diff(r_iou, o_iou)
    d_masks = _max_diff(r_masks, o_masks)
    print(f"{what}: max|d low-res| {d_low:.2e}  max|d iou| {d_iou:.2e}  max|d masks| {d_masks:.2e}")
    assert d_low < TOL and d_iou < TOL and d_masks < TOL, what


PROMPTS = {
    "point": dict(point_coords=np.array([[120.0, 90.0]]), point_labels=np.array([1])),
    "points_with_negatives": dict(
        point_coords=np.array([[120.0, 90.0], [40.0, 30.0], [200.0, 150.0]]), point_labels=np.array([1, 0, 0])
    ),
    "box": dict(box=np.array([30.0, 20.0, 210.0, 160.0])),
    "box_and_point": dict(
        box=np.array([30.0, 20.0, 210.0, 160.0]), point_coords=np.array([[100.0, 80.0]]), point_labels=np.array([0])
    ),
    "batched_boxes": dict(box=np.array([[30.0, 20.0, 210.0, 160.0], [0.0, 0.0, 60.0, 60.0], [150.0, 100.0, 319.0, 239.0]])),
    "batched_boxes_with_points": dict(
        box=np.array([[30.0, 20.0, 210.0, 160.0], [0.0, 0.0, 60.0, 60.0]]),
        point_coords=np.array([[[100.0, 80.0]], [[20.0, 20.0]]]),
        point_labels=np.array([[1], [0]]),
    ),
    "normalized_point": dict(point_coords=np.array([[0.4, 0.3]]), point_labels=np.array([1]), normalize_coords=False),
}


@pytest.fixture(scope="module")
def tiny21_1024(tmp_path_factory):
    ref, ours = _pair("sam2.1_hiera_tiny", 1024, tmp_path_factory)
    img = _image(240, 320)  # non-square: exercises the resize
    ref.set_image(img)
    ours.set_image(img)
    return ref, ours


@pytest.mark.slow
def test_embeddings_match(tiny21_1024) -> None:
    ref, ours = tiny21_1024
    d = _max_diff(ref.get_image_embedding(), ours.get_image_embedding())
    print(f"image embedding max|d| {d:.2e}")
    assert ours.get_image_embedding().shape == (1, 256, 64, 64)
    assert d < 1e-5
    for r, o in zip(ref._features["high_res_feats"], ours._features.high_res_feats):
        assert r.shape == o.shape
        assert _max_diff(r, o) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_predict_matches(tiny21_1024, prompt: str, multimask: bool) -> None:
    ref, ours = tiny21_1024
    kwargs = dict(PROMPTS[prompt], multimask_output=multimask)
    _compare(ref.predict(**kwargs, return_logits=True), ours.predict(**kwargs, return_logits=True), f"{prompt} mm={multimask}")
    r_masks, *_ = ref.predict(**kwargs)
    o_masks, *_ = ours.predict(**kwargs)
    assert o_masks.dtype == r_masks.dtype and np.array_equal(r_masks, o_masks)


@pytest.mark.slow
def test_mask_input_round_trip(tiny21_1024) -> None:
    ref, ours = tiny21_1024
    _, iou, low = ref.predict(**PROMPTS["point"], multimask_output=True)
    mask_input = low[np.argmax(iou)][None]  # (1, 256, 256)
    kwargs = dict(PROMPTS["points_with_negatives"], mask_input=mask_input, multimask_output=False, return_logits=True)
    _compare(ref.predict(**kwargs), ours.predict(**kwargs), "mask_input")
    _compare(
        ref.predict(mask_input=mask_input, multimask_output=False, return_logits=True),
        ours.predict(mask_input=mask_input, multimask_output=False, return_logits=True),
        "mask_input only",
    )


@pytest.mark.slow
def test_dynamic_multimask_is_on_by_default(tiny21_1024) -> None:
    _, ours = tiny21_1024
    assert ours.model.sam_mask_decoder.dynamic_multimask_via_stability


@pytest.mark.parametrize(
    ("config", "image_size"),
    [
        pytest.param("sam2_hiera_tiny", 512, marks=pytest.mark.slow),
        pytest.param("sam2.1_hiera_small", 512, marks=pytest.mark.slow),
        ("sam2_hiera_small", 256),
        pytest.param("sam2.1_hiera_tiny", 768, marks=pytest.mark.slow),
    ],
)
def test_other_configs_and_sizes(config: str, image_size: int, tmp_path_factory) -> None:
    ref, ours = _pair(config, image_size, tmp_path_factory)
    img = _image(180, 260, seed=1)
    ref.set_image(img)
    ours.set_image(img)
    e = image_size // 16
    assert ours.get_image_embedding().shape == (1, 256, e, e)
    assert _max_diff(ref.get_image_embedding(), ours.get_image_embedding()) < 1e-5
    for prompt in ("point", "batched_boxes", "box_and_point"):
        kwargs = dict(PROMPTS[prompt], multimask_output=True, return_logits=True)
        _compare(ref.predict(**kwargs), ours.predict(**kwargs), f"{config}@{image_size} {prompt}")
        low = ours.predict(**kwargs)[2]
        assert low.shape[-2:] == (4 * e, 4 * e)


@pytest.mark.slow
def test_batch_of_images(tmp_path_factory) -> None:
    ref, ours = _pair("sam2.1_hiera_tiny", 512, tmp_path_factory)
    imgs = [_image(200, 300, seed=2), _image(256, 256, seed=3)]
    ref.set_image_batch(imgs)
    ours.set_image_batch(imgs)
    assert _max_diff(ref.get_image_embedding(), ours.get_image_embedding()) < 1e-5
    boxes = [np.array([[10.0, 10.0, 150.0, 120.0], [50.0, 60.0, 250.0, 190.0]]), np.array([20.0, 30.0, 200.0, 220.0])]
    points = [np.array([[60.0, 70.0]]), np.array([[100.0, 100.0]])]
    labels = [np.array([1]), np.array([0])]
    for kwargs in (
        dict(box_batch=boxes, multimask_output=False),
        dict(point_coords_batch=points, point_labels_batch=labels, multimask_output=True),
    ):
        r = ref.predict_batch(**kwargs, return_logits=True)
        o = ours.predict_batch(**kwargs, return_logits=True)
        assert len(o[0]) == 2
        for i in range(2):
            _compare((r[0][i], r[1][i], r[2][i]), (o[0][i], o[1][i], o[2][i]), f"batch image {i}")
