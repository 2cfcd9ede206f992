"""The layering of docs/architecture.md, enforced: allowed imports, and a segmenter that stands alone.

``gsam_runtime`` <- ``ontologies`` <- ``detectors`` <- ``grounded_sam`` -> ``segmenter`` -> ``gsam_runtime``.
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
PACKAGES = ("gsam_runtime", "ontologies", "detectors", "segmenter", "grounded_sam")
ALLOWED = {  # package -> the packages of ours it may import (besides itself)
    "gsam_runtime": set(),
    "ontologies": {"gsam_runtime"},
    "detectors": {"gsam_runtime", "ontologies"},
    "segmenter": {"gsam_runtime"},
    "grounded_sam": {"gsam_runtime", "ontologies", "detectors", "segmenter"},
}
MAX_LINES = 500


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in ``path``: ``import a.b``, ``from a.b import c`` (as
    ``a.b`` and ``a.b.c``), relative imports made absolute, and module names given as string
    constants to ``importlib.import_module`` / ``__import__`` or in lazy-import tables."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Call):  # importlib.import_module("pkg.mod") / __import__("pkg")
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in {"import_module", "__import__"} and node.args and isinstance(node.args[0], ast.Constant):
                names = [str(node.args[0].value)]
        elif isinstance(node, ast.Dict):  # lazy-import tables: {"Name": "pkg.module"} / "pkg.module:attr"
            names = [v.value.split(":")[0] for v in node.values
                     if isinstance(v, ast.Constant) and isinstance(v.value, str)]
        found += [(node.lineno, name) for name in names if name.split(".")[0] in PACKAGES]
    return found


def _imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in ``path`` that names one of ours."""
    return sorted({(line, name.split(".")[0]) for line, name in _imported_names(path)})


def _module_graph() -> dict[str, set[str]]:
    """Product module -> the product modules it imports (a name that is no module counts as the
    module that defines it, e.g. ``from a.b import Class`` -> ``a.b``)."""
    paths = {_module_name(p): p for package in PACKAGES for p in _modules(package)}

    def resolve(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    return {mod: {t for _, name in _imported_names(path) if (t := resolve(name)) and t != mod}
            for mod, path in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _folder(module: str) -> str:
    path = ROOT / module.replace(".", "/")
    return module if path.is_dir() else module.rpartition(".")[0]


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


def test_no_import_circle_between_modules_of_different_folders() -> None:
    """Imports run one way between folders: modules of one folder may import each other in a
    circle (a registry and its plug-ins), modules of different folders never do."""
    bad = [c for c in _cycles(_module_graph()) if len({_folder(m) for m in c}) > 1]
    assert not bad, "import circles across folders:\n" + "\n".join(" <-> ".join(c) for c in bad)


def test_the_cycle_finder_sees_a_circle() -> None:
    graph = {"a.x": {"b.y"}, "b.y": {"c.z"}, "c.z": {"a.x"}, "d.w": {"a.x"}, "e.v": set()}
    assert _cycles(graph) == [["a.x", "b.y", "c.z"]]


GS_LAYERS = {  # grounded_sam's folders: each imports only the folders below it (docs/architecture.md)
    "grounded_sam.pipeline": set(),
    "grounded_sam.export": set(),
    "grounded_sam.assets": {"grounded_sam.export"},
    "grounded_sam.tracking": {"grounded_sam.pipeline", "grounded_sam.export"},
    "grounded_sam.labeling": {"grounded_sam.pipeline", "grounded_sam.export", "grounded_sam.tracking"},
    "grounded_sam.evaluation": {"grounded_sam.pipeline", "grounded_sam.export", "grounded_sam.labeling"},
    "grounded_sam": {"grounded_sam.pipeline", "grounded_sam.export", "grounded_sam.tracking",
                     "grounded_sam.labeling", "grounded_sam.evaluation"},  # __init__ + api: GroundedSAM
    "grounded_sam.compat": {"grounded_sam", "grounded_sam.export"},
    "grounded_sam.app": {"grounded_sam", "grounded_sam.pipeline", "grounded_sam.export", "grounded_sam.tracking",
                         "grounded_sam.labeling", "grounded_sam.evaluation", "grounded_sam.assets"},
    "grounded_sam.serve": {"grounded_sam", "grounded_sam.pipeline", "grounded_sam.export"},  # Label Studio's ML backend
    "grounded_sam.cli": {"grounded_sam", "grounded_sam.pipeline", "grounded_sam.export", "grounded_sam.tracking",
                         "grounded_sam.labeling", "grounded_sam.evaluation", "grounded_sam.assets",
                         "grounded_sam.app", "grounded_sam.serve"},  # imported by nobody
}


def test_grounded_sam_folders_import_only_the_layers_below() -> None:
    graph = _module_graph()
    folders = {_folder(m) for m in graph if m.startswith("grounded_sam")}
    assert folders == set(GS_LAYERS), f"a folder of grounded_sam is missing from GS_LAYERS: {folders ^ set(GS_LAYERS)}"
    bad = [f"{m} imports {t}" for m, targets in graph.items() if m.startswith("grounded_sam")
           for t in targets if t.startswith("grounded_sam") and _folder(t) != _folder(m)
           and _folder(t) not in GS_LAYERS[_folder(m)]]
    assert not bad, "\n".join(sorted(bad))


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
