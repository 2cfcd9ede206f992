"""Parity of the prompt encoder and mask decoder with Meta's reference (random weights, fp32)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from reference import reference_sam2
from torch import nn

from segmenter.config import SAM2Config, load_model_config
from segmenter.modeling.mask_decoder import MaskDecoder, stability_scores
from segmenter.modeling.prompt_encoder import PromptEncoder

pytestmark = pytest.mark.parity

TOL = 1e-5
C = 256


@dataclass
class Heads:
    cfg: SAM2Config
    ref_pe: nn.Module
    ref_dec: nn.Module
    pe: PromptEncoder
    dec: MaskDecoder


def build_heads(name: str, image_size: int) -> Heads:
    ref = reference_sam2(name, image_size=image_size)
    cfg = load_model_config(name, image_size=image_size)
    pe = PromptEncoder.from_config(cfg)
    dec = MaskDecoder(cfg.decoder)
    pe.load_state_dict(ref.sam_prompt_encoder.state_dict(), strict=True)
    dec.load_state_dict(ref.sam_mask_decoder.state_dict(), strict=True)
    return Heads(cfg, ref.sam_prompt_encoder, ref.sam_mask_decoder, pe.eval(), dec.eval())


@pytest.fixture(scope="module", params=[512, pytest.param(1024, marks=pytest.mark.slow)], ids=lambda s: f"S{s}")
def heads(request: pytest.FixtureRequest) -> Heads:
    return build_heads("sam2.1_hiera_tiny", request.param)


@pytest.fixture(scope="module")
def heads_v20() -> Heads:
    return build_heads("sam2_hiera_tiny", 512)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item() if a.numel() else 0.0


# --- prompts -----------------------------------------------------------------------------------

Prompt = tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None, torch.Tensor | None]


def rand_points(gen: torch.Generator, b: int, labels: list[int], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.rand(b, len(labels), 2, generator=gen) * (size - 1)
    return coords, torch.tensor([labels] * b, dtype=torch.int)


def rand_boxes(gen: torch.Generator, b: int, size: int) -> torch.Tensor:
    xy = torch.rand(b, 2, 2, generator=gen) * (size - 1)
    lo, hi = xy.min(dim=1).values, xy.max(dim=1).values
    return torch.cat([lo, hi], dim=-1)  # (b, 4) x0 y0 x1 y1


def rand_masks(gen: torch.Generator, b: int, cfg: SAM2Config) -> torch.Tensor:
    side = 4 * cfg.embed_size
    return 3 * torch.randn(b, 1, side, side, generator=gen)


def box_as_points(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How SAM 2 feeds boxes: two corner points labelled 2 and 3."""
    return boxes.reshape(-1, 2, 2), torch.tensor([[2, 3]], dtype=torch.int).expand(boxes.shape[0], -1)


