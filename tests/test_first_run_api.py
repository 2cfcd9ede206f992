"""A newcomer's first run in Python: ``GroundedSAM(...)``, ``load_detector`` and ``build_sam`` /
``from_pretrained`` without cached weights fail at once (no connection retries) with one short
message naming every model, whether it is cached, and the commands that fetch it; cached models
load without a connection (no retries) and, with ``HF_HUB_OFFLINE=1``, without any request."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
from huggingface_hub import constants
from tiny import SAM_IMAGE_SIZE

from detectors import load_detector
from grounded_sam.api import GroundedSAM
from grounded_sam.pipeline.hub import ModelsUnavailableError, pipeline_models
from gsam_runtime import hub
from gsam_runtime.hub import HubModel, MissingModelsError
from segmenter import build_sam, from_pretrained
from segmenter.checkpoints.hub import CheckpointNotCachedError

ROOT = Path(__file__).resolve().parents[1]
FAST_S = 3.0  # the bound for a failure without models (it took 25-29 s of retries)
ONTOLOGY = {"a cat": "cat"}
DETECTOR, SEGMENTER = "iSEE-Laboratory/llmdet_tiny", "facebook/sam2.1-hiera-tiny"  # GroundedSAM(ontology)'s
OWL = "google/owlv2-base-patch16-ensemble"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _cache_repo(cache: Path, repo_id: str, files: Path | list[Path]) -> None:
    """Put ``files`` (or a folder's files) into ``cache`` as the hub's snapshot of ``repo_id``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in sorted(files.iterdir()) if isinstance(files, Path) else files:
        shutil.copy(f, snapshot / f.name)


def _fails_fast(call, *hub_ids: str) -> MissingModelsError:
    start = time.perf_counter()
    with pytest.raises(MissingModelsError) as err:
        call()
    seconds = time.perf_counter() - start
    assert seconds < FAST_S, seconds
    message = str(err.value)
    for hub_id in hub_ids:
        assert hub_id in message
    assert message.count("NOT cached") == len(hub_ids)
    assert [m.source for m in err.value.models] == list(hub_ids)
    return err.value


def _our_frames(e: BaseException) -> list[str]:
    """The product's frames in ``e``'s traceback (the caller's are the test's)."""
    return [f.name for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith(str(ROOT / "tests"))]


def _short(e: BaseException, frames: int = 1) -> None:
    """What a notebook shows: the caller's line, the line that raised, the message (no chained errors)."""
    assert e.__suppress_context__ and e.__cause__ is None
    assert len(_our_frames(e)) <= frames, _our_frames(e)
    assert len(str(e).splitlines()) <= 10


def test_grounded_sam_offline_names_every_model_at_once(empty_cache) -> None:
    e = _fails_fast(lambda: GroundedSAM(ONTOLOGY, device="cpu"), DETECTOR, SEGMENTER)  # HF_HUB_OFFLINE=1 (conftest)
    message = str(e)
    assert message.startswith("GroundedSAM needs models that are not all on this machine, and downloads are "
                              "disabled (HF_HUB_OFFLINE=1):")
    assert f"hf download {DETECTOR}\n" in message and f"hf download {SEGMENTER} sam2.1_hiera_tiny.pt\n" in message
    assert "(or: grounded-sam download)" in message  # the default preset's models exactly
    assert str(empty_cache) in message and "GroundedSAM(..., detector='path/to/save_pretrained_folder'" in message
    assert isinstance(e, ModelsUnavailableError)  # the CLI's name still catches it
    _short(e)
    e = _fails_fast(lambda: GroundedSAM(ONTOLOGY, detector="sam3", device="cpu"), "facebook/sam3")  # no segmenter
    assert "(or: grounded-sam download --preset sam3)" in str(e) and "gated" in str(e) and "checkpoint=" not in str(e)


def test_grounded_sam_without_connection_fails_fast(empty_cache, no_connection) -> None:
    e = _fails_fast(lambda: GroundedSAM(ONTOLOGY, detector="owlv2", segmenter="sam_vit_b", device="cpu"),
                    OWL, "facebook/sam-vit-base")
    assert f"there is no connection to the hub ({no_connection})" in str(e)
    assert "hf download facebook/sam-vit-base sam_vit_b_01ec64.pth" in str(e)
    assert "grounded-sam download" not in str(e)  # no preset needs exactly these: the hf commands say it


def test_each_loader_fails_fast_and_names_its_model(empty_cache, no_connection) -> None:
    e = _fails_fast(lambda: load_detector("owlv2", device="cpu"), OWL)
    assert f"hf download {OWL}" in str(e) and "load_detector('owlv2', model_id=" in str(e)
    _short(e)
    e = _fails_fast(lambda: build_sam("sam2.1_hiera_tiny", checkpoint=SEGMENTER, device="cpu"), SEGMENTER)
    assert f"hf download {SEGMENTER} sam2.1_hiera_tiny.pt" in str(e)
    _short(e, frames=2)  # build_sam, read_checkpoint
    hf_layout = "facebook/sam2-hiera-small-hf"
    e = _fails_fast(lambda: from_pretrained(hf_layout, device="cpu"), hf_layout)
    assert "hf download facebook/sam2-hiera-small-hf\n" in str(e)


def test_the_old_error_names_still_catch_it(empty_cache) -> None:
    with pytest.raises(CheckpointNotCachedError):  # a FileNotFoundError, as before, and a MissingModelsError
        build_sam("sam2.1_hiera_tiny", checkpoint=SEGMENTER, device="cpu")
    assert issubclass(CheckpointNotCachedError, FileNotFoundError) and ModelsUnavailableError is MissingModelsError


@pytest.fixture
def cached(empty_cache, tiny_models) -> Path:
    """The tiny OWLv2 and SAM 2.1 as the hub's ``google/owlv2-...`` and ``facebook/sam2.1-hiera-tiny`` in the cache."""
    _cache_repo(empty_cache, OWL, tiny_models.owl)
    _cache_repo(empty_cache, SEGMENTER, [tiny_models.sam])
    return empty_cache


def _tiny_pipeline() -> GroundedSAM:
    return GroundedSAM(ONTOLOGY, detector="owlv2", device="cpu", image_size=SAM_IMAGE_SIZE)


def test_cached_models_load_without_connection_and_without_retries(cached, no_connection, caplog) -> None:
    asked = []
    probe = hub.offline_reason
    hub_offline = constants.HF_HUB_OFFLINE
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hub, "offline_reason", lambda *a: asked.append(1) or probe(*a))
        start = time.perf_counter()
        with caplog.at_level(logging.WARNING):
            gs = _tiny_pipeline()
        seconds = time.perf_counter() - start
    assert gs.predictor is not None and gs.detector_name == "owlv2"
    assert "Retrying" not in caplog.text
    assert seconds < 20, seconds  # each file took 23 s of retries before (1 + 2 + 4 + 8 + 8 s; ~330 s in all)
    assert asked == [1]  # one probe for the three loaders: they load in offline mode, and ask no more
    assert constants.HF_HUB_OFFLINE is hub_offline  # offline only while loading


