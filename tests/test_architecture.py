"""The layering of docs/architecture.md, enforced: allowed imports, and a segmenter that stands alone.

``runtime`` <- ``ontologies`` <- ``detectors`` <- ``grounded_sam`` -> ``segmenter`` -> ``runtime``.
Every import counts: module level, inside functions, under ``TYPE_CHECKING``, and module names
handed to ``importlib.import_module`` as string constants.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "ontologies", "detectors", "segmenter", "grounded_sam")
ALLOWED = {  # package -> the packages of ours it may import (besides itself)
    "runtime": set(),
    "ontologies": {"runtime"},
    "detectors": {"runtime", "ontologies"},
    "segmenter": {"runtime"},
    "grounded_sam": {"runtime", "ontologies", "detectors", "segmenter"},
}
MAX_LINES = 500


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in ``path`` that names one of ours."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names = [path.relative_to(ROOT).parts[0]]  # relative imports stay in their package
        elif isinstance(node, ast.Call):  # importlib.import_module("pkg.mod") / __import__("pkg")
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in {"import_module", "__import__"} and node.args and isinstance(node.args[0], ast.Constant):
                names = [str(node.args[0].value)]
        elif isinstance(node, ast.Dict):  # lazy-import tables: {"Name": "pkg.module"}
            names = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                found.append((node.lineno, top))
    return found


def test_every_package_is_checked() -> None:
    assert all(_modules(p) for p in PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_the_layering(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {top}"
        for path in _modules(package)
        for line, top in _imported_packages(path)
        if top not in allowed
    ]
    assert not bad, f"{package} may import only {sorted(allowed)}:\n" + "\n".join(bad)


def test_the_rule_checker_sees_function_level_and_dynamic_imports(tmp_path: Path) -> None:
    fake = ROOT / "segmenter" / "_layering_probe.py"  # inside ROOT so relative paths work
    fake.write_text(
        textwrap.dedent(
            """
            import importlib

            def f():
                from grounded_sam.device import resolve_device
                import detectors.base
                return importlib.import_module("ontologies")

            LAZY = {"X": "grounded_sam.pipeline"}
            """
        )
    )
    try:
        assert sorted(top for _, top in _imported_packages(fake)) == [
            "detectors", "grounded_sam", "grounded_sam", "ontologies"
        ]
    finally:
        fake.unlink()


@pytest.mark.parametrize("package", PACKAGES)
def test_no_product_module_over_500_lines(package: str) -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules(package) if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_private_names_cross_modules(package: str) -> None:
    """``from pkg.mod import _name`` across modules: make the name public or move it."""
    bad = []
    for path in _modules(package):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                bad += [f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}" for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, "\n".join(bad)


STANDALONE = r"""
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"grounded_sam", "detectors", "ontologies"}:
            raise ImportError(f"blocked for this test: {name}")
        return None

sys.meta_path.insert(0, Blocked())
import numpy as np
import torch

torch.set_num_threads(1)
torch.manual_seed(0)
import segmenter
from segmenter import AutomaticMaskGenerator, ImagePredictor, VideoPredictor, build_sam
from segmenter.compat.sam2 import build_sam2  # noqa: F401  (the compat layers load too)
from segmenter.compat.segment_anything import sam_model_registry  # noqa: F401

model = build_sam("sam2.1_hiera_tiny", device="cpu", image_size=128)
with torch.no_grad():
    model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(2.0)  # objects "present"
rng = np.random.default_rng(0)
frames = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(3)]

predictor = ImagePredictor(model)
predictor.set_image(frames[0])
masks, scores, low = predictor.predict(box=np.array([10, 10, 80, 60]), multimask_output=False)
assert masks.shape == (1, 96, 128) and scores.shape == (1,), (masks.shape, scores.shape)

video = VideoPredictor(model)
state = video.init_state(frames)
video.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=np.array([10, 10, 80, 60]))
tracked = [(f, tuple(ids)) for f, ids, logits in video.propagate_in_video(state)]
assert [f for f, _ in tracked] == [0, 1, 2] and all(ids == (1,) for _, ids in tracked), tracked

records = AutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0).generate(frames[0])
assert records and records[0]["segmentation"].shape == (96, 128)
assert not {"grounded_sam", "detectors", "ontologies"} & {m.split(".")[0] for m in sys.modules}
print("standalone ok", len(records))
"""


@pytest.mark.slow
def test_segmenter_runs_with_the_other_packages_blocked() -> None:
    out = subprocess.run(
        [sys.executable, "-c", STANDALONE], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={"PATH": "", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "standalone ok" in out.stdout
