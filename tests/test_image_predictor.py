"""ImagePredictor behaviour that the parity tests do not cover: input checking, shapes, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segmenter import ImagePredictor, build_sam
from segmenter.modeling.mask_decoder import CPU_CHUNK_BYTES


@pytest.fixture(scope="module")
def predictor() -> ImagePredictor:
    torch.manual_seed(0)
    pred = ImagePredictor(build_sam("sam2.1_hiera_tiny", device="cpu", image_size=256))
    rng = np.random.default_rng(0)
    pred.set_image(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    return pred


def test_predict_before_set_image_fails() -> None:
    pred = ImagePredictor(build_sam("sam2.1_hiera_tiny", device="cpu", image_size=256))
    with pytest.raises(RuntimeError, match="set_image"):
        pred.predict(box=np.array([0, 0, 10, 10]))
    with pytest.raises(RuntimeError, match="set_image"):
        pred.get_image_embedding()


def test_shapes_and_types(predictor: ImagePredictor) -> None:
    masks, iou, low = predictor.predict(box=np.array([10, 10, 80, 60]), multimask_output=False)
    assert masks.shape == (1, 90, 120) and masks.dtype == np.float32
    assert set(np.unique(masks)) <= {0.0, 1.0}
    assert iou.shape == (1,) and low.shape == (1, 64, 64)
    assert np.abs(low).max() <= 32.0
    masks, iou, low = predictor.predict(box=np.array([[10, 10, 80, 60], [0, 0, 30, 30]]), multimask_output=True)
    assert masks.shape == (2, 3, 90, 120) and iou.shape == (2, 3) and low.shape == (2, 3, 64, 64)
    logits, _, _ = predictor.predict(point_coords=np.array([[30, 40]]), point_labels=np.array([1]), return_logits=True)
    assert logits.shape == (3, 90, 120) and logits.dtype == np.float32
    assert np.array_equal(predictor.predict(point_coords=np.array([[30, 40]]), point_labels=np.array([1]))[0], logits > 0)


def test_batched_boxes_equal_one_by_one(predictor: ImagePredictor) -> None:
    boxes = np.array([[10, 10, 80, 60], [0, 0, 30, 30], [50, 20, 119, 89]], dtype=np.float32)
    _, iou_b, low_b = predictor.predict(box=boxes, multimask_output=False)
    for i, b in enumerate(boxes):
        _, iou, low = predictor.predict(box=b, multimask_output=False)
        np.testing.assert_allclose(low, low_b[i], atol=1e-5)
        np.testing.assert_allclose(iou, iou_b[i], atol=1e-6)


def test_mask_threshold() -> None:
    model = build_sam("sam2.1_hiera_tiny", device="cpu", image_size=256)
    img = np.full((64, 64, 3), 100, np.uint8)
    p0, p1 = ImagePredictor(model), ImagePredictor(model, mask_threshold=1.5)
    for p in (p0, p1):
        p.set_image(img)
    logits, _, _ = p0.predict(box=np.array([5, 5, 50, 50]), return_logits=True, multimask_output=False)
    m1, _, _ = p1.predict(box=np.array([5, 5, 50, 50]), multimask_output=False)
    assert np.array_equal(m1, (logits > 1.5).astype(np.float32))


def test_pil_and_array_agree(predictor: ImagePredictor) -> None:
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    pred = ImagePredictor(predictor.model)
    pred.set_image(arr)
    a = pred.get_image_embedding().clone()
    pred.set_image(Image.fromarray(arr))
    assert torch.equal(a, pred.get_image_embedding())
    pred.set_image(Image.fromarray(arr).convert("RGBA"))  # opaque alpha: the same pixels
    assert torch.equal(a, pred.get_image_embedding())


def _exif_rotated(upright: np.ndarray) -> Image.Image:
    """A PNG whose pixels are stored turned a quarter left, with the EXIF tag that turns them back."""
    import io

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.rot90(upright))).save(buf, format="PNG", exif=exif)
    buf.seek(0)
    return Image.open(buf)


def test_pil_images_are_decoded_upright(predictor: ImagePredictor) -> None:
    """PIL input goes through the project's one image decoder: EXIF orientation and alpha handled."""
    arr = np.random.default_rng(6).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    pred = ImagePredictor(predictor.model)
    pred.set_image(arr)
    expected = pred.get_image_embedding().clone()
    pred.set_image(_exif_rotated(arr))
    assert torch.equal(expected, pred.get_image_embedding())
    rgba = np.dstack([arr, np.zeros(arr.shape[:2], np.uint8)])  # fully transparent: white
    pred.set_image(Image.fromarray(rgba, "RGBA"))
    pred_white = ImagePredictor(predictor.model)
    pred_white.set_image(np.full_like(arr, 255))
    assert torch.equal(pred_white.get_image_embedding(), pred.get_image_embedding())


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((10, 10, 3), np.float32), "dtype uint8"),
        (np.zeros((10, 10), np.uint8), r"shape \(H, W, 3\).*grayscale"),
        (np.zeros((10, 10, 4), np.uint8), "alpha"),
        (np.zeros((3, 10, 10), np.uint8), r"shape \(H, W, 3\)"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (torch.zeros(10, 10, 3, dtype=torch.uint8), "torch.Tensor"),
        ("image.jpg", "got str"),
    ],
)
def test_bad_images(predictor: ImagePredictor, image, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImagePredictor(predictor.model).set_image(image)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(point_coords=np.array([[np.nan, 1.0]]), point_labels=np.array([1])), "NaN or infinite"),
        (dict(point_coords=np.array([[np.inf, 1.0]]), point_labels=np.array([1])), "NaN or infinite"),
        (dict(point_coords=np.array([[1.0, 1.0]]), point_labels=np.array([2])), r"0 \(background\) or 1 \(foreground\), got \[2\]"),
        (dict(point_coords=np.array([[1.0, 1.0]]), point_labels=np.array([-1])), r"got \[-1\]"),
        (dict(point_coords=np.array([[1.0, 1.0]])), "point_labels must be given"),
        (dict(point_labels=np.array([1])), "without point_coords"),
        (dict(point_coords=np.array([1.0, 1.0]), point_labels=np.array([1])), r"shape \(N, 2\)"),
        (dict(point_coords=np.array([[1.0, 1.0]]), point_labels=np.array([1, 0])), "does not match"),
        (dict(box=np.array([1.0, 2.0, 3.0])), r"shape \(4,\) or \(B, 4\)"),
        (dict(box=np.array([50.0, 10.0, 20.0, 40.0])), "not xyxy"),
        (dict(box=np.array([np.nan, 10.0, 20.0, 40.0])), "NaN"),
        (dict(box=np.array([500.0, 500.0, 600.0, 600.0])), "entirely outside the image .*width 120, height 90"),
        (dict(box=np.array([-50.0, -50.0, -1.0, -1.0])), "entirely outside"),
        (dict(box=np.array([0.5, 0.5, 2.0, 2.0]), normalize_coords=False), None),  # partly outside: fine
        (dict(mask_input=np.zeros((1, 32, 32), np.float32)), r"mask_input must have shape \(1, 64, 64\)"),
        (dict(mask_input=np.full((1, 64, 64), np.nan, np.float32)), "NaN"),
    ],
)
def test_bad_prompts(predictor: ImagePredictor, kwargs, message) -> None:
    if message is None:
        masks, _, _ = predictor.predict(**kwargs)
        assert masks.shape[-2:] == (90, 120)
        return
    with pytest.raises(ValueError, match=message):
        predictor.predict(**kwargs)


