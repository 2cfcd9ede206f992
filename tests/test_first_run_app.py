"""A newcomer's first run of the app: the models are checked at start-up (the terminal and the page
say so), a Detect without models answers at once with the CLI's message, the failure is remembered
until the models change, and ``grounded-sam app`` speaks in its own words (``--review`` checked at
once, no "set share=True in launch()")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from hub_world import closed_port

import grounded_sam.pipeline.hub as pipeline_hub
from grounded_sam import api
from grounded_sam.app import AppError, AppModels, ModelOptions, build_app
from gsam_runtime import hub

ROOT = Path(__file__).resolve().parents[1]
FAST_S = 3.0  # the bound (a Detect waited 25.8 s of retries before its message)
CAPTIONS = {"a cat": "cat"}
DETECTOR, SEGMENTER = "iSEE-Laboratory/llmdet_tiny", "facebook/sam2.1-hiera-tiny"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _counting(monkeypatch, module, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _timed_error(call) -> tuple[str, float]:
    start = time.perf_counter()
    with pytest.raises(AppError) as err:
        call()
    return str(err.value), time.perf_counter() - start


def test_detect_without_models_answers_at_once_and_remembers(empty_cache, no_connection, monkeypatch) -> None:
    probes = _counting(monkeypatch, hub, "offline_reason")
    loads = _counting(monkeypatch, api, "GroundedSAM")
    models = AppModels(ModelOptions(device="cpu"))
    status = models.status()  # start-up
    assert not status.ok and f"no connection to the hub ({no_connection})" in status.text
    assert DETECTOR in status.text and SEGMENTER in status.text and status.text.count("NOT cached") == 2
    for _ in range(2):  # the first Detect and every later one: the start-up answer, at once
        message, seconds = _timed_error(lambda: models.pipeline(CAPTIONS))
        assert message == status.text and seconds < FAST_S, seconds
    assert probes == [1] and loads == []  # the hub was asked once; no model load was tried

    models.options = ModelOptions(device="cpu", detector="owlv2")  # other models: asked again
    message, _ = _timed_error(lambda: models.pipeline(CAPTIONS))
    assert probes == [1, 1] and "google/owlv2-base-patch16-ensemble" in message


def test_clicks_without_a_segmenter_answer_at_once_until_it_is_downloaded(empty_cache, tiny_models,
                                                                         monkeypatch) -> None:
    checks = _counting(monkeypatch, pipeline_hub, "check_models")
    models = AppModels(ModelOptions(device="cpu", image_size=256))
    for _ in range(2):
        message, seconds = _timed_error(models.click_predictor)
        assert seconds < FAST_S and "HF_HUB_OFFLINE=1" in message
        assert SEGMENTER in message and DETECTOR not in message  # a click loads the segmenter alone
    assert checks == [1]
    snapshot = empty_cache / "models--facebook--sam2.1-hiera-tiny" / "snapshots" / REVISION  # `hf download` ran
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(REVISION)
    shutil.copy(tiny_models.sam, snapshot / "sam2.1_hiera_tiny.pt")
    assert models.click_predictor() is not None and checks == [1, 1]  # the cache changed: asked again, loaded


def test_a_failed_load_is_remembered_until_the_models_change(tiny_models, monkeypatch) -> None:
    attempts: list[int] = []

    def broken(*args, **kwargs):
        attempts.append(1)
        raise RuntimeError("the weights are truncated")

    monkeypatch.setattr(api, "GroundedSAM", broken)
    models = AppModels(ModelOptions(detector=str(tiny_models.owl), checkpoint=str(tiny_models.sam), device="cpu"))
    assert models.status().ok and "models ready" in models.status().text  # local files: nothing to fetch
    for _ in range(3):
        message, seconds = _timed_error(lambda: models.pipeline(CAPTIONS))
        assert message == "error: RuntimeError: the weights are truncated" and seconds < FAST_S
    assert attempts == [1]
    assert models.model_problem() == message  # the page's start-up answer from now on
    models.options = ModelOptions(detector=str(tiny_models.owl), checkpoint=str(tiny_models.sam), device="cpu",
                                  image_size=256)
    with pytest.raises(AppError):
        models.pipeline(CAPTIONS)
    assert attempts == [1, 1]


def test_the_page_says_it_at_start_up(empty_cache, tmp_path) -> None:
    demo = build_app(AppModels(ModelOptions(device="cpu")), work_dir=tmp_path / "work")
    (banner,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-status"]
    assert banner.value.startswith("**The models cannot load:**")
    assert DETECTOR in banner.value and "hf download facebook/sam2.1-hiera-tiny sam2.1_hiera_tiny.pt" in banner.value


def _cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}


def test_app_review_of_a_missing_folder_exits_at_once(tmp_path) -> None:
    code = textwrap.dedent("""
        import json, sys, time
        from grounded_sam.cli import main
        sys.argv = ["grounded-sam", *sys.argv[1:]]
        start = time.perf_counter()
        try:
            main()
        except SystemExit as e:
            print(json.dumps({"code": e.code, "s": time.perf_counter() - start, "gradio": "gradio" in sys.modules}))
    """)
    r = subprocess.run([sys.executable, "-c", code, "app", "--review", "nosuchdir"], cwd=tmp_path, check=False,
                       capture_output=True, text=True, env=_cli_env(tmp_path), timeout=300)
    result = json.loads(r.stdout)
    assert result["code"] == 2 and result["s"] < FAST_S and not result["gradio"]  # before the app is even imported
    assert r.stderr.strip().splitlines() == [
        "error: --review nosuchdir: no such folder (give an output folder of `grounded-sam label`)"]


@pytest.mark.slow  # starts the app in a process of its own (~15 s)
def test_app_start_up_speaks_in_the_clis_words(tmp_path) -> None:
    (tmp_path / "not_a_dataset").mkdir()
    r = subprocess.run([sys.executable, "-m", "grounded_sam.cli", "app", "--review", "not_a_dataset"], cwd=tmp_path,
                       check=False, capture_output=True, text=True, env=_cli_env(tmp_path), timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: --review not_a_dataset:") and "is not an output folder" in r.stderr

    port = closed_port()
    proc = subprocess.Popen([sys.executable, "-m", "grounded_sam.cli", "app", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_cli_env(tmp_path))
    try:
        line = proc.stdout.readline()  # the CLI's own line, once the app serves
        assert line.startswith(f"grounded-sam app on http://127.0.0.1:{port}") and "--share" in line, line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=30) as answer:
            config = json.loads(answer.read())
        (banner,) = [c["props"]["value"] for c in config["components"] if c["props"].get("elem_id") == "model-status"]
        assert "The models cannot load" in banner and DETECTOR in banner
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert "share=True" not in out + err and "launch()" not in out + err
    assert err.startswith("error: the models this command needs are not all on this machine") and SEGMENTER in err
