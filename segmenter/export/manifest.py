"""The ``manifest.json`` written beside exported graphs, and its checks on load (torch-free).

The manifest names the model, its config and image size, every graph's input / output names,
shapes (symbolic dims as strings) and dtypes, the opset, this export format's version and the
SHA-256 of each file. Loading refuses a folder written by another export version and any file
whose hash changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EXPORT_VERSION", "MANIFEST_NAME", "ExportError", "ExportManifest", "GraphSpec", "TensorSpec", "sha256_file"]

EXPORT_VERSION = 2
"""Bumped whenever graph inputs / outputs or their meaning change; loaders accept only their own.

2: the image encoder outputs ``vision_features``; video graphs (memory attention / encoder, heads)."""

MANIFEST_NAME = "manifest.json"


class ExportError(ValueError):
    """An export folder or an export request that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: list[int | str]  # symbolic dims by name, e.g. ["num_prompts", 3, 64, 64]
    dtype: str  # numpy dtype name


@dataclass(frozen=True)
class GraphSpec:
    file: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@dataclass(frozen=True)
class ExportManifest:
    model: str
    image_size: int
    opset: int
    config: dict[str, Any]
    graphs: dict[str, GraphSpec]  # part name ("image_encoder", "mask_decoder") -> graph
    exporter: str
    low_res_clamp: float | None
    export_version: int = EXPORT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: str | Path, verify: bool = True) -> ExportManifest:
        """Read ``folder/manifest.json``; with ``verify`` check the export version and every file's hash."""
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if not path.is_file():
            raise ExportError(f"{str(folder)!r} is not an export folder: it has no {MANIFEST_NAME}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ExportError(f"{path} is not valid JSON ({e}); export the model again") from None
        version = data.get("export_version")
        if version != EXPORT_VERSION:
            raise ExportError(
                f"{str(folder)!r} was written by export version {version}, this code reads version "
                f"{EXPORT_VERSION}; export the model again with this version (grounded-sam export ... --overwrite)"
            )
        graphs = {
            part: GraphSpec(
                file=g["file"],
                sha256=g["sha256"],
                inputs=[TensorSpec(**t) for t in g["inputs"]],
                outputs=[TensorSpec(**t) for t in g["outputs"]],
            )
            for part, g in data["graphs"].items()
        }
        manifest = cls(**{**data, "graphs": graphs})
        if verify:
            manifest.verify(folder)
        return manifest

    def verify(self, folder: Path) -> None:
        for part, graph in self.graphs.items():
            path = Path(folder) / graph.file
            if not path.is_file():
                raise ExportError(f"{part} graph {str(path)!r} named in the manifest is missing; export again")
            digest = sha256_file(path)
            if digest != graph.sha256:
                raise ExportError(
                    f"{str(path)!r} does not match its manifest (SHA-256 {digest[:12]}…, expected "
                    f"{graph.sha256[:12]}…): the file was changed or damaged; export the model again"
                )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