def cat_points(*ps: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([p[0] for p in ps], dim=1), torch.cat([p[1] for p in ps], dim=1)


def _point(g: torch.Generator, cfg: SAM2Config) -> Prompt:
    return rand_points(g, 1, [1], cfg.image_size), None, None


def _points_with_negatives(g: torch.Generator, cfg: SAM2Config) -> Prompt:
    return rand_points(g, 1, [1, 0, 1, 0, 0], cfg.image_size), None, None


def _padding_point_only(g: torch.Generator, cfg: SAM2Config) -> Prompt:  # SAM 2's "no click" input
    return rand_points(g, 1, [-1], cfg.image_size), None, None


def _box_as_points(g: torch.Generator, cfg: SAM2Config) -> Prompt:
    return box_as_points(rand_boxes(g, 1, cfg.image_size)), None, None


def _box_arg(g: torch.Generator, cfg: SAM2Config) -> Prompt:
    return None, rand_boxes(g, 1, cfg.image_size), None


def _box_and_points(g: torch.Generator, cfg: SAM2Config) -> Prompt:
    box = box_as_points(rand_boxes(g, 1, cfg.image_size))
    return cat_points(box, rand_points(g, 1, [1, 0], cfg.image_size)), None, None


def _box_arg_and_points(g: torch.Generator, cfg: SAM2Config) -> Prompt:  # no padding point
    return rand_points(g, 1, [1, 0], cfg.image_size), rand_boxes(g, 1, cfg.image_size), None


def _mask_and_point(g: torch.Generator, cfg: SAM2Config) -> Prompt:
    return rand_points(g, 1, [1], cfg.image_size), None, rand_masks(g, 1, cfg)


def _mask_only(g: torch.Generator, cfg: SAM2Config) -> Prompt:
    return None, None, rand_masks(g, 1, cfg)


def _no_prompt(g: torch.Generator, cfg: SAM2Config) -> Prompt:
    return None, None, None


def _batched_boxes(g: torch.Generator, cfg: SAM2Config) -> Prompt:
    return box_as_points(rand_boxes(g, 3, cfg.image_size)), None, None


def _batched_box_arg(g: torch.Generator, cfg: SAM2Config) -> Prompt:
    return None, rand_boxes(g, 3, cfg.image_size), None


def _per_prompt(g: torch.Generator, cfg: SAM2Config) -> Prompt:
    return rand_points(g, 2, [1, 0, 1], cfg.image_size), None, rand_masks(g, 2, cfg)


# case name -> (prompt maker, image-embedding batch); B > 1 prompt sets on 1 image use repeat_image
CASES: dict[str, tuple[Callable[[torch.Generator, SAM2Config], Prompt], int]] = {
    "point": (_point, 1),
    "points_with_negatives": (_points_with_negatives, 1),
    "padding_point_only": (_padding_point_only, 1),
    "box_as_points": (_box_as_points, 1),
    "box_arg": (_box_arg, 1),
    "box_and_points": (_box_and_points, 1),
    "box_arg_and_points": (_box_arg_and_points, 1),
    "mask_and_point": (_mask_and_point, 1),
    "mask_only": (_mask_only, 1),
    "no_prompt": (_no_prompt, 1),
    "batched_boxes_repeat_image": (_batched_boxes, 1),
    "batched_box_arg_repeat_image": (_batched_box_arg, 1),
    "per_prompt_embeddings": (_per_prompt, 2),
}


def image_inputs(gen: torch.Generator, cfg: SAM2Config, b_img: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    e = cfg.embed_size
    emb = torch.randn(b_img, C, e, e, generator=gen)
    feat_s0 = torch.randn(b_img, C // 8, 4 * e, 4 * e, generator=gen)
    feat_s1 = torch.randn(b_img, C // 4, 2 * e, 2 * e, generator=gen)
    return emb, [feat_s0, feat_s1]


@torch.no_grad()
def compare(
    h: Heads,
    prompt: Prompt,
    b_img: int,
    multimask: bool,
    gen: torch.Generator,
    ref_dec: nn.Module | None = None,
    dec: MaskDecoder | None = None,
) -> tuple[dict[str, float], tuple[torch.Tensor, ...]]:
    """Run both implementations on the same prompt and image inputs -> (max |diff| per output, ours)."""
    ref_dec, dec = ref_dec or h.ref_dec, dec or h.dec
    points, boxes, masks = prompt
    ref_sparse, ref_dense = h.ref_pe(points, boxes, masks)
    sparse, dense = h.pe(points, boxes, masks)
    b = sparse.shape[0]
    emb, feats = image_inputs(gen, h.cfg, b_img)
    repeat = b_img == 1 and b > 1
    ref_out = ref_dec(emb, h.ref_pe.get_dense_pe(), ref_sparse, ref_dense, multimask, repeat, feats)
    out = dec(emb, h.pe.get_dense_pe(), sparse, dense, multimask, repeat, feats)

    m = 3 if multimask else 1
    assert out[0].shape == (b, m, 4 * h.cfg.embed_size, 4 * h.cfg.embed_size)
    assert out[1].shape == (b, m)
    assert out[2].shape == (b, m if multimask else 1, C)
    assert out[3].shape == (b, 1)
    diffs = {"sparse": max_diff(sparse, ref_sparse), "dense": max_diff(dense, ref_dense)}
    for name, a, r in zip(["masks", "iou", "tokens", "obj"], out, ref_out):
        diffs[name] = max_diff(a, r)
    return diffs, out


def check(diffs: dict[str, float], record_property: Callable[[str, object], None]) -> None:
    worst = max(diffs.values())
    record_property("max_abs_diff", worst)
    assert worst <= TOL, diffs


# --- tests -------------------------------------------------------------------------------------


def test_state_dict_keys_match(heads: Heads) -> None:
    assert set(heads.pe.state_dict()) == set(heads.ref_pe.state_dict())
    assert set(heads.dec.state_dict()) == set(heads.ref_dec.state_dict())
    assert heads.pe.mask_input_size == heads.ref_pe.mask_input_size


@torch.no_grad()
def test_dense_pe_and_coords(heads: Heads, record_property: Callable) -> None:
    pe, ref = heads.pe.get_dense_pe(), heads.ref_pe.get_dense_pe()
    e = heads.cfg.embed_size
    assert pe.shape == (1, C, e, e)
    assert heads.pe.get_dense_pe().data_ptr() == pe.data_ptr()  # cached, not recomputed
    coords = torch.rand(2, 5, 2) * heads.cfg.image_size
    size = heads.ref_pe.input_image_size
    ours = heads.pe.pe_layer.forward_with_coords(coords, size)
    d = max(max_diff(pe, ref), max_diff(ours, heads.ref_pe.pe_layer.forward_with_coords(coords, size)))
    record_property("max_abs_diff", d)
    assert d <= TOL


@torch.no_grad()
def test_dense_pe_cache_follows_weights(heads: Heads) -> None:
    pe = copy.deepcopy(heads.pe)
    before = pe.get_dense_pe().clone()
    sd = pe.state_dict()
    sd["pe_layer.positional_encoding_gaussian_matrix"] = 2 * sd["pe_layer.positional_encoding_gaussian_matrix"]
    pe.load_state_dict(sd)
    after = pe.get_dense_pe()
    assert not torch.equal(before, after)
    ref = copy.deepcopy(heads.ref_pe)
    ref.load_state_dict(sd)
    assert max_diff(after, ref.get_dense_pe()) <= TOL


@pytest.mark.parametrize("multimask", [True, False], ids=["multi", "single"])
@pytest.mark.parametrize("case", list(CASES))
def test_heads_parity(heads: Heads, case: str, multimask: bool, record_property: Callable) -> None:
    make, b_img = CASES[case]
    gen = torch.Generator().manual_seed(list(CASES).index(case))
    prompt = make(gen, heads.cfg)
    diffs, _ = compare(heads, prompt, b_img, multimask, gen)
    check(diffs, record_property)


def test_sam20_heads_parity(heads_v20: Heads, record_property: Callable) -> None:
    gen = torch.Generator().manual_seed(1)
    worst: dict[str, float] = {}
    for case in ["points_with_negatives", "batched_boxes_repeat_image", "per_prompt_embeddings"]:
        make, b_img = CASES[case]
        for multimask in (True, False):
            diffs, _ = compare(heads_v20, make(gen, heads_v20.cfg), b_img, multimask, gen)
            for k, v in diffs.items():
                worst[k] = max(worst.get(k, 0.0), v)
    check(worst, record_property)


# --- dynamic multimask via stability ------------------------------------------------------------


def _decoders(h: Heads, thresh: float, mask0_scale: float, dynamic: bool) -> tuple[nn.Module, MaskDecoder]:
    """Copies of both decoders with the given stability threshold and mask-0 hypernetwork output scaled."""
    ref_dec = copy.deepcopy(h.ref_dec)  # the reference model is cached and shared: never mutate it
    ref_dec.dynamic_multimask_via_stability = dynamic
    ref_dec.dynamic_multimask_stability_thresh = thresh
    with torch.no_grad():
        ref_dec.output_hypernetworks_mlps[0].layers[-1].weight.mul_(mask0_scale)
        ref_dec.output_hypernetworks_mlps[0].layers[-1].bias.mul_(mask0_scale)
    cfg = dataclasses.replace(
        h.cfg.decoder, dynamic_multimask_via_stability=dynamic, dynamic_multimask_stability_thresh=thresh
    )
    dec = MaskDecoder(cfg).eval()
    dec.load_state_dict(ref_dec.state_dict(), strict=True)
    return ref_dec, dec


@torch.no_grad()
def _reference_all_masks(h: Heads, ref_dec: nn.Module, prompt: Prompt, gen: torch.Generator) -> tuple:
    """The reference's stability of mask 0 per prompt set, its 4 masks and IoUs (gen left untouched)."""
    state = gen.get_state()
    sparse, dense = h.ref_pe(*prompt)
    emb, feats = image_inputs(gen, h.cfg, 1)
    gen.set_state(state)  # compare() draws the same image inputs
    masks, iou, _, _ = ref_dec.predict_masks(emb, h.ref_pe.get_dense_pe(), sparse, dense, True, feats)
    return ref_dec._get_stability_scores(masks[:, :1])[:, 0], masks, iou


@pytest.mark.parametrize("mode", ["all_fall_back", "none_fall_back", "mixed", "disabled"])
def test_dynamic_multimask_stability(heads: Heads, mode: str, record_property: Callable) -> None:
    h, b = heads, 6
    gen = torch.Generator().manual_seed(7)
    prompt = (rand_points(gen, b, [1, 0], h.cfg.image_size), None, None)
    thresh = h.cfg.decoder.dynamic_multimask_stability_thresh
    scale = 100.0 if mode == "none_fall_back" else 1.0  # large mask-0 logits: few pixels near 0
    dynamic = mode != "disabled"
    ref_dec, dec = _decoders(h, thresh, scale, dynamic)
    scores, all_masks, all_iou = _reference_all_masks(h, ref_dec, prompt, gen)
    if mode == "mixed":  # threshold between the middle scores: half the batch falls back
        s = scores.sort().values
        thresh = float((s[b // 2 - 1] + s[b // 2]) / 2)
        ref_dec, dec = _decoders(h, thresh, scale, dynamic)
    # random weights give stabilities ~0.95-0.97: below the default 0.98
    stable = scores >= thresh if dynamic else torch.ones(b, dtype=torch.bool)
    n_stable = {"all_fall_back": 0, "none_fall_back": b, "mixed": b // 2, "disabled": b}[mode]
    assert int(stable.sum()) == n_stable, (scores, thresh)
    assert torch.equal(stability_scores(all_masks[:, :1], dec.dynamic_multimask_stability_delta)[:, 0], scores)

    diffs, out = compare(h, prompt, 1, False, gen, ref_dec=ref_dec, dec=dec)
    check(diffs, record_property)

    # the branch taken: mask 0 where stable, else the best-IoU multimask output (which differs)
    rows = torch.arange(b)
    best = all_iou[:, 1:].argmax(-1) + 1
    expected = torch.where(stable[:, None, None], all_masks[:, 0], all_masks[rows, best])
    assert max_diff(out[0][:, 0], expected) <= TOL
    assert max_diff(out[1][:, 0], torch.where(stable, all_iou[:, 0], all_iou[rows, best])) <= TOL
    if not stable.all():
        assert max_diff(all_masks[~stable, 0], all_masks[rows, best][~stable]) > 0.1
