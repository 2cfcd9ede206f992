"""The distribution ships the four packages and the YAML configs; the CLI starts fast."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("grounded_sam-*.whl")
    return whl


def test_wheel_contains_packages_and_configs(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for pkg in ("grounded_sam", "segmenter", "detectors", "ontologies", "gsam_runtime"):
        assert f"{pkg}/__init__.py" in names, pkg
    # model configs are the segmenter's package data; pipeline presets ship as grounded_sam/configs
    shipped = {n for n in names if n.endswith(".yaml")}
    models = {f"segmenter/configs/{p.name}" for p in (ROOT / "segmenter" / "configs").glob("*.yaml")}
    presets = {f"grounded_sam/configs/pipelines/{p.name}" for p in (ROOT / "configs" / "pipelines").glob("*.yaml")}
    assert models and presets, "the source tree has no configs"
    assert shipped == models | presets
    assert "segmenter/configs/sam2.1_hiera_tiny.yaml" in shipped
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "grounded-sam = grounded_sam.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_finds_its_configs(wheel: Path, tmp_path: Path) -> None:
    # unpack the wheel somewhere else and import from there, away from the source tree
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = (
        "import grounded_sam.pipeline.configs as c, segmenter.config as m; "
        "print(c.pipeline_config_root()); print(m.CONFIG_DIR); "
        "print(len(m.list_model_configs())); print(len(c.list_pipeline_configs()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
    ).stdout.split()
    assert Path(out[0]).is_relative_to(tmp_path / "grounded_sam")
    assert Path(out[1]).is_relative_to(tmp_path / "segmenter")
    assert int(out[2]) >= 11 and int(out[3]) >= 2


def test_cli_module_does_not_import_torch() -> None:
    code = "import sys, grounded_sam.cli; print(sorted(m for m in ('torch', 'transformers', 'supervision', 'cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_help_is_fast() -> None:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "grounded_sam.cli", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    elapsed = time.perf_counter() - start
    assert "version" in out.stdout
    assert elapsed < 2.0, f"--help took {elapsed:.2f} s"


def test_cli_version_and_models() -> None:
    from typer.testing import CliRunner

    from grounded_sam import __version__
    from grounded_sam.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == f"grounded-sam {__version__}"
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "sam2.1_hiera_tiny" in result.output.split() and "sam2_hiera_large" in result.output.split()


def test_import_grounded_sam_is_light() -> None:
    code = "import sys, grounded_sam, ontologies; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_users_own_modules_do_not_shadow_ours(tmp_path: Path) -> None:
    """A working directory with its own ``runtime.py``, ``images.py``, ``device.py`` (names a user
    may well have) does not break the product: its shared base package has a name of its own."""
    for name in ("runtime", "images", "device", "rle", "utils", "common"):
        (tmp_path / f"{name}.py").write_text("raise ImportError('the user's own module was imported')\n")
    code = ("from grounded_sam import GroundedSAM; import grounded_sam.pipeline.core, grounded_sam.cli.commands, "
            "segmenter, detectors.transformers_base; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
