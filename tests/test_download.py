"""``grounded-sam download`` against a stand-in hub on 127.0.0.1 (tests/hub_server.py), then
``models`` sees the cache and the README's first command (``segment --sample``) runs offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hub_server import LocalHub
from gsam_runtime.rle import decode_rle
from tiny import SAM_IMAGE_SIZE
from tiny_detectors import tiny_grounding_dino

ROOT = Path(__file__).resolve().parents[1]
DETECTOR, SEGMENTER = "iSEE-Laboratory/llmdet_tiny", "facebook/sam2.1-hiera-tiny"  # the default preset's


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny_models):
    """The default preset's two repos, tiny and random, plus files a download must leave out."""
    root = tmp_path_factory.mktemp("repos")
    torch.manual_seed(0)
    model, proc = tiny_grounding_dino(mm=True)  # LLMDet's layout
    model.save_pretrained(root / "llmdet")
    proc.save_pretrained(root / "llmdet")
    (root / "llmdet" / "flax_model.msgpack").write_bytes(b"not for torch")
    (root / "llmdet" / "pytorch_model.bin").write_bytes(b"a second copy of the weights")
    (root / "sam").mkdir()
    shutil.copy(tiny_models.sam, root / "sam" / "sam2.1_hiera_tiny.pt")  # Meta's format
    (root / "sam" / "model.safetensors").write_bytes(b"transformers' copy, not needed")
    with LocalHub({DETECTOR: root / "llmdet", SEGMENTER: root / "sam"}) as server:
        yield server


def _cli(*args: str, hf_home: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return subprocess.run([sys.executable, "-m", "grounded_sam.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**base, "HF_HOME": str(hf_home), **env}, timeout=600)


@pytest.mark.slow
def test_download_then_run_offline(hub, tmp_path) -> None:
    hf = tmp_path / "hf"
    r = _cli("download", "--preset", "default", hf_home=hf, HF_ENDPOINT=hub.url)
    assert r.returncode == 0, r.stderr
    assert f"{DETECTOR} (Apache-2.0)" in r.stdout and f"{SEGMENTER} (Apache-2.0)" in r.stdout
    assert "Fetching" in r.stderr  # huggingface_hub's progress bars
    snapshots = {repo: next((hf / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots").iterdir())
                 for repo in (DETECTOR, SEGMENTER)}
    got = {repo: sorted(p.name for p in folder.iterdir()) for repo, folder in snapshots.items()}
    assert got[SEGMENTER] == ["sam2.1_hiera_tiny.pt"]  # only the checkpoint the loader reads
    assert "model.safetensors" in got[DETECTOR] and "config.json" in got[DETECTOR]
    assert "flax_model.msgpack" not in got[DETECTOR] and "pytorch_model.bin" not in got[DETECTOR]

    r = _cli("models", hf_home=hf, HF_HUB_OFFLINE="1")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[1]: line for line in r.stdout.splitlines() if line.startswith("*")}
    assert DETECTOR in rows["grounding-dino"] and " yes " in rows["grounding-dino"]
    assert SEGMENTER in rows["sam2.1_hiera_tiny"] and " yes " in rows["sam2.1_hiera_tiny"]
    assert " no " in next(line for line in r.stdout.splitlines() if "owlv2" in line)

    # the README's first command, offline, on what was downloaded (tiny models: small input, no threshold)
    out = tmp_path / "out"
    r = _cli("segment", "--sample", "--out", str(out), "--image-size", str(SAM_IMAGE_SIZE), "--device", "cpu",
             "--box-threshold", "0", hf_home=hf, HF_HUB_OFFLINE="1")
    assert r.returncode == 0, r.stderr
    assert "1/1 images segmented" in r.stdout
    record = json.loads((out / "chelsea.json").read_text())
    assert (record["width"], record["height"]) == (451, 300) and record["instances"]
    for inst in record["instances"]:  # bbox: the mask's tight box; xyxy: the detector's, not derived from it
        mask = decode_rle(inst["segmentation"])
        if mask.any():
            rows_, cols = mask.any(1).nonzero()[0], mask.any(0).nonzero()[0]
            assert inst["bbox"] == [cols[0], rows_[0], cols[-1] + 1 - cols[0], rows_[-1] + 1 - rows_[0]]
    assert any(inst["xyxy"][:2] != inst["bbox"][:2] for inst in record["instances"])


def test_download_without_connection_says_what_to_run(tmp_path) -> None:
    r = _cli("download", "--preset", "accurate", hf_home=tmp_path / "hf", HF_HUB_OFFLINE="1")
    assert r.returncode == 2
    assert "hf download google/owlv2-base-patch16-ensemble" in r.stderr
    assert "hf download facebook/sam2.1-hiera-large sam2.1_hiera_large.pt" in r.stderr
