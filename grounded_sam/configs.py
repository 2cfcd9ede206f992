"""Where the YAML configs live: ``configs/`` in a source tree, ``grounded_sam/configs`` in a wheel."""

from __future__ import annotations

from pathlib import Path

__all__ = ["config_root", "model_config_path", "list_model_configs", "pipeline_config_path"]


def config_root() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "models").is_dir():
            return candidate
    raise FileNotFoundError(
        "grounded-sam's configs/ folder is missing from this installation "
        f"(looked in {here / 'configs'} and {here.parent / 'configs'}); reinstall the package"
    )


def list_model_configs() -> list[str]:
    return sorted(p.stem for p in (config_root() / "models").glob("*.yaml"))


def model_config_path(name: str) -> Path:
    path = config_root() / "models" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown model config {name!r}; available: {', '.join(list_model_configs())}")
    return path


def pipeline_config_path(name: str) -> Path:
    path = config_root() / "pipelines" / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (config_root() / "pipelines").glob("*.yaml"))
        raise ValueError(f"unknown pipeline config {name!r}; available: {', '.join(names)}")
    return path