def test_batch_api_guards(predictor: ImagePredictor) -> None:
    pred = ImagePredictor(predictor.model)
    with pytest.raises(ValueError, match="empty list"):
        pred.set_image_batch([])
    with pytest.raises(ValueError, match="list of images"):
        pred.set_image_batch(np.zeros((2, 8, 8, 3), np.uint8))
    imgs = [np.zeros((20, 30, 3), np.uint8), np.full((40, 20, 3), 200, np.uint8)]
    pred.set_image_batch(imgs)
    with pytest.raises(RuntimeError, match="predict_batch"):
        pred.predict(box=np.array([0, 0, 5, 5]))
    with pytest.raises(ValueError, match="box_batch has 1 entries for 2 images"):
        pred.predict_batch(box_batch=[np.array([0, 0, 5, 5])])
    masks, ious, lows = pred.predict_batch(box_batch=[np.array([0, 0, 5, 5]), None], multimask_output=False)
    assert masks[0].shape == (1, 20, 30) and masks[1].shape == (1, 40, 20)
    assert pred.get_image_embedding().shape == (2, 256, 16, 16)
    # a batch embedding equals the one-image embeddings
    single = ImagePredictor(predictor.model)
    single.set_image(imgs[1])
    torch.testing.assert_close(single.get_image_embedding()[0], pred.get_image_embedding()[1], atol=1e-5, rtol=0)
    pred.reset_predictor()
    assert not pred.is_image_set


