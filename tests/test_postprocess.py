"""Mask post-processing against the references: SAM 2's hole filling, SAM 1's small-region removal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference import cuda_connected_components as _cuda_kernel_restated
from segmenter.postprocess import fill_holes, postprocess_masks, remove_small_regions, smooth_mask


@pytest.fixture()
def reference_fill_holes(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """The reference's ``fill_holes_in_mask_scores`` with its CUDA kernel replaced by the restatement."""
    import sam2.utils.misc as misc

    monkeypatch.setattr(misc, "get_connected_components", _cuda_kernel_restated)
    return misc.fill_holes_in_mask_scores


def _random_logits(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Blobby logits with holes and specks of many sizes: (n, 1, h, w)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 1, h // 4, w // 4, generator=gen)
    logits = torch.nn.functional.interpolate(coarse, (h, w), mode="bilinear", align_corners=False)
    return logits + 0.6 * torch.randn(n, 1, h, w, generator=gen) + 0.2


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


def test_the_cuda_kernel_is_8_connected() -> None:
    """The restated kernel labels exactly scipy's 8-connected components (and not the 4-connected ones)."""
    from scipy import ndimage

    background = (_random_logits(4, 32, 48, seed=5) <= 0).to(torch.uint8)
    labels, counts = _cuda_kernel_restated(background)
    differs_from_4 = False
    for b in range(4):
        img = background[b, 0].numpy()
        lab8, _ = ndimage.label(img, structure=np.ones((3, 3)))
        lab4, _ = ndimage.label(img)
        assert _same_partition(labels[b, 0].numpy(), lab8)
        assert np.array_equal(counts[b, 0].numpy(), np.bincount(lab8.ravel())[lab8] * (lab8 > 0))
        differs_from_4 |= not _same_partition(labels[b, 0].numpy(), lab4)
    assert differs_from_4


def test_fill_holes_matches_the_reference(reference_fill_holes) -> None:  # noqa: ANN001
    for seed, (h, w) in enumerate([(32, 48), (40, 40), (24, 64)]):
        logits = _random_logits(3, h, w, seed)
        for max_area in (1, 4, 8, 30, 200):
            ref = reference_fill_holes(logits, max_area)
            ours = fill_holes(logits, max_area)
            assert torch.equal(ours, ref), (seed, max_area)
            assert ours.dtype == logits.dtype
        assert not torch.equal(fill_holes(logits, 8), logits)  # the case has holes to fill
        assert torch.equal(fill_holes(logits[:, 0], 8), reference_fill_holes(logits, 8)[:, 0])  # (N, H, W)


def test_fill_holes_semantics() -> None:
    logits = torch.full((1, 1, 12, 12), 5.0)
    logits[0, 0, 2, 2] = logits[0, 0, 3, 3] = -1.0  # one 2-pixel hole under 8-connectivity
    logits[0, 0, 7:9, 7:10] = -2.0  # a 6-pixel hole
    logits[0, 0, 0, 11] = 0.0  # a corner pixel on the border: background (<= 0) and small
    out = fill_holes(logits, max_area=2)
    expected = logits.clone()
    expected[0, 0, 2, 2] = expected[0, 0, 3, 3] = expected[0, 0, 0, 11] = 0.1
    assert torch.equal(out, expected)
    assert torch.equal(fill_holes(logits, max_area=1), torch.where(logits == 0.0, 0.1, logits))  # diagonal pair is one region
    assert torch.equal(fill_holes(logits, 6)[0, 0, 7:9, 7:10], torch.full((2, 3), 0.1))
    assert torch.equal(fill_holes(logits, 8, threshold=-1.5, fill_value=3.0)[0, 0, 7:9, 7:10], torch.full((2, 3), 3.0))
    everything = torch.full((2, 1, 4, 4), -1.0)  # all background: filled when max_area >= 16
    assert torch.equal(fill_holes(everything, 16), torch.full_like(everything, 0.1))
    assert torch.equal(fill_holes(everything, 15), everything)
    assert fill_holes(logits, 0) is logits
    bf16 = fill_holes(logits.bfloat16(), 2)
    assert bf16.dtype == torch.bfloat16 and torch.equal(bf16, expected.bfloat16())
    with pytest.raises(ValueError, match="shape"):
        fill_holes(torch.zeros(2, 3, 4, 4), 4)
    with pytest.raises(ValueError, match="max_area"):
        fill_holes(logits, -1)


def test_fill_holes_keeps_masks_apart() -> None:
    """Masks are labelled together in one call; a region at the bottom of one must not join the next."""
    logits = torch.full((2, 1, 6, 6), 1.0)
    logits[0, 0, 5, 2:4] = -1.0  # bottom border of mask 0
    logits[1, 0, 0, 2:4] = -1.0  # top border of mask 1
    out = fill_holes(logits, max_area=2)
    assert torch.equal(out, torch.where(logits < 0, 0.1, logits))


def _random_masks(seed: int, h: int = 40, w: int = 56) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    blobs = _random_logits(4, h, w, seed)[:, 0].numpy() > 0
    specks = rng.random((h, w)) < 0.03
    return [*blobs, blobs[0] ^ specks, np.zeros((h, w), bool), np.ones((h, w), bool), specks]


def test_remove_small_regions_matches_segment_anything() -> None:
    from segment_anything.utils.amg import remove_small_regions as reference

    changed_any = {"holes": False, "islands": False}
    for seed in range(3):
        for mask in _random_masks(seed):
            for mode in ("holes", "islands"):
                for thresh in (1, 3, 10.5, 50, 10_000):
                    ref, ref_changed = reference(mask.copy(), thresh, mode)
                    ours, changed = remove_small_regions(mask, thresh, mode)
                    assert ours.dtype == bool and ours.shape == mask.shape
                    assert np.array_equal(ours, ref) and changed == ref_changed, (seed, mode, thresh)
                    changed_any[mode] |= changed
    assert all(changed_any.values())


def test_remove_small_regions_rules() -> None:
    mask = np.zeros((10, 10), bool)
    mask[1:3, 1:3] = True  # island of 4
    mask[6:9, 6:9] = True  # island of 9
    out, changed = remove_small_regions(mask, 5, "islands")
    assert changed and out.sum() == 9 and out[7, 7]
    out, changed = remove_small_regions(mask, 100, "islands")  # all small: the largest stays
    assert changed and np.array_equal(out, remove_small_regions(mask, 5, "islands")[0])
    diag = np.zeros((6, 6), bool)
    diag[1, 1] = diag[2, 2] = True  # one 8-connected island of 2
    assert not remove_small_regions(diag, 2, "islands")[1]
    ring = np.ones((7, 7), bool)
    ring[3, 3] = False
    out, changed = remove_small_regions(ring, 2, "holes")
    assert changed and out.all()
    with pytest.raises(ValueError, match="mode"):
        remove_small_regions(mask, 5, "specks")
    with pytest.raises(ValueError, match="2-D"):
        remove_small_regions(mask[None], 5, "holes")


def test_smooth_mask() -> None:
    mask = np.zeros((40, 40), bool)
    mask[10:30, 0:25] = True  # a block touching the left border
    mask[19, 12] = False  # a pinhole
    mask[35, 35] = True  # a speck
    out = smooth_mask(mask, 5)
    assert out.dtype == bool
    assert not out[35, 35] and out[19, 12]
    expected = np.zeros_like(mask)
    expected[10:30, 0:25] = True
    assert not (out & ~expected).any()  # nothing grows
    assert out[10:30, 0].all()  # the image border does not erode the block
    assert np.array_equal(out[12:28], expected[12:28])  # only the free corners get rounded
    assert np.array_equal(smooth_mask(mask, 1), mask)
    for bad in (0, 4, -3):
        with pytest.raises(ValueError, match="kernel_size"):
            smooth_mask(mask, bad)


def test_postprocess_masks() -> None:
    from segment_anything.utils.amg import remove_small_regions as reference

    masks = np.stack(_random_masks(7))
    out = postprocess_masks(masks, min_hole_area=6, min_island_area=12)
    assert out.shape == masks.shape and out.dtype == bool
    for m, o in zip(masks, out):
        expected = reference(reference(m, 6, "holes")[0], 12, "islands")[0]
        assert np.array_equal(o, expected)
    assert np.array_equal(postprocess_masks(masks), masks)
    smoothed = postprocess_masks(torch.from_numpy(masks), smooth_kernel=3, min_island_area=12)
    for m, o in zip(masks, smoothed):
        assert np.array_equal(o, reference(smooth_mask(m, 3), 12, "islands")[0])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        postprocess_masks(masks[0])
    with pytest.raises(ValueError, match="min_hole_area"):
        postprocess_masks(masks, min_hole_area=-1)
    with pytest.raises(ValueError, match="kernel_size"):
        postprocess_masks(masks, smooth_kernel=2)
