"""The command line as a newcomer reads it: defaults shown (the real ones, read from the code),
flags rendered as flags, help on every option, ``--version``, one way to give a detector folder."""

from __future__ import annotations

import re
from importlib.metadata import version as dist_version

import click
import pytest
import typer
from typer.testing import CliRunner

from detectors import DEFAULT_MODEL_IDS, available_detectors
from grounded_sam.cli import app
from grounded_sam.pipeline.configs import list_pipeline_configs
from grounded_sam.pipeline.defaults import DEFAULT_DETECTOR, DEFAULT_NMS_IOU, DEFAULT_SEGMENTER
from segmenter.config import load_model_config

runner = CliRunner()
COMMAND = typer.main.get_command(app)


def _help(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return re.sub(r"(?<=\w-) (?=\w)", "", " ".join(result.output.split()))  # unwrapped (also "iSEE-\nLaboratory")


def test_defaults_are_the_real_ones() -> None:
    text = _help("segment")
    assert f"{DEFAULT_DETECTOR} with {DEFAULT_MODEL_IDS[DEFAULT_DETECTOR]}" in text
    seg = load_model_config(DEFAULT_SEGMENTER)
    assert f"{DEFAULT_SEGMENTER} with {seg.hf_ids[0]}" in text
    assert f"[default: ({seg.image_size})]" in text and f"[default: ({DEFAULT_NMS_IOU})]" in text
    assert "[default: (--single-mask)]" in text and "[default: grounded_sam_out]" in text
    for name in available_detectors():
        assert name in text
    for preset in list_pipeline_configs():
        assert preset in text
    assert "box thr." in runner.invoke(app, ["models"]).output  # where the per-family thresholds are


def test_every_option_has_help_and_flags_render_as_flags() -> None:
    for name, command in COMMAND.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts} has no help"
        text = _help(name)
        assert "<bool>" not in text, name
    label = _help("label")
    assert "--overwrite / --no-overwrite" in label and "--recursive / --no-recursive" in label
    assert "--multimask / --single-mask" in _help("segment")
    assert '{"dog": [[x1, y1, x2, y2], ...]}' in _help("segment")  # brackets survive (no markup)


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"grounded-sam {dist_version('grounded-sam')}"


def test_one_way_to_give_a_detector_folder(tmp_path) -> None:
    folder = tmp_path / "owl"
    folder.mkdir()
    result = runner.invoke(app, ["segment", "--sample", "--detector-model-id", str(folder)])
    assert result.exit_code == 2
    assert "local path" in result.output and "--detector" in result.output
    result = runner.invoke(app, ["segment", "--sample", "--detector", str(folder), "--detector-model-id", "org/model"])
    assert result.exit_code == 2 and "not a family name" in result.output


def test_output_keys_are_documented() -> None:
    text = _help("segment")
    assert re.search(r'"xyxy" the detector\'s box, "bbox" the mask\'s box \[x, y, width, height\]', text)
    assert '"bbox" (COCO, JSONL) is the mask\'s box' in _help("label")


@pytest.mark.parametrize("command", ["segment", "track", "auto"])
def test_sample_is_the_default_input(command: str) -> None:
    text = _help(command)
    assert "--sample" in text and "the bundled sample" in text
