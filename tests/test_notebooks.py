"""The notebooks in notebooks/ run top to bottom (tiny random checkpoints) and are stored without outputs.

Each notebook reads its models from its first code cell; ``GROUNDED_SAM_NOTEBOOK_MODELS=<dir>``
makes that cell read ``<dir>/models.json`` (written here) instead of the real hub ids.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import av
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from detectors import available_detectors, default_model_id
from ontologies import CaptionOntology

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
EXPECTED = ["01_text_to_masks.ipynb", "02_video_tracking.ipynb", "03_auto_labeling.ipynb", "04_label_quality.ipynb"]
ENV = "GROUNDED_SAM_NOTEBOOK_MODELS"
NUM_FRAMES = 6  # the tracking notebook's synthetic clip in test mode


@pytest.fixture(scope="module")
def notebook_models(tmp_path_factory, tiny_models) -> Path:
    folder = tmp_path_factory.mktemp("notebook_models")
    owl, sam = tiny_models
    from tiny_detectors import tiny_sam3_video

    # facebook/sam3's layout (the video model holds the image detector), biased to detect and track
    sam3_model, sam3_processor = tiny_sam3_video(score_threshold_detection=0.5, new_det_thresh=0.5)
    sam3_model.save_pretrained(folder / "sam3")
    sam3_processor.save_pretrained(folder / "sam3")
    spec = {
        "detector": str(owl),
        "segmenter": "sam2.1_hiera_tiny",
        "checkpoint": str(sam),
        "image_size": 128,  # SAM at 128 px: the tracking notebook runs ~3x faster than at 256
        "box_threshold": 0.0,
        "device": "cpu",
        "amg_options": {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
        "num_frames": NUM_FRAMES,
        "redetect_every": 3,
        "num_images": 4,
        "sam3": str(folder / "sam3"),
        "sam3_threshold": 0.3,
    }
    (folder / "models.json").write_text(json.dumps(spec, indent=1))
    return folder


def _execute(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel (cwd = ``cwd``); a failing cell raises CellExecutionError."""
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]


def _images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for o in _outputs(nb))


def _text(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in _outputs(nb) if o.output_type == "stream" and o.name == "stdout")


def _config_cell(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code")


@pytest.fixture
def kernel_env(monkeypatch, notebook_models: Path) -> Path:
    monkeypatch.setenv(ENV, str(notebook_models))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # like conftest's torch.set_num_threads(1), in the kernel
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # Agg-rendered PNG outputs
    return notebook_models


def test_the_notebooks_are_there() -> None:
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"{path.name}: code cell {i} has stored outputs; clear them before committing"
        assert cell.execution_count is None, f"{path.name}: code cell {i} has an execution count"
    assert all("attachments" not in c for c in nb.cells), f"{path.name} has cell attachments"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_models_come_from_one_config_cell_with_real_hub_ids(path: Path, monkeypatch, notebook_models: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert [i for i, src in enumerate(code) if ENV in src] == [0], "only the first code cell reads the switch"
    assert all("SAM_CHECKPOINT =" not in src and "DETECTOR =" not in src for src in code[1:])
    # by default: real hub checkpoints
    monkeypatch.delenv(ENV, raising=False)
    ns: dict = {}
    exec(code[0], ns)  # noqa: S102 - the notebook's own config cell
    assert ns["DETECTOR"] in available_detectors() and default_model_id(ns["DETECTOR"])
    assert ns["DETECTOR_MODEL_ID"] is None
    assert not Path(ns["SAM_CHECKPOINT"]).exists()  # a hub id, not a local file
    assert ns["SAM_CHECKPOINT"] == "facebook/sam2.1-hiera-tiny" and ns["SEGMENTER"] == "sam2.1_hiera_tiny"
    assert ns["IMAGE_SIZE"] is None and ns["DEVICE"] is None
    # switched: the tiny checkpoints of models.json
    monkeypatch.setenv(ENV, str(notebook_models))
    ns = {}
    exec(code[0], ns)  # noqa: S102
    spec = json.loads((notebook_models / "models.json").read_text())
    got = (ns["DETECTOR"], ns["SAM_CHECKPOINT"], ns["IMAGE_SIZE"], ns["DEVICE"])
    assert got == (spec["detector"], spec["checkpoint"], spec["image_size"], spec["device"])
    assert Path(ns["DETECTOR"]).is_dir() and Path(ns["SAM_CHECKPOINT"]).is_file()


def test_switch_without_models_json_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="models.json"):
        exec(_config_cell(NOTEBOOKS[0]), {})  # noqa: S102


def test_a_failing_cell_fails_the_run(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise ValueError('broken cell')"),
        nbformat.v4.new_code_cell("y = 2"),
    ])
    with pytest.raises(CellExecutionError, match="broken cell"):
        _execute(nb, tmp_path)
    assert nb.cells[2].outputs == [] and nb.cells[2].execution_count is None  # execution stopped


