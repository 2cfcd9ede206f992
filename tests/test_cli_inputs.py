"""Cheap inputs checked before any model loads (issue 27, round two): each wrong one answered with
exit 2 in well under a second, one line that names the option and the fix, nothing written; the
help that every command offers (``-h``, no flags it lacks, summaries not cut off)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import typer
from PIL import Image
from typer.testing import CliRunner

from grounded_sam.cli import app
from grounded_sam.cli.checks import output_folder
from grounded_sam.cli.device import check_torch_device, cuda_device_count, device_option
from grounded_sam.cli.options import LABEL_FORMATS, MEMORY_POLICIES
from grounded_sam.labeling import label_folder
from grounded_sam.pipeline.files import IMAGE_EXTENSIONS, scan_folder

ROOT = Path(__file__).resolve().parents[1]
FAST_BOUND_S = 3.0  # the issue asks for < 1 s (measured 0.35-0.6 s on a loaded 2-core box)
runner = CliRunner()
COMMAND = typer.main.get_command(app)


def _cli(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """The command in a fresh process, with no models cached: a check that came after the models
    check would answer with "NOT cached" instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(cwd / "hf"), HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="-1")  # a machine without CUDA
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "grounded_sam.cli", *args], cwd=cwd, capture_output=True, text=True,
                       env=env, timeout=120)
    return r, time.perf_counter() - start


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "bad.yaml").write_text("a: [b\n c: d\n")
    (tmp_path / "five.yaml").write_text("classes: 5\n")
    return tmp_path


FAST_FAILURES = [  # (arguments, what stderr must say)
    pytest.param(["segment", "--sample", "--device", "cuda"], ["'--device'", "no CUDA device", "--device cpu"],
                 id="cuda"),
    pytest.param(["segment", "--sample", "--device", "mps"], ["'--device'", "--device cpu"],
                 marks=pytest.mark.skipif(platform.system() == "Darwin", reason="macOS may have MPS"), id="mps"),
    pytest.param(["segment", "--sample", "--device", "gpu"], ["'--device'", "'gpu' is not a device", "cuda:N"],
                 id="gpu"),
    pytest.param(["track", "--sample", "--memory", "lru"], ["'--memory'", "'lru'", ", ".join(MEMORY_POLICIES)],
                 id="memory"),
    pytest.param(["track", "--sample", "--tracker", "sam4"], ["'--tracker'", "auto, sam2, sam3"], id="tracker"),
    pytest.param(["track", "--sample", "--tracker", "sam3", "--memory", "fifo"], ["--memory", "--tracker sam2"],
                 id="memory-with-sam3"),
    pytest.param(["label", "imgs", "--out", "ds", "--prompt", "cat", "--format", "voc"],
                 ["'--format'", "coco, yolo, jsonl"], id="format"),
    pytest.param(["segment", "--sample", "--ontology", "bad.yaml"], ["--ontology", "'bad.yaml'", "line 2, column 3"],
                 id="ontology-yaml"),
    pytest.param(["segment", "--sample", "--ontology", "five.yaml"], ["--ontology", "'five.yaml'", "'caption: class'"],
                 id="ontology-classes"),
    pytest.param(["label", "empty", "--out", "ds", "--prompt", "cat"], ["no images in 'empty'", ".webp"], id="empty"),
    pytest.param(["label", "imgs", "--out", "ds", "--prompt", "cat", "--extension", ".gif"],
                 ["no images in 'imgs' (looked for .gif)", "1 other file: a.png"], id="extension"),
    pytest.param(["segment", "notes.txt", "--prompt", "cat", "--out", "ds"], ["'notes.txt' is not an image file"],
                 id="not-an-image"),
    pytest.param(["segment", "empty", "--prompt", "cat", "--out", "ds"], ["no images in 'empty'"], id="segment-empty"),
]


@pytest.mark.parametrize(("args", "says"), FAST_FAILURES)
def test_cheap_inputs_fail_fast_before_models(inputs: Path, args: list[str], says: list[str]) -> None:
    r, seconds = _cli(*args, cwd=inputs)
    assert r.returncode == 2, r.stderr
    assert seconds < FAST_BOUND_S, seconds
    error = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "Traceback" not in r.stderr and "NOT cached" not in r.stderr, r.stderr
    for text in says:
        assert text in error[0], (text, r.stderr)
    assert "device=" not in r.stderr  # the command line's words, not Python's
    assert not (inputs / "ds").exists()  # nothing written


def test_device_option() -> None:
    assert device_option(None) is None and device_option("auto") is None and device_option("cpu") == "cpu"
    for wrong in ("gpu", "cuda:x", "cuda:", "CPU", "cpu:0"):
        with pytest.raises(typer.BadParameter, match="is not a device"):
            device_option(wrong)


