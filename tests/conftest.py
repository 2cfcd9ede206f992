"""Shared test setup. Torch runs single-threaded, in subprocesses too: on a 2-core CI box that is faster."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
if "GROUNDED_SAM_CACHE" not in os.environ:  # weight hashes (grounded_sam.pipeline.weights) stay out of ~/.cache
    os.environ["GROUNDED_SAM_CACHE"] = _cache = tempfile.mkdtemp(prefix="gs-test-cache-")
    atexit.register(shutil.rmtree, _cache, True)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the processes tests start (CLI runs, servers, notebook kernels) run torch single-threaded too: with both
# cores busy, a second OpenMP thread only makes every parallel region wait for a descheduled thread
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from huggingface_hub import constants  # noqa: E402

import hub_world as _hub_world  # noqa: E402

try:
    import torch  # noqa: E402

    torch.set_num_threads(1)
except ImportError:  # packaging/CLI tests run without torch too
    torch = None


# Seconds a test file takes on a 2-core CPU (a full run of 2026-12-06; the first four ran while the machine was
# loaded: estimates from their CPU seconds). With pytest-xdist (``-n 2``, ``--dist loadgroup``: see
# pytest_xdist_make_scheduler) each file runs on one worker, so its module-scoped set-up is built once, and the
# longest go out first, so that both workers finish together; a file not listed (a few seconds) comes after
# those listed. The browser and Ray files ("heavy", one group: one worker, ~250 s, mostly waiting) go out when
# the other worker has ~250 s of short files left (those under "heavy"'s number), so that both finish
# together; the files that start Ray themselves (test_build_spec) go out before them.
EXPECTED_SECONDS = {
    "test_cli": 115, "test_onnx_video": 110, "test_evaluation_pipeline": 105, "test_onnx_export": 65,
    "test_parity_video": 64, "test_first_run": 55, "test_video_predictor": 55, "test_parity_amg": 54,
    "test_compat": 53, "test_video_memory": 53, "test_large_images": 51, "test_tiling": 46, "test_notebooks": 45,
    "test_parity_image_predictor": 42, "test_label_studio_real": 40, "test_window_masks": 38,
    "test_sam3_tracking": 35, "test_parity_sam1": 29, "test_inference_mode": 28, "test_build": 25,
    "test_parity_image_encoder": 25, "test_parity_memory": 24, "test_parity_heads": 24, "test_label_integrity": 22,
    "test_video_labeling": 22, "test_build_spec": 20, "test_serve_video": 20, "test_cli_inputs": 17,
    "test_onnx_precision": 17, "heavy": 16, "test_amg": 15, "test_serve_label_studio": 15,
    "test_memory_policies_batched": 15, "test_onnx_video_stream": 15, "test_pipeline_sam3": 15,
    "test_onnx_pipeline": 15, "test_checkpoint": 14, "test_download": 14, "test_first_run_app": 13,
    "test_compact_masks": 12, "test_video_io": 10,
}


HEAVY = ("test_app_browser", "test_ray_backend", "test_ray_cluster")  # their xdist_group("heavy") markers


def _group(nodeid: str) -> str:
    """A test's xdist group: its file's name, or "heavy"."""
    stem = Path(nodeid.split("::")[0]).stem
    return "heavy" if stem in HEAVY else stem


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    """Every test without an ``xdist_group`` joins its file's group; the groups are ordered longest first."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    group = {id(item): item.get_closest_marker("xdist_group").args[0] for item in items}
    for item in items:  # the scheduler below groups by nodeid: markers must say the same
        if group[id(item)] != _group(item.nodeid):
            raise pytest.UsageError(f"{item.nodeid}: xdist_group {group[id(item)]!r}; tests/conftest.py groups it "
                                    f"as {_group(item.nodeid)!r} (HEAVY lists the heavy files)")
    items.sort(key=lambda item: -EXPECTED_SECONDS.get(group[id(item)], 0))  # stable: file order kept otherwise


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown without it (-p no:xdist)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` by :func:`_group`. pytest-xdist 3.8 groups by an ``@group`` suffix it writes to
    ``item._nodeid``, which pytest 9 no longer reads (``Node.nodeid`` comes from ``Node._id``): without
    this, every test would be a work unit of its own, and each file's module set-up built on both workers."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    return FileGroups(config, log)


@pytest.fixture(autouse=True)
def _seed() -> None:
    if torch is not None:
        torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_sam3_dir(tmp_path_factory) -> str:
    """A tiny random SAM 3 image model + processor in a ``save_pretrained`` folder (seed 0)."""
    from tiny_detectors import tiny_sam3

    torch.manual_seed(0)
    model, proc = tiny_sam3()
    folder = tmp_path_factory.mktemp("sam3")
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return str(folder)


class TinyModels(NamedTuple):
    """The suite's shared tiny checkpoints (random weights, seed 0), in the real formats; read-only."""

    owl: Path  # OWLv2 + processor, a ``save_pretrained`` folder
    sam: Path  # SAM 2.1 Hiera-T for 256 px (tiny.SAM_IMAGE_SIZE), Meta's ``{"model": state_dict}`` .pt


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    """Built once per test run: pytest-xdist workers share one copy (made under a file lock in the
    run's common temporary folder). Tests that change model files copy them first."""
    from filelock import FileLock

    from tiny import save_tiny_owlv2, save_tiny_sam

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the workers of this run
    root = base / "tiny-models"
    with FileLock(str(base / "tiny-models.lock")):
        if not (root / "complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            (root / "owl").mkdir(parents=True)
            save_tiny_owlv2(root / "owl")
            save_tiny_sam(root)
            (root / "complete").touch()
    return TinyModels(root / "owl", root / "sam2.1_hiera_tiny.pt")


def _shared(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` once per test run, under a file lock shared by the pytest-xdist workers."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the workers of this run
    root = base / name
    with FileLock(str(base / f"{name}.lock")):
        if not (root / "complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            build(root)
            (root / "complete").touch()
    return root


@pytest.fixture(scope="session")
def tiny_onnx(tiny_models, tmp_path_factory) -> Path:
    """``tiny_models.sam`` exported at 256 px (image parts, fp32) by ``grounded-sam export --overwrite`` into
    an existing folder, once per test run (~25 s); read-only. ``tiny.export_log`` has what the CLI printed."""
    from tiny import export_tiny_onnx

    return _shared(tmp_path_factory, "tiny-onnx", lambda root: export_tiny_onnx(tiny_models.sam, root / "sam")) / "sam"


class TinyOnnxVideo(NamedTuple):
    checkpoint: Path  # a random SAM 2.1 Hiera-T for 128 px (tiny.VIDEO_ONNX_SIZE), Meta's .pt format
    folder: Path  # its image + video parts, fp32; read-only


@pytest.fixture(scope="session")
def tiny_onnx_video(tmp_path_factory) -> TinyOnnxVideo:
    """Exported once per test run (~60 s); the model's object scores spread around 0, so presence changes."""
    from tiny import export_tiny_onnx_video

    root = _shared(tmp_path_factory, "tiny-onnx-video", export_tiny_onnx_video)
    return TinyOnnxVideo(root / "sam.pt", root / "sam")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def no_connection(monkeypatch) -> str:
    """Downloads allowed, but the hub is a port where nothing listens (a new one each time: no answer reused)."""
    endpoint = f"http://127.0.0.1:{_hub_world.closed_port()}"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    return endpoint
