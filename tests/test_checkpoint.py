"""Checkpoint reading: Meta's .pt, safetensors, transformers folders (key map proven numerically), Hub ids."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import pickle
from pathlib import Path
from unittest import mock

import pytest
import torch
from safetensors.torch import save_file

from segmenter.checkpoints.read import (
    CheckpointNotCachedError,
    check_state_dict,
    config_name_for_hub_id,
    hf_to_official,
    infer_config_name,
    infer_config_name_from_hf_config,
    is_image_key,
    is_image_only,
    read_state_dict,
    resolve_checkpoint,
)
from segmenter.config import list_model_configs, load_model_config
from checkpoint_fixtures import cache_file as _cache_file
from checkpoint_fixtures import hf_sam2_model as _hf_model
from checkpoint_fixtures import save_pretrained as _save_pretrained
from reference import REFERENCE_CONFIGS, reference_sam2

SIZE = 512  # image size of every model built here (embedding grid 32 x 32)
TOL = 1e-5


# ----------------------------------------------------------------------------- helpers


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.numel() == b.numel()
    return (a.reshape(b.shape) - b).abs().max().item()


@functools.cache
def official_shapes(config_name: str) -> dict[str, tuple[int, ...]]:
    """Official key -> shape, built by Meta's code with weight init switched off (fast, even for large)."""
    import sam2  # noqa: F401  (initialises hydra for the sam2 package)
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = compose(config_name=REFERENCE_CONFIGS[config_name])
    OmegaConf.resolve(cfg)
    noop = lambda t, *args, **kwargs: t  # noqa: E731
    with contextlib.ExitStack() as stack:
        for name in (
            "trunc_normal_",
            "kaiming_uniform_",
            "uniform_",
            "normal_",
            "zeros_",
            "ones_",
            "constant_",
        ):
            stack.enter_context(mock.patch.object(torch.nn.init, name, noop))
        stack.enter_context(mock.patch("sam2.modeling.sam2_base.trunc_normal_", noop))
        model = instantiate(cfg.model, _recursive_=True)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _shape_sd(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def _reference_heads(
    ref: torch.nn.Module, image: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, multimask: bool
):
    """Meta's image path: encoder, no-memory embedding, prompt encoder + decoder (``_forward_sam_heads``)."""
    backbone = ref.forward_image(image)
    _, feats, _, sizes = ref._prepare_backbone_features(backbone)
    feats = [
        f.permute(1, 2, 0).reshape(1, -1, *s) for f, s in zip(feats, sizes, strict=True)
    ]  # (B, C, H, W) each
    feats[-1] = feats[-1] + ref.no_mem_embed.view(1, -1, 1, 1)
    points = {"point_coords": coords, "point_labels": labels}
    return ref._forward_sam_heads(
        feats[-1], point_inputs=points, high_res_features=feats[:-1], multimask_output=multimask
    )


@pytest.fixture(scope="module")
def ref_tiny() -> torch.nn.Module:
    return reference_sam2("sam2.1_hiera_tiny", SIZE)


@pytest.fixture(scope="module")
def meta_pt(tmp_path_factory, ref_tiny) -> Path:
    path = tmp_path_factory.mktemp("meta") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": ref_tiny.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def hf_video(tmp_path_factory):
    model = _hf_model(video=True, seed=1)
    return model, _save_pretrained(model, tmp_path_factory.mktemp("hf_video"))


@pytest.fixture(scope="module")
def image_input() -> torch.Tensor:
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


# ----------------------------------------------------------------------------- Meta's files


def test_meta_pt_wrapped_and_bare(tmp_path, meta_pt, ref_tiny):
    sd = ref_tiny.state_dict()
    _assert_same(read_state_dict(meta_pt), sd)
    torch.save(sd, tmp_path / "bare.pth")
    _assert_same(read_state_dict(str(tmp_path / "bare.pth")), sd)
    save_file(sd, tmp_path / "official.safetensors")
    _assert_same(read_state_dict(tmp_path / "official.safetensors"), sd)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "exploit_ran"
    zipped, raw = tmp_path / "evil.pt", tmp_path / "evil_raw.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": _Exploit(marker)}, zipped)
    raw.write_bytes(pickle.dumps(_Exploit(marker), protocol=2))
    for path in (zipped, raw):
        with pytest.raises(ValueError, match="refused to load") as err:
            read_state_dict(path)
        assert str(path) in str(err.value) and "arbitrary code" in str(err.value)
    assert "system" in str(pytest.raises(ValueError, read_state_dict, zipped).value)
    assert not marker.exists()


