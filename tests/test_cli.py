"""The grounded-sam command, run in subprocesses with tiny random checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grounded_sam.pipeline.prompts import parse_prompt
from tiny import SAM_IMAGE_SIZE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_models):
    return tiny_models


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grounded_sam.cli", *args], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout=600,
    )


def _model_args(models) -> list[str]:
    owl, sam = models
    return ["--detector", str(owl), "--segmenter", "sam2.1_hiera_tiny", "--checkpoint", str(sam),
            "--image-size", str(SAM_IMAGE_SIZE), "--device", "cpu", "--box-threshold", "0.0"]


def test_parse_prompt() -> None:
    assert parse_prompt("a dog:dog, puppy:dog, person") == {"a dog": "dog", "puppy": "dog", "person": "person"}
    assert parse_prompt(" cat ,, ") == {"cat": "cat"}
    with pytest.raises(ValueError, match="no captions"):
        parse_prompt(" , ")
    with pytest.raises(ValueError, match="empty caption"):
        parse_prompt(":dog")


@pytest.mark.slow
def test_segment_writes_outputs_and_reports_bad_inputs(models, tmp_path) -> None:
    rng = np.random.default_rng(0)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, (h, w) in enumerate([(60, 80), (50, 40)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(imgs / f"im{i}.png")
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    r = _run("segment", str(imgs), "--prompt", "a cat:cat, a dog:dog", *_model_args(models), "--out", str(out))
    assert r.returncode == 1, r.stderr
    assert "broken.jpg" in r.stderr and "1 input(s) failed" in r.stderr
    for i, (h, w) in enumerate([(60, 80), (50, 40)]):
        rec = json.loads((out / f"im{i}.json").read_text())
        assert (rec["width"], rec["height"]) == (w, h)
        assert Image.open(out / f"im{i}_annotated.jpg").size == (w, h)
    assert not (out / "broken.json").exists()


@pytest.mark.slow
def test_label_coco_and_resume(models, tmp_path) -> None:
    rng = np.random.default_rng(1)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(imgs / f"{i}.jpg")
    out = tmp_path / "ds"
    args = ["label", str(imgs), "--out", str(out), "--format", "coco", "--prompt", "a cat:cat", *_model_args(models)]
    r = _run(*args)
    assert r.returncode == 0, r.stderr
    coco = out / "annotations.json"
    first = coco.read_bytes()
    data = json.loads(first)
    assert len(data["images"]) == 3 and data["categories"][0]["name"] == "cat"
    r2 = _run(*args)
    assert r2.returncode == 0, r2.stderr
    assert coco.read_bytes() == first


def test_offline_without_weights_says_how_to_pass_files(tmp_path) -> None:
    r = _run("segment", "--sample", "--prompt", "cat", "--detector", "owlv2", "--device", "cpu",
             env={"HF_HUB_CACHE": str(tmp_path / "empty_cache"), "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 2
    assert "--checkpoint" in r.stderr and "cache" in r.stderr


def test_missing_prompt_is_a_usage_error(tmp_path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    r = _run("segment", str(tmp_path))
    assert r.returncode != 0 and "--prompt" in (r.stderr + r.stdout)


@pytest.mark.slow
def test_track_and_auto_commands(models, tmp_path) -> None:
    from grounded_sam.assets.samples import write_synthetic_video

    video = tmp_path / "clip.mp4"
    write_synthetic_video(video, num_frames=4, size=(48, 64))
    out = tmp_path / "track"
    r = _run("track", str(video), "--prompt", "a cat:cat", *_model_args(models), "--redetect-every", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "4 frames" in r.stdout
    assert (out / "tracked.mp4").stat().st_size > 0 and len((out / "frames.jsonl").read_text().splitlines()) == 4
    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(img)
    owl, sam = models
    r = _run("auto", str(img), "--segmenter", "sam2.1_hiera_tiny", "--checkpoint", str(sam), "--image-size",
             str(SAM_IMAGE_SIZE), "--device", "cpu", "--points-per-side", "4", "--pred-iou-thresh", "0",
             "--stability-score-thresh", "0", "--out", str(tmp_path / "auto"))
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "auto" / "a_auto.json").read_text())
    assert (rec["width"], rec["height"]) == (56, 40)
    r = _run("track", str(tmp_path / "missing.mp4"), "--prompt", "cat", *_model_args(models), "--out", str(tmp_path / "t2"))
    assert r.returncode == 2 and "file not found" in r.stderr and "missing.mp4" in r.stderr
    assert not (tmp_path / "t2").exists()  # checked before any output folder is made


@pytest.mark.slow
def test_label_rerun_with_other_settings_is_refused(models, tmp_path) -> None:
    """The issue's scenario: a rerun with --image-size / --box-threshold changed exits non-zero,
    names each setting with its old and new value and changes no file; --overwrite relabels."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(imgs / f"im{i}.png")
    out = tmp_path / "ds"
    first = _run("label", str(imgs), "--out", str(out), "--prompt", "a cat:cat", *_model_args(models))
    assert first.returncode == 0, first.stderr
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    owl, sam = models
    changed = ["--detector", str(owl), "--segmenter", "sam2.1_hiera_tiny", "--checkpoint", str(sam), "--device", "cpu",
               "--image-size", "128", "--box-threshold", "0.5"]
    r = _run("label", str(imgs), "--out", str(out), "--prompt", "a cat:cat", *changed)
    assert r.returncode == 2, r.stderr
    assert "detector.box_threshold: 0.0 -> 0.5" in r.stderr and f"segmenter.image_size: {SAM_IMAGE_SIZE} -> 128" in r.stderr
    assert "--overwrite" in r.stderr and "0 labeled" not in r.stdout
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == before
    r = _run("label", str(imgs), "--out", str(out), "--prompt", "a cat:cat", "--discard-reviewed", *changed)
    assert r.returncode == 2 and "--overwrite" in r.stderr
    r = _run("label", str(imgs), "--out", str(out), "--prompt", "a cat:cat", "--overwrite", *changed)
    assert r.returncode == 0, r.stderr
    assert "2 labeled, 0 already done" in r.stdout


@pytest.mark.slow
def test_max_pixels_refuses_a_large_file_and_raises_the_limit(models, tmp_path) -> None:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(imgs / "big.png")
    args = ["segment", str(imgs / "big.png"), "--prompt", "a cat:cat", *_model_args(models)]
    r = _run(*args, "--out", str(tmp_path / "a"), "--max-pixels", "1000")
    assert r.returncode == 1 and "big.png" in r.stderr, r.stderr
    assert "4,800 pixels is over the limit of 1,000" in r.stderr and "--max-pixels 4800" in r.stderr
    r = _run(*args, "--out", str(tmp_path / "b"), "--max-pixels", "4800")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "b" / "big.json").read_text())["width"] == 80
    r = _run(*args, "--out", str(tmp_path / "c"), "--max-pixels", "-1")
    assert r.returncode == 2 and "negative" in r.stderr