@pytest.mark.parametrize("multimask", [True, False])
def test_chunked_decoding_is_bit_identical(predictor, multimask):
    """On the CPU many prompts are decoded a few at a time (image-side tensors kept small);
    the token heads still see the whole batch, so the result is the same to the bit."""
    decoder = predictor.model.sam_mask_decoder
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 60, (7, 2))
    boxes = np.concatenate([xy, xy + 25], axis=1)  # 7 boxes: chunks of 2, 2 and 3 (no chunk of 1)
    points = torch.as_tensor(rng.uniform(0, 90, (7, 1, 2)), dtype=torch.float32)
    labels = torch.ones(7, 1, dtype=torch.int32)
    per_prompt = 256 * 16 * 16 * 4  # one prompt's image tokens at 256 px
    results = {}
    try:
        for chunk_bytes in (0, 2 * per_prompt):
            decoder.chunk_bytes = chunk_bytes
            with torch.inference_mode():
                chunks = decoder._prompt_chunks(7, 8, torch.zeros(1, 256, 16, 16))
            assert [c.stop - c.start for c in chunks] == ([2, 2, 3] if chunk_bytes else [7])
            masks, iou, low = predictor.predict(box=boxes, multimask_output=multimask, return_logits=True)
            low_pts, iou_pts = predictor.predict_low_res(points, labels, multimask_output=multimask)
            results[chunk_bytes] = (masks, iou, low, low_pts.numpy(), iou_pts.numpy())
    finally:
        decoder.chunk_bytes = CPU_CHUNK_BYTES
    for whole, chunked in zip(results[0], results[2 * per_prompt]):
        assert np.array_equal(whole, chunked)


def test_huge_images_are_resized_a_channel_at_a_time_with_the_same_result(monkeypatch) -> None:
    """Above LARGE_IMAGE_PIXELS the float copy is made per channel (1 GB instead of 3 GB for 16k x 16k);
    the model input equals the whole-image path and Meta's SAM2Transforms bit for bit."""
    from sam2.utils.transforms import SAM2Transforms

    import segmenter.modeling.transforms as transforms

    img = np.random.default_rng(5).integers(0, 256, (300, 420, 3), dtype=np.uint8)
    whole = transforms.resize_to_square([img], 128, torch.device("cpu"))
    calls = []
    real = transforms._resize_unit
    monkeypatch.setattr(transforms, "_resize_unit", lambda x, s: calls.append(x.shape[0]) or real(x, s))
    monkeypatch.setattr(transforms, "LARGE_IMAGE_PIXELS", 300 * 420 - 1)
    split = transforms.resize_to_square([img], 128, torch.device("cpu"))
    assert calls == [1, 1, 1]
    assert torch.equal(whole, split)
    ref = SAM2Transforms(resolution=128, mask_threshold=0.0)(img)
    assert torch.allclose(split[0], ref, atol=1e-6)
