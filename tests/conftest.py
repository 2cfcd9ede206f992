"""Shared test setup. Torch runs single-threaded: on a 2-core CI box that is faster."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
if "GROUNDED_SAM_CACHE" not in os.environ:  # weight hashes (grounded_sam.pipeline.weights) stay out of ~/.cache
    os.environ["GROUNDED_SAM_CACHE"] = _cache = tempfile.mkdtemp(prefix="gs-test-cache-")
    atexit.register(shutil.rmtree, _cache, True)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

try:
    import torch  # noqa: E402

    torch.set_num_threads(1)
except ImportError:  # packaging/CLI tests run without torch too
    torch = None


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