@pytest.mark.slow
def test_text_to_masks_notebook(kernel_env: Path, tmp_path: Path) -> None:
    nb = _execute(nbformat.read(NOTEBOOKS_DIR / EXPECTED[0], as_version=4), tmp_path)
    text = _text(nb)
    assert "detector: Owlv2Detector" in text and "device: cpu" in text
    assert re.search(r"^\d+ detections, masks \(\d+, 360, 480\) bool$", text, re.M)
    assert re.search(r"^mask IoU with the truth: \[", text, re.M)
    assert re.search(r"^\d+ masks; record keys: \[", text, re.M)
    assert re.search(r"^SAM 3: \d+ detections, masks \(\d+, 360, 480\), segmenter: None$", text, re.M)
    assert re.search(r"^SAM 3 with an exemplar of 'rectangle': \d+ detections$", text, re.M)
    assert _images(nb) >= 6  # image, detections, point masks, box masks, automatic masks, SAM 3


@pytest.mark.slow
def test_video_tracking_notebook(kernel_env: Path, tmp_path: Path) -> None:
    nb = _execute(nbformat.read(NOTEBOOKS_DIR / EXPECTED[1], as_version=4), tmp_path)
    text = _text(nb)
    assert re.search(rf"^{NUM_FRAMES} frames, \d+ tracks -> \S+tracked.mp4 \(libx264\)$", text, re.M)
    # the inline video: an embedded H.264 MP4 with every frame
    html = [o.data["text/html"] for o in _outputs(nb) if "text/html" in o.get("data", {})]
    assert len(html) == 1 and "<video" in html[0]
    payload = re.search(r'src="data:video/mp4;base64,([^"]+)"', html[0]).group(1)
    clip = tmp_path / "inline.mp4"
    clip.write_bytes(base64.b64decode(payload))
    with av.open(str(clip)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in container.decode(video=0)) == NUM_FRAMES
    assert clip.read_bytes() == (tmp_path / "outputs/02_video_tracking/tracked.mp4").read_bytes()
    assert _images(nb) >= 1  # tracks over time
    assert re.search(r"^\s+1\s+\w+\s+0\s+", text, re.M)  # track 1 starts at frame 0
    assert re.search(rf"^SAM 3 tracked {NUM_FRAMES} frames, \d+ tracks: \[", text, re.M)


@pytest.mark.slow
def test_auto_labeling_notebook(kernel_env: Path, tmp_path: Path) -> None:
    nb = _execute(nbformat.read(NOTEBOOKS_DIR / EXPECTED[2], as_version=4), tmp_path)
    text = _text(nb)
    dataset = tmp_path / "outputs/03_auto_labeling/dataset"
    assert "4 images: 4 labeled, 0 already done, 0 failed" in text
    assert "4 images: 0 labeled, 4 already done, 0 failed" in text  # the rerun resumed
    coco = json.loads((dataset / "annotations.json").read_text())
    assert len(coco["images"]) == 4 and coco["annotations"]
    labels = sorted(p.name for p in (dataset / "labels").glob("*.txt"))
    assert labels == [f"scene_{i:02d}.txt" for i in range(4)]
    lines = sum(len(p.read_text().splitlines()) for p in (dataset / "labels").glob("*.txt"))
    assert lines == len(coco["annotations"])
    assert _images(nb) >= 1  # the grid


@pytest.mark.slow
def test_label_quality_notebook(kernel_env: Path, tmp_path: Path) -> None:
    nb = _execute(nbformat.read(NOTEBOOKS_DIR / EXPECTED[3], as_version=4), tmp_path)
    text = _text(nb)
    work = tmp_path / "outputs/04_label_quality"
    assert re.search(r"^4 images, \d+ ground-truth instances$", text, re.M)
    assert re.search(r"^2 images, 2 classes: mask AP ", text, re.M)  # the held-out half
    assert sorted(p.name for p in (work / "report_before").iterdir()) == ["metrics.json", "pr", "report.html",
                                                                          "report.md", "worst"]
    tuned = CaptionOntology.from_yaml(work / "tuned.yaml")
    assert all(tuned.threshold(c) is not None for c in tuned.classes())
    assert re.search(r"^\s+rectangle: F1 before .+, after .+$", text, re.M)
    assert "| single mask |" in text and "| best of 3 masks |" in text
    assert _images(nb) >= 2  # a PR curve, the comparison chart