def test_cached_models_with_hf_hub_offline_make_no_request(cached, monkeypatch) -> None:
    def no_probe(*args):
        raise AssertionError("the hub was asked although HF_HUB_OFFLINE=1 and the models are cached")

    monkeypatch.setattr(hub, "offline_reason", no_probe)
    start = time.perf_counter()
    assert pipeline_models("GroundedSAM", "owlv2", None, None, None) is False
    assert time.perf_counter() - start < 1.0  # the check reads the cache (about 5 ms)
    assert _tiny_pipeline().predictor is not None


def test_local_files_need_no_check(tiny_models, monkeypatch) -> None:
    monkeypatch.setattr(hub, "offline_reason", lambda *a: pytest.fail("a local model asked the hub"))
    gs = GroundedSAM(ONTOLOGY, detector=str(tiny_models.owl), checkpoint=str(tiny_models.sam), device="cpu",
                     image_size=SAM_IMAGE_SIZE)
    assert gs.predictor is not None
    assert hub.require_models([HubModel("segmenter", "x", str(tiny_models.sam), local=True)]) is False


def test_detector_objects_and_masks_detectors_need_no_segmenter() -> None:
    from detectors import DetectorSpec
    from grounded_sam.pipeline.hub import models_needed

    assert [n.source for n in models_needed(DetectorSpec("sam3", "facebook/sam3"))] == []  # segments by itself
    assert [n.source for n in models_needed(DetectorSpec("owlv2", OWL))] == [SEGMENTER]


def test_the_shared_check_imports_neither_torch_nor_pil() -> None:
    code = "import sys, gsam_runtime.hub; print(sorted(m for m in ('torch', 'PIL', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