def test_hidden_cuda_devices_count_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cuda_device_count() == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert cuda_device_count() == 0


def test_what_torch_cannot_use_is_said_in_cli_words(monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver says nothing (cuda_device_count() is None): torch decides, before the models load
    (cuda:99: no machine here or with a GPU has it)."""
    import grounded_sam.cli.device as device

    monkeypatch.setattr(device, "cuda_device_count", lambda: None)
    assert device_option("cuda:99") == "cuda:99"
    with pytest.raises(typer.BadParameter) as info:
        check_torch_device("cuda:99")
    assert "--device cpu" in info.value.message and "device=" not in info.value.message
    check_torch_device("cpu")
    check_torch_device(None)


def test_cli_copies_of_names_match_their_registries() -> None:
    from grounded_sam.labeling.options import FORMATS
    from segmenter.video.policies import POLICIES

    assert MEMORY_POLICIES == tuple(POLICIES) and LABEL_FORMATS == FORMATS


def test_output_folder_goes_when_nothing_was_written(tmp_path: Path) -> None:
    with output_folder(tmp_path / "a" / "out"):
        pass
    assert not (tmp_path / "a" / "out").exists()
    with output_folder(tmp_path / "b") as out:
        (out / "x.json").write_text("{}")
    assert (tmp_path / "b" / "x.json").exists()
    (tmp_path / "c").mkdir()
    with output_folder(tmp_path / "c"):
        pass
    assert (tmp_path / "c").is_dir()  # it was there before: kept


def test_one_list_of_image_extensions_and_skipped_files_named(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("a.png", "b.webp", "c.JPG", "sub/d.tif"):
        Image.new("RGB", (8, 6)).save(src / name)
    for name in ("notes.txt", "clip.gif", "sub/e.doc", ".hidden.txt"):
        (src / name).write_bytes(b"x")
    scan = scan_folder(src, None, recursive=True)
    assert [p.relative_to(src).as_posix() for p in scan.files] == ["a.png", "b.webp", "c.JPG", "sub/d.tif"]
    assert [p.relative_to(src).as_posix() for p in scan.others] == ["clip.gif", "notes.txt", "sub/e.doc"]
    assert ".webp" in IMAGE_EXTENSIONS

    def predict(image: np.ndarray) -> sv.Detections:
        return sv.Detections.empty()

    report = label_folder(predict, src, tmp_path / "ds", ["cat"], extension=None, progress=False)
    assert report.total == 3 and report.labeled == 3 and report.other_files == ["clip.gif", "notes.txt"]
    last = report.summary().splitlines()[-1]
    assert last.startswith("  not labeled: 2 file(s) whose extension is not .jpg") and last.endswith("(clip.gif, notes.txt)")


# ---------------------------------------------------------------------------- help
def test_h_is_help_everywhere() -> None:
    assert runner.invoke(app, ["-h"]).exit_code == 0
    for name in COMMAND.commands:
        result = runner.invoke(app, [name, "-h"])
        assert result.exit_code == 0 and "Usage:" in result.output, (name, result.output)


CROSS_REFERENCES = {"tune": {"--thresholds"}}  # what another command takes, named on purpose


def test_help_names_only_flags_the_command_has() -> None:
    for name, command in COMMAND.commands.items():
        own = {o for p in command.params for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
        text = runner.invoke(app, [name, "-h"]).output
        mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]", text)) - {"--help"}
        foreign = {f for f in mentioned if not any(o.startswith(f) for o in own)}  # a prefix: wrapped at a hyphen
        assert foreign <= CROSS_REFERENCES.get(name, set()), (name, foreign)
    assert "--sample" not in runner.invoke(app, ["label", "-h"]).output
    assert "--detector" not in runner.invoke(app, ["auto", "-h"]).output


def test_command_summaries_are_whole_sentences() -> None:
    text = runner.invoke(app, ["-h"], env={"COLUMNS": "80"}).output
    rows = text.split("Commands:")[1].strip().splitlines()
    assert len(rows) == len(COMMAND.commands)
    cut = [row.split()[0] for row in rows if row.rstrip().endswith("...")]
    assert not cut, cut


@pytest.mark.slow  # loads the tiny models (~10 s)
def test_an_image_that_fails_leaves_no_empty_output_folder(tiny_models, tmp_path: Path) -> None:
    from tiny import SAM_IMAGE_SIZE

    owl, sam = tiny_models
    (tmp_path / "fake.jpg").write_text("a text file named like an image")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "grounded_sam.cli", "segment", "fake.jpg", "--prompt", "cat",
                        "--detector", str(owl), "--checkpoint", str(sam), "--image-size", str(SAM_IMAGE_SIZE),
                        "--device", "cpu", "--out", "out"], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 1 and "fake.jpg" in r.stderr and "not a recognised image format" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
