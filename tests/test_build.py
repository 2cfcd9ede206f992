"""build_sam / from_pretrained end to end: every checkpoint format gives the same model outputs."""

from __future__ import annotations

import copy

import numpy as np

import pytest
import torch

from reference import reference_sam2
from segmenter import ImagePredictor, build_sam, from_pretrained
from checkpoint_fixtures import SIZE
from checkpoint_fixtures import cache_file as _cache_file
from checkpoint_fixtures import hf_sam2_model as _hf_model
from checkpoint_fixtures import save_pretrained as _save_pretrained

TOL = 1e-4


def _ours_heads(model, image: torch.Tensor, box: torch.Tensor, multimask: bool):
    with torch.inference_mode():
        emb = model.encode_images(image)
        corners = box.view(-1, 2, 2)
        labels = torch.tensor([[2, 3]], dtype=torch.int32).expand(len(corners), -1)
        return model.sam_heads(emb.image_embed, emb.high_res_feats, (corners, labels), None, multimask)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("video", [pytest.param(v, marks=pytest.mark.slow) for v in (True, False)], ids=["Sam2VideoModel", "Sam2Model"])
def test_transformers_layout_gives_transformers_outputs(video: bool, tmp_path, image) -> None:
    hf = _hf_model(video=video, seed=11)
    folder = _save_pretrained(hf, tmp_path / "hf")
    ours = build_sam("sam2.1_hiera_tiny", checkpoint=folder, device="cpu", image_size=SIZE)
    assert ours.with_memory is video
    inferred = from_pretrained(folder, device="cpu", image_size=SIZE)
    assert inferred.config.name == "sam2.1_hiera_tiny"
    box = torch.tensor([[40.0, 100.0, 420.0, 380.0]])
    for multimask in (False, True):
        with torch.inference_mode():
            if video:
                out = hf._single_frame_forward(pixel_values=image, input_boxes=box.view(1, 1, 4), multimask_output=multimask)
            else:
                out = hf(pixel_values=image, input_boxes=box.view(1, 1, 4), multimask_output=multimask)
        for model in (ours, inferred):
            masks, iou, _, score = _ours_heads(model, image, box, multimask)
            if out.pred_masks.numel() < masks.numel():  # the video model returns the best mask only
                masks = masks[:, iou.argmax(-1)]
            d = {
                "masks": (out.pred_masks.reshape(masks.shape) - masks).abs().max().item(),
                "iou": (out.iou_scores.reshape(iou.shape) - iou).abs().max().item(),
                "score": (out.object_score_logits.reshape(score.shape) - score).abs().max().item(),
            }
            print(f"transformers {'video' if video else 'image'} mm={multimask}: {d}")
            assert max(d.values()) < TOL, d


@pytest.mark.slow
def test_meta_pt_and_hub_cache_give_reference_outputs(tmp_path, monkeypatch, image) -> None:
    ref = copy.deepcopy(reference_sam2("sam2_hiera_tiny", SIZE))
    with torch.no_grad():  # object present, so the reference does not gate the masks to -1024
        ref.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(2.0)
    pt = tmp_path / "sam2_hiera_tiny.pt"
    torch.save({"model": ref.state_dict()}, pt)
    cache = tmp_path / "hub"
    _cache_file(cache, "facebook/sam2-hiera-tiny", pt, "sam2_hiera_tiny.pt")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    from_hub = from_pretrained("facebook/sam2-hiera-tiny", device="cpu", image_size=SIZE)
    assert from_hub.config.name == "sam2_hiera_tiny" and from_hub.config.version == "2.0"
    from_file = from_pretrained(pt, device="cpu", image_size=SIZE)
    assert from_file.config.name == "sam2_hiera_tiny"
    ours_sd = from_hub.state_dict()
    assert ours_sd.keys() == ref.state_dict().keys()
    for k, v in ref.state_dict().items():
        assert torch.equal(ours_sd[k], v), k
    box = torch.tensor([[10.0, 20.0, 300.0, 400.0]])
    _, feats, _, sizes = ref._prepare_backbone_features(ref.forward_image(image))
    feats = [f.permute(1, 2, 0).reshape(1, -1, *s) for f, s in zip(feats, sizes)]
    feats[-1] = feats[-1] + ref.no_mem_embed.view(1, -1, 1, 1)
    with torch.no_grad():
        r = ref._forward_sam_heads(
            feats[-1], point_inputs={"point_coords": box.view(1, 2, 2), "point_labels": torch.tensor([[2, 3]])},
            high_res_features=feats[:-1], multimask_output=False,
        )
    masks, iou, _, score = _ours_heads(from_hub, image, box, False)
    assert (r[6] > 0).all()
    assert (r[0] - masks).abs().max() < TOL and (r[2] - iou).abs().max() < TOL and (r[6] - score).abs().max() < TOL


