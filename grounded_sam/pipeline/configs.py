"""Where the pipeline presets live: ``configs/pipelines`` in a source tree, ``grounded_sam/configs/pipelines`` in a wheel.

Model configs are the segmenter's own package data (``segmenter/configs``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["pipeline_config_root", "pipeline_config_path", "list_pipeline_configs"]


def pipeline_config_root() -> Path:
    package = Path(__file__).resolve().parents[1]  # grounded_sam/
    for candidate in (package / "configs" / "pipelines", package.parent / "configs" / "pipelines"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "grounded-sam's pipeline presets are missing from this installation "
        f"(looked in {package / 'configs' / 'pipelines'} and {package.parent / 'configs' / 'pipelines'}); reinstall the package"
    )


def list_pipeline_configs() -> list[str]:
    return sorted(p.stem for p in pipeline_config_root().glob("*.yaml"))


def pipeline_config_path(name: str) -> Path:
    path = pipeline_config_root() / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown pipeline config {name!r}; available: {', '.join(list_pipeline_configs())}")
    return path
