from __future__ import annotations

import pytest

from segmenter.config import list_model_configs, load_model_config

SAM2_NAMES = [f"sam2{v}_hiera_{s}" for v in ("", ".1") for s in ("tiny", "small", "base_plus", "large")]


def test_all_sam2_configs_load() -> None:
    assert set(SAM2_NAMES) <= set(list_model_configs())
    for name in SAM2_NAMES:
        cfg = load_model_config(name)
        assert cfg.name == name and cfg.image_size == 1024 and cfg.embed_size == 64
        is21 = name.startswith("sam2.1")
        assert cfg.version == ("2.1" if is21 else "2.0")
        m = cfg.memory
        assert m.no_obj_embed_spatial == m.add_tpos_enc_to_obj_ptrs == m.proj_tpos_enc_in_obj_ptrs == is21
        assert list(reversed(cfg.hiera.channel_list)) == list(cfg.neck.backbone_channel_list)
        assert cfg.checkpoint_filename == f"{name}.pt"
        assert cfg.hf_ids and all(i.startswith("facebook/sam2") for i in cfg.hf_ids)


def test_image_size_is_derived() -> None:
    cfg = load_model_config("sam2.1_hiera_tiny", image_size=512)
    assert cfg.image_size == 512 and cfg.embed_size == 32 and cfg.high_res_sizes == [128, 64]


@pytest.mark.parametrize("size", [500, 0, -32, 48.0])
def test_bad_image_size(size) -> None:
    with pytest.raises(ValueError, match="image_size must be a positive multiple of 32"):
        load_model_config("sam2.1_hiera_tiny", image_size=size)


def test_unknown_config_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown model config 'sam3_huge'.*sam2.1_hiera_tiny"):
        load_model_config("sam3_huge")


def test_unknown_yaml_key(tmp_path) -> None:
    p = tmp_path / "mine.yaml"
    p.write_text("version: '2.1'\nhiera: {embed_dim: 96, stagez: [1]}\n")
    with pytest.raises(ValueError, match=r"mine.hiera: unknown keys \['stagez'\]"):
        load_model_config(p)
