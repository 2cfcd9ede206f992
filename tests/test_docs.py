"""What README.md, docs/ and notebooks/README.md claim stays true: the install blocks, the first
command's files, the default models' names, the extras, the links, the error messages the guide
quotes, the `grounded-sam models` table it shows, and the layout of docs/benchmarks.md.

Torch-free and offline: a few seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
GUIDE = (ROOT / "docs" / "guide.md").read_text(encoding="utf-8")
DOCS = {p: p.read_text(encoding="utf-8") for p in [ROOT / "README.md", ROOT / "notebooks" / "README.md",
                                                   *sorted((ROOT / "docs").glob("*.md"))]}


def _fenced(text: str) -> list[tuple[str, str]]:
    """Every fenced block of a markdown text: ``(language, body)``."""
    blocks, lang, body = [], None, []
    for line in text.splitlines():
        fence = line.strip().startswith("```")
        if lang is None and fence:
            lang, body = line.strip()[3:], []
        elif lang is not None and fence:
            blocks.append((lang, "\n".join(body).strip()))
            lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def _blocks(text: str, lang: str) -> list[str]:
    return [body for kind, body in _fenced(text) if kind == lang]


def test_cpu_install_block_sits_beside_the_default_one() -> None:
    """The CPU variant is its own block, before the test command; it is fenced `sh` so that the first
    two `bash` blocks stay the two commands CI runs (tests/test_readme.py)."""
    install, test = _blocks(README, "bash")[:2]
    (cpu,) = [b for b in _blocks(README, "sh") if "download.pytorch.org/whl/cpu" in b]
    assert cpu.startswith("pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu && ")
    assert cpu.endswith(" && " + install)  # the same first command once the CPU wheels are in
    assert README.index(cpu) < README.index(test)
    assert cpu in _blocks(GUIDE, "sh") and install in _blocks(GUIDE, "bash")


def test_first_command_output_files_are_named() -> None:
    from grounded_sam.assets import sample_image

    install = _blocks(README, "bash")[0]
    assert "--out out/" in install and "--sample" in install
    stem = sample_image().stem
    assert f"`out/{stem}_annotated.jpg`" in README and f"`out/{stem}.json`" in README
    cli = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "grounded_sam" / "cli").glob("*.py"))
    assert 'f"{stem}_annotated.jpg"' in cli and 'f"{stem}.json"' in cli  # what `segment` writes


def test_default_models_are_named_as_the_cli_names_them() -> None:
    from detectors import DEFAULT_MODEL_IDS
    from grounded_sam.pipeline.defaults import DEFAULT_DETECTOR, DEFAULT_SEGMENTER
    from segmenter.config import load_model_config

    detector = f"`{DEFAULT_DETECTOR}` with `{DEFAULT_MODEL_IDS[DEFAULT_DETECTOR]}`"
    segmenter = f"`{DEFAULT_SEGMENTER}` with `{load_model_config(DEFAULT_SEGMENTER).hf_ids[0]}`"
    for text in (README, GUIDE):
        flat = " ".join(text.split())
        assert detector in flat and segmenter in flat


def test_extras_have_one_spelling_and_exist() -> None:
    try:
        import tomllib

        extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"])
    except ModuleNotFoundError:  # Python 3.10: the installed metadata
        from importlib.metadata import metadata

        extras = set(metadata("grounded-sam").get_all("Provides-Extra") or [])
    for path, text in DOCS.items():
        assert "grounded-sam[" not in text, path
        for name in re.findall(r'pip install (?:-e )?"\.\[(\w+)\]"', text):
            assert name in extras, (path, name)
    for name in ("app", "ray"):
        assert f'pip install ".[{name}]"' in README and f'pip install ".[{name}]"' in GUIDE


def test_relative_links_resolve() -> None:
    for path, text in DOCS.items():
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(#[^)\s]*)?\)", text):
            if target.startswith(("http://", "https://")):
                continue
            file = (path.parent / target) if target else path
            assert file.exists(), (path, target)
            if anchor:
                headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), flags=re.M)
                slugs = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
                assert anchor[1:] in slugs, (path, anchor)
    assert "(docs/guide.md)" in README and "(notebooks/README.md)" in README
    assert "pip install jupyterlab" in README


def test_the_shared_package_is_gsam_runtime() -> None:
    assert (ROOT / "gsam_runtime").is_dir() and not (ROOT / "runtime").exists()
    for path, text in DOCS.items():
        # gsam_runtime only (segmenter/export/runtime.py, the ONNX Runtime predictor's module, is a file name)
        assert not re.search(r"(?<![\w])runtime\b(?!\.py)", text), path


# message fragments the guide quotes, each from one string literal of the code that prints it
MESSAGES = [
    "the models this command needs are not all on this machine, and ",
    "downloads are disabled (HF_HUB_OFFLINE=1)",
    "there is no connection to the hub (",
    "On a machine with internet access, fetch them:",
    "(or `grounded-sam download` with the same model options)",
    "then copy that machine's Hugging Face cache to ",
    "error: cannot download: ",
    ". On a connected machine run:",
    "error: model weights could not be loaded: ",
    "The weights are not in the local Hugging Face cache and cannot be downloaded from here. ",
    "SAM 3's weights are gated on the Hugging Face Hub: accept the licence on ",
    " takes a hub id or an existing local path)",
    " is a local path: give a save_pretrained folder with --detector ",
    "unknown detector ",
    "say what to find with --prompt ",
    "was requested but CUDA is not available on this machine ",
    " was labeled with other settings; this run would mix two kinds of labels in one dataset, ",
    "error: the app needs Gradio: ",
    "the Ray backend needs Ray: ",
]


def test_guide_quotes_the_real_messages() -> None:
    code = "".join(p.read_text(encoding="utf-8") for package in ("grounded_sam", "detectors", "gsam_runtime")
                   for p in (ROOT / package).rglob("*.py"))
    flat_guide = " ".join(GUIDE.split())
    for message in MESSAGES:
        assert message in code, f"no longer in the code: {message!r}"
        assert " ".join(message.split()) in flat_guide or message.strip() in flat_guide, f"not in the guide: {message!r}"


def test_guide_shows_the_real_models_table(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    r = subprocess.run([sys.executable, "-m", "grounded_sam.cli", "models"], cwd=ROOT, capture_output=True, text=True,
                       env={**env, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert r.returncode == 0, r.stderr
    (shown,) = [b for b in _blocks(GUIDE, "") if b.startswith("detectors (--detector")]
    lines = r.stdout.splitlines()
    for line in shown.splitlines():
        if line.strip() != "...":
            assert line in lines, line


def test_download_commands_in_the_guide_are_the_clis(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    r = subprocess.run([sys.executable, "-m", "grounded_sam.cli", "download"], cwd=ROOT, capture_output=True,
                       text=True, env={**env, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert r.returncode == 2
    fetch = [line.strip() for line in r.stderr.splitlines() if line.strip().startswith("hf download ")]
    assert fetch == ["hf download iSEE-Laboratory/llmdet_tiny", "hf download facebook/sam2.1-hiera-tiny sam2.1_hiera_tiny.pt"]
    for line in fetch:
        assert line in GUIDE


def test_benchmarks_current_results_then_history() -> None:
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    current, history = text.split("\n## Current results\n")[1].split("\n## History\n")
    sections = re.split(r"^### ", current, flags=re.M)[1:]
    assert len(sections) >= 12
    for section in sections:
        title = section.splitlines()[0]
        for field in ("- command", "- date: ", "- machine: "):
            assert f"\n{field}" in section, (title, field)
        assert "\n|---" in section, title  # one table
    assert len(re.findall(r"^### ", history, flags=re.M)) > len(sections)  # a group per benchmark + the 2026-11-22 status


@pytest.mark.parametrize("name", ["guide.md", "architecture.md", "benchmarks.md"])
def test_docs_pages_exist(name) -> None:
    assert (ROOT / "docs" / name).is_file()