def test_unreadable_files_name_the_file_and_problem(tmp_path):
    cases = {
        "empty.pt": (b"", "empty"),
        "garbage.pt": (b"not a checkpoint at all" * 20, "not a readable torch checkpoint"),
        "garbage.safetensors": (b"not a checkpoint at all" * 20, "not a readable safetensors"),
        "notes.txt": (b"hello", "unknown checkpoint format"),
    }
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    good = tmp_path / "good.pt"
    torch.save({"model": {"image_encoder.trunk.pos_embed": torch.zeros(1)}}, good)
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:200])
    cases["truncated.pt"] = (b"", "corrupt or truncated")
    torch.save({"model": {"a": torch.zeros(1), "b": 3}}, tmp_path / "mixed.pt")
    cases["mixed.pt"] = (b"", "not named tensors: b")
    torch.save({"foo.weight": torch.zeros(1)}, tmp_path / "other.pt")
    cases["other.pt"] = (b"", "not a SAM 2 checkpoint")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "README.md").write_text("nothing here")
    cases["folder"] = (b"", "no checkpoint in this folder")
    for name, (_, problem) in cases.items():
        with pytest.raises(ValueError, match=problem) as err:
            read_state_dict(tmp_path / name)
        assert name in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- transformers layouts


@pytest.mark.slow
def test_transformers_video_model_maps_to_official(tmp_path, hf_video, ref_tiny, image_input):
    hf, folder = hf_video
    sd = read_state_dict(folder)
    assert {k: tuple(v.shape) for k, v in sd.items()} == {
        k: tuple(v.shape) for k, v in ref_tiny.state_dict().items()
    }
    _assert_same(read_state_dict(folder / "model.safetensors"), sd)  # the bare file reads the same
    assert infer_config_name(sd) == "sam2.1_hiera_tiny" and not is_image_only(sd)
    assert (
        infer_config_name_from_hf_config(json.loads((folder / "config.json").read_text()))
        == "sam2.1_hiera_tiny"
    )

    ref = copy.deepcopy(ref_tiny)
    ref.load_state_dict(sd, strict=True)
    # parameters used outside the image path, and of equal shape: a swap would load silently
    for official, ours in [
        ("no_mem_embed", hf.no_memory_embedding),
        ("no_mem_pos_enc", hf.no_memory_positional_encoding),
        ("maskmem_tpos_enc", hf.memory_temporal_positional_encoding),
        ("no_obj_ptr", hf.no_object_pointer),
        ("no_obj_embed_spatial", hf.occlusion_spatial_embedding_parameter),
    ]:
        assert torch.equal(ref.state_dict()[official], ours), official

    box = torch.tensor([[60.0, 80.0, 300.0, 400.0]])
    point = torch.tensor([[[200.0, 250.0]]])
    with torch.no_grad():
        for coords, labels, multimask, prompt in [
            (box.view(1, 2, 2), torch.tensor([[2, 3]]), False, {"input_boxes": box.view(1, 1, 4)}),
            (
                point,
                torch.tensor([[1]]),
                True,
                {"input_points": point.view(1, 1, 1, 2), "input_labels": torch.tensor([[[1]]])},
            ),
        ]:
            r = _reference_heads(ref, image_input, coords, labels, multimask)
            o = hf._single_frame_forward(pixel_values=image_input, multimask_output=multimask, **prompt)
            assert (r[6] > 0).all()  # object present: masks are not gated to a constant
            diffs = {
                "low_res": _maxdiff(o.pred_masks, r[3]),
                "iou": _maxdiff(o.iou_scores, r[2]),
                "obj_ptr": _maxdiff(o.object_pointer, r[5]),
                "score": _maxdiff(o.object_score_logits, r[6]),
            }
            assert max(diffs.values()) <= TOL, diffs

        gen = torch.Generator().manual_seed(4)
        pix = torch.randn(1, 256, SIZE // 16, SIZE // 16, generator=gen)
        mask = 5 * torch.randn(1, 1, SIZE, SIZE, generator=gen)
        r = ref.memory_encoder(pix, mask, skip_mask_sigmoid=True)
        feats, pos = hf.memory_encoder(pix, mask)
        assert _maxdiff(feats, r["vision_features"]) <= TOL and _maxdiff(pos, r["vision_pos_enc"][0]) <= TOL

        n, n_ptr = (SIZE // 16) ** 2, 4
        curr, curr_pos = torch.randn(2, n, 1, 256, generator=gen)
        memory, memory_pos = torch.randn(2, 2 * n + n_ptr, 1, 64, generator=gen)
        r = ref.memory_attention(
            curr=curr, curr_pos=curr_pos, memory=memory, memory_pos=memory_pos, num_obj_ptr_tokens=n_ptr
        )
        o = hf.memory_attention(
            current_vision_features=curr,
            memory=memory,
            current_vision_position_embeddings=curr_pos,
            memory_posision_embeddings=memory_pos,
            num_object_pointer_tokens=n_ptr,
        )
        assert _maxdiff(o, r) <= TOL

        tpos = torch.randn(3, 256, generator=gen)
        assert (
            _maxdiff(hf.temporal_positional_encoding_projection_layer(tpos), ref.obj_ptr_tpos_proj(tpos))
            <= TOL
        )
        down = torch.randn(1, 1, 64, 64, generator=gen)
        assert _maxdiff(hf.mask_downsample(down), ref.mask_downsample(down)) <= TOL


@pytest.mark.slow
def test_transformers_image_model_maps_to_image_subset(tmp_path, ref_tiny, image_input):
    hf = _hf_model(video=False, seed=2)
    folder = _save_pretrained(hf, tmp_path / "sharded", max_shard_size="10MB")
    assert (folder / "model.safetensors.index.json").is_file()
    sd = read_state_dict(folder)
    reference = ref_tiny.state_dict()
    image_keys = {k for k in reference if is_image_key(k)}
    assert set(sd) == image_keys and is_image_only(sd)
    assert all(sd[k].shape == reference[k].shape for k in sd)
    assert infer_config_name(sd) == "sam2.1_hiera_tiny"
    assert (
        infer_config_name_from_hf_config(json.loads((folder / "config.json").read_text()))
        == "sam2.1_hiera_tiny"
    )

    ref = copy.deepcopy(ref_tiny)
    result = ref.load_state_dict(sd, strict=False)
    assert set(result.missing_keys) == set(reference) - image_keys and not result.unexpected_keys
    box = torch.tensor([[40.0, 100.0, 420.0, 380.0]])
    with torch.no_grad():
        for multimask in (False, True):
            r = _reference_heads(ref, image_input, box.view(1, 2, 2), torch.tensor([[2, 3]]), multimask)
            o = hf(pixel_values=image_input, input_boxes=box.view(1, 1, 4), multimask_output=multimask)
            assert (r[6] > 0).all()
            diffs = {
                "masks": _maxdiff(o.pred_masks, r[0]),
                "iou": _maxdiff(o.iou_scores, r[2]),
                "score": _maxdiff(o.object_score_logits, r[6]),
            }
            assert max(diffs.values()) <= TOL, diffs


def test_key_map_refuses_what_it_cannot_represent(hf_video):
    sd = dict(hf_video[0].state_dict())
    with pytest.raises(
        ValueError, match="no official SAM 2 counterpart: vision_encoder.backbone.extra.weight"
    ):
        hf_to_official({**sd, "vision_encoder.backbone.extra.weight": torch.zeros(1)})
    other = sd["shared_image_embedding.positional_embedding"] + 1
    with pytest.raises(ValueError, match="differ"):
        hf_to_official({**sd, "prompt_encoder.shared_embedding.positional_embedding": other})
    deduplicated = {k: v for k, v in sd.items() if k != "shared_image_embedding.positional_embedding"}
    pe = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
    assert torch.equal(hf_to_official(deduplicated)[pe], sd["shared_image_embedding.positional_embedding"])
    points = hf_to_official(sd)
    for i in range(4):  # the (4, C) table is split in order: negative, positive, box corners
        assert torch.equal(
            points[f"sam_prompt_encoder.point_embeddings.{i}.weight"][0],
            sd["prompt_encoder.point_embed.weight"][i],
        )


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", sorted(REFERENCE_CONFIGS))
def test_infer_config_name_for_every_release(name):
    sd = _shape_sd(official_shapes(name))
    assert infer_config_name(sd) == name
    image_only = {k: v for k, v in sd.items() if is_image_key(k)}
    assert is_image_only(image_only) and not is_image_only(sd)
    # without memory modules 2.0 and 2.1 are the same network: 2.1 is reported
    assert infer_config_name(image_only) == name.replace("sam2_", "sam2.1_")


def test_infer_config_name_from_hf_configs():
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2VideoConfig, Sam2VisionConfig

    assert infer_config_name_from_hf_config(Sam2VideoConfig().to_dict()) == "sam2.1_hiera_tiny"
    h = load_model_config("sam2_hiera_large").hiera
    backbone = Sam2HieraDetConfig(
        hidden_size=h.embed_dim,
        num_attention_heads=h.num_heads,
        blocks_per_stage=list(h.stages),
        embed_dim_per_stage=h.channel_list,
        num_attention_heads_per_stage=[h.num_heads * 2**i for i in range(4)],
        global_attention_blocks=list(h.global_att_blocks),
        window_size_per_stage=list(h.window_spec),
        window_positional_embedding_background_size=list(h.window_pos_embed_bkg_spatial_size),
    )
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=h.channel_list[::-1])
    video = Sam2VideoConfig(
        vision_config=vision,
        enable_occlusion_spatial_embedding=False,
        enable_temporal_pos_encoding_for_object_pointers=False,
    )
    assert infer_config_name_from_hf_config(video.to_dict()) == "sam2_hiera_large"
    image = Sam2Config(vision_config=vision).to_dict()
    assert infer_config_name_from_hf_config(image) == "sam2.1_hiera_large"
    assert (
        infer_config_name_from_hf_config({**image, "_name_or_path": "facebook/sam2-hiera-large"})
        == "sam2_hiera_large"
    )
    with pytest.raises(ValueError, match="'edgetam'"):
        infer_config_name_from_hf_config({"model_type": "edgetam"})


def test_check_state_dict_reports_every_problem():
    expected = official_shapes("sam2.1_hiera_tiny")
    sd = _shape_sd(expected)
    assert check_state_dict(sd, expected, "sam2.1_hiera_tiny") is None

    broken = dict(sd)
    del broken["obj_ptr_proj.layers.0.bias"]
    broken["extra.weight"] = torch.empty(3, device="meta")
    broken["no_obj_ptr"] = torch.empty(1, 128, device="meta")
    with pytest.raises(ValueError) as err:
        check_state_dict(broken, expected, "sam2.1_hiera_tiny")
    msg = str(err.value)
    assert "1 missing keys: obj_ptr_proj.layers.0.bias" in msg and "1 unexpected keys: extra.weight" in msg
    assert "1 shape mismatches: no_obj_ptr (checkpoint (1, 128), model (1, 256))" in msg
    assert "looks like" not in msg

    with pytest.raises(ValueError) as err:  # a small checkpoint given to a tiny model
        check_state_dict(_shape_sd(official_shapes("sam2.1_hiera_small")), expected, "sam2.1_hiera_tiny")
    msg = str(err.value)
    assert "unexpected keys: image_encoder.trunk.blocks.12." in msg and "more)" in msg
    assert "This checkpoint looks like sam2.1_hiera_small" in msg
    with pytest.raises(ValueError, match="looks like sam2_hiera_tiny") as err:  # 2.0 given to 2.1
        check_state_dict(_shape_sd(official_shapes("sam2_hiera_tiny")), expected, "sam2.1_hiera_tiny")
    assert "3 missing keys: no_obj_embed_spatial, obj_ptr_tpos_proj.weight, obj_ptr_tpos_proj.bias" in str(
        err.value
    )

    # image-only: the image subset of a 2.0 model is the 2.1 image model, so no version swap is suggested
    image_expected = {k: v for k, v in official_shapes("sam2_hiera_tiny").items() if is_image_key(k)}
    image_sd = _shape_sd(image_expected)
    check_state_dict(image_sd, image_expected, "sam2_hiera_tiny")
    with pytest.raises(ValueError) as err:
        check_state_dict({**image_sd, "extra": torch.empty(1)}, image_expected, "sam2_hiera_tiny")
    assert "1 unexpected keys: extra" in str(err.value) and "looks like" not in str(err.value)
    small = {k: v for k, v in _shape_sd(official_shapes("sam2_hiera_small")).items() if is_image_key(k)}
    with pytest.raises(ValueError, match="looks like sam2.1_hiera_small"):
        check_state_dict(small, image_expected, "sam2_hiera_tiny")


# ----------------------------------------------------------------------------- Hub ids and the HF cache


def test_hub_ids_resolve_from_the_cache_offline(tmp_path, monkeypatch, meta_pt, hf_video, ref_tiny):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    _, hf_folder = hf_video
    tiny = "facebook/sam2.1-hiera-tiny"
    _cache_file(cache, tiny, hf_folder / "model.safetensors", "model.safetensors")
    _cache_file(cache, tiny, hf_folder / "config.json", "config.json")
    # only the transformers files cached: the snapshot folder is returned
    folder = resolve_checkpoint(tiny, cache_dir=cache)
    assert folder.is_dir() and (folder / "config.json").is_file()
    # with Meta's .pt cached too, it is preferred
    pt = _cache_file(cache, tiny, meta_pt, "sam2.1_hiera_tiny.pt")
    assert resolve_checkpoint(tiny, cache_dir=cache) == pt
    _assert_same(read_state_dict(resolve_checkpoint(tiny, cache_dir=cache)), ref_tiny.state_dict())

    explicit = resolve_checkpoint(tiny, cache_dir=cache, filename="model.safetensors")
    assert (
        explicit.name == "model.safetensors"
        and read_state_dict(explicit).keys() == ref_tiny.state_dict().keys()
    )

    only_pt = "someone/sam2-single-pt"  # unknown repo holding one .pt
    _cache_file(cache, only_pt, meta_pt, "weights.pt")
    assert resolve_checkpoint(only_pt, cache_dir=cache).name == "weights.pt"

    unknown = "someone/my-finetuned-sam2"  # no config lists it: any model.safetensors will do
    _cache_file(cache, unknown, hf_folder / "model.safetensors", "model.safetensors")
    sd = read_state_dict(resolve_checkpoint(unknown, cache_dir=cache, local_files_only=True))
    assert infer_config_name(sd) == "sam2.1_hiera_tiny"


def test_hub_id_not_cached_offline_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for kwargs in ({}, {"local_files_only": True}):
        with pytest.raises(CheckpointNotCachedError) as err:
            resolve_checkpoint("facebook/sam2.1-hiera-large", cache_dir=tmp_path, **kwargs)
        msg = str(err.value)
        assert (
            "'facebook/sam2.1-hiera-large' is not in the Hugging Face cache" in msg and str(tmp_path) in msg
        )
        assert "hf download facebook/sam2.1-hiera-large" in msg and "huggingface-cli download" in msg
        assert "local checkpoint" in msg and "downloads are disabled" in msg


def test_local_paths(tmp_path, meta_pt):
    assert (
        resolve_checkpoint(str(meta_pt)) == meta_pt and resolve_checkpoint(meta_pt.parent) == meta_pt.parent
    )
    for missing in (
        "./checkpoints/sam2.pt",
        str(tmp_path / "nope"),
        "weights/sam2.1_hiera_tiny.safetensors",
        "a/b/c",
    ):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            resolve_checkpoint(missing)


def test_config_name_for_hub_id():
    seen = 0
    for name in list_model_configs():
        for hub_id in load_model_config(name).hf_ids:
            assert config_name_for_hub_id(hub_id) == name
            assert config_name_for_hub_id(hub_id.upper()) == name
            seen += 1
    assert seen >= 8
    assert config_name_for_hub_id("facebook/sam2.1-hiera-tiny") == "sam2.1_hiera_tiny"
    assert config_name_for_hub_id("someone/else") is None
