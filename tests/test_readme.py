"""README.md stays true: its two commands are the ones CI runs, its Python snippets execute.

The snippets name real hub ids (LLMDet-T, SAM 2.1-T, SAM 3). The test serves them from a Hugging Face
cache it builds with tiny random models in the real formats, offline.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_top_commands_are_what_ci_runs() -> None:
    install, test = (b.strip() for b in _blocks("bash")[:2])
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert install.startswith("pip install . && grounded-sam ")
    assert "\npip install .\n" in ci  # the install part of command (1)
    assert f"grounded-sam {install.split('grounded-sam ')[1].split()[0]} --help" in ci
    assert test in ci and "pytest" in test


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """facebook/sam2.1-hiera-tiny, iSEE-Laboratory/llmdet_tiny and facebook/sam3, tiny and random, in an offline cache."""
    import huggingface_hub.constants as hc
    from checkpoint_fixtures import cache_file as _cache_file
    from tiny_detectors import tiny_grounding_dino

    from segmenter import build_sam

    cache = tmp_path / "hub"
    src = tmp_path / "src"
    src.mkdir()
    torch.manual_seed(0)
    sam = build_sam("sam2.1_hiera_tiny", device="cpu")
    torch.save({"model": sam.state_dict()}, src / "sam2.1_hiera_tiny.pt")
    _cache_file(cache, "facebook/sam2.1-hiera-tiny", src / "sam2.1_hiera_tiny.pt", "sam2.1_hiera_tiny.pt")
    model, proc = tiny_grounding_dino(mm=True)
    det_dir = src / "llmdet"
    model.save_pretrained(det_dir)
    proc.save_pretrained(det_dir)
    for f in det_dir.iterdir():
        _cache_file(cache, "iSEE-Laboratory/llmdet_tiny", f, f.name, sha="b" * 40)
    from tiny_detectors import tiny_sam3_video

    model, proc = tiny_sam3_video(score_threshold_detection=0.5, new_det_thresh=0.5)  # facebook/sam3's layout
    sam3_dir = src / "sam3"
    model.save_pretrained(sam3_dir)
    proc.save_pretrained(sam3_dir)
    for f in sam3_dir.iterdir():
        _cache_file(cache, "facebook/sam3", f, f.name, sha="c" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    return cache


def test_python_snippets_run(hub_cache, tmp_path, monkeypatch) -> None:
    from grounded_sam.assets.samples import write_synthetic_video

    work = tmp_path / "work"
    (work / "images").mkdir(parents=True)
    monkeypatch.chdir(work)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save("photo.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save("images/a.jpg")
    write_synthetic_video(work / "clip.mp4", num_frames=3, size=(64, 80))
    scope: dict = {"__name__": "__readme__"}
    for block in _blocks("python"):
        if "my_gt.json" in block:  # the user's ground truth in the label-quality snippet: here, the dataset's file
            (work / "my_gt.json").write_bytes((work / "dataset" / "annotations.json").read_bytes())
        exec(compile(block, "README.md", "exec"), scope)  # one scope: later blocks use earlier names
    assert (work / "dataset" / "annotations.json").is_file()
    assert (work / "report" / "metrics.json").is_file() and scope["report"].images == 1
    assert (work / "sam3_dataset" / "annotations.json").is_file() and not scope["sam3"].label(
        "images/", output_folder="sam3_dataset/", image_exemplars={"a.jpg": {"exemplars": {"dog": [[5, 8, 30, 35]]}}},
        progress=False).failed  # resumed, nothing failed