@pytest.mark.slow
def test_wrong_config_names_the_probable_one(tmp_path) -> None:
    ref = reference_sam2("sam2.1_hiera_small", 256)
    pt = tmp_path / "small.pt"
    torch.save({"model": ref.state_dict()}, pt)
    with pytest.raises(ValueError) as info:
        build_sam("sam2.1_hiera_tiny", checkpoint=pt, device="cpu", image_size=256)
    msg = str(info.value)
    assert "sam2.1_hiera_tiny" in msg and "looks like sam2.1_hiera_small" in msg and str(pt) in msg
    assert "unexpected keys" in msg
    model = build_sam("sam2.1_hiera_small", checkpoint=pt, device="cpu", image_size=256)
    assert model.config.name == "sam2.1_hiera_small"


def test_truncated_checkpoint_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "sam2.1_hiera_tiny.pt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(ValueError, match="sam2.1_hiera_tiny.pt"):
        build_sam("sam2.1_hiera_tiny", checkpoint=bad, device="cpu")
    with pytest.raises(FileNotFoundError):
        build_sam("sam2.1_hiera_tiny", checkpoint=tmp_path / "missing.pt", device="cpu")


def test_random_model_predicts_and_image_predictor_from_pretrained(tmp_path) -> None:
    model = build_sam("sam2.1_hiera_tiny", device="cpu", image_size=256)
    pt = tmp_path / "t.pt"
    torch.save({"model": model.state_dict()}, pt)
    pred = ImagePredictor.from_pretrained(str(pt), device="cpu", image_size=256)
    assert pred.model.image_size == 256
    for a, b in zip(pred.model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_building_under_inference_mode_gives_a_normal_model() -> None:
    from segmenter import VideoPredictor

    with torch.inference_mode():
        model = build_sam("sam2.1_hiera_tiny", device="cpu", image_size=128)
    assert not any(p.is_inference() for p in model.parameters())
    frames = [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(2)]
    vp = VideoPredictor(model)
    state = vp.init_state(frames)
    vp.add_new_points_or_box(state, 0, 1, box=[10, 10, 40, 40])
    assert len(list(vp.propagate_in_video(state))) == 2


@pytest.mark.parametrize(("name", "size"), [("sam2.1_hiera_tiny", 128), ("sam_vit_b", 64)])
def test_both_families_share_one_model_interface(name: str, size: int) -> None:
    from segmenter.modeling.interface import ImageFeatures, MaskLogits, OutputStyle, SegmentationModel

    torch.manual_seed(0)
    model = build_sam(name, device="cpu", image_size=size)
    assert isinstance(model, SegmentationModel) and isinstance(model.output_style, OutputStyle)
    with torch.inference_mode():
        x, input_hw = model.preprocess([np.zeros((40, 60, 3), np.uint8)])
        assert tuple(x.shape) == (1, 3, size, size) and len(input_hw) == 1
        feats = model.encode_images(x)
        assert isinstance(feats, ImageFeatures)
        box = model.transform_coords(np.array([[2.0, 3.0], [50.0, 30.0]]), (40, 60), input_hw[0]).reshape(1, 4)
        out = model.decode_masks(feats.image_embed, boxes=box, multimask_output=True, high_res_feats=feats.high_res_feats)
        assert isinstance(out, MaskLogits)
        assert tuple(out.low_res.shape) == (1, 3, size // 4, size // 4) and tuple(out.iou.shape) == (1, 3)
        assert tuple(model.postprocess_masks(out.low_res, input_hw[0], (40, 60)).shape) == (1, 3, 40, 60)


def test_only_the_config_loader_reads_model_families() -> None:
    """No code branches on a family name: the builder maps config types to models, the rest uses
    the model interface (``config.py`` reads the YAML files' ``family`` key)."""
    import re
    from pathlib import Path

    import segmenter

    root = Path(segmenter.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "config.py" and re.search(r"\.family\b|[\"']family[\"']", p.read_text())
    ]
    assert not offenders, offenders


@pytest.mark.slow
def test_every_builder_goes_through_build_model(monkeypatch, tmp_path) -> None:
    import segmenter.build as build_module
    from segmenter.compat import sam2 as compat_sam2
    from segmenter.compat import segment_anything as compat_sa

    calls = []
    original = build_module.build_model

    def spy(config, *args, **kwargs):
        calls.append(config.name)
        return original(config, *args, **kwargs)

    for module in (build_module, compat_sam2, compat_sa):
        monkeypatch.setattr(module, "build_model", spy)
    build_sam("sam2.1_hiera_tiny", device="cpu", image_size=128)
    compat_sam2.build_sam2("configs/sam2/sam2_hiera_t.yaml", device="cpu", hydra_overrides_extra=["++model.image_size=128"])
    compat_sam2.build_sam2_video_predictor("sam2.1_hiera_tiny", device="cpu", hydra_overrides_extra=["++model.image_size=128"])
    sam1 = compat_sa.build_sam_vit_b(image_size=64)
    torch.save(sam1.state_dict(), tmp_path / "sam_vit_b.pth")
    from_pretrained(tmp_path / "sam_vit_b.pth", device="cpu")
    assert calls == ["sam2.1_hiera_tiny", "sam2_hiera_tiny", "sam2.1_hiera_tiny", "sam_vit_b", "sam_vit_b"]
