"""GroundedSAM with the ``sam3`` detector: SAM 3's own masks, no SAM 2 pass unless asked, exemplars."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detectors import load_detector
from grounded_sam import GroundedSAM
from ontologies import CaptionOntology

rng = np.random.default_rng(0)
IMAGES = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), rng.integers(0, 255, (60, 41, 3), dtype=np.uint8)]
ONTO = CaptionOntology({"a cat": "cat", "the cat": "cat", "a dog": "dog"})
THRESHOLD = 0.4  # the tiny random model's scores sit around 0.45


@pytest.fixture(scope="module")
def sam3_dir(tiny_sam3_dir) -> str:
    return tiny_sam3_dir


@pytest.fixture(scope="module")
def pipeline(sam3_dir) -> GroundedSAM:
    return GroundedSAM(ONTO, detector=sam3_dir, device="cpu", box_threshold=THRESHOLD)


def test_sam3_masks_are_used_without_a_segmenter(pipeline, sam3_dir) -> None:
    assert pipeline.predictor is None  # no SAM 2 is even built
    detector = load_detector("sam3", model_id=sam3_dir, device="cpu", box_threshold=THRESHOLD)
    expected = detector.detect(IMAGES, ONTO)
    got = pipeline.predict_batch(IMAGES)
    assert sum(len(d) for d in got) > 0
    for g, e, image in zip(got, expected, IMAGES, strict=True):
        assert g.mask.shape == (len(e), *image.shape[:2]) and g.mask.dtype == bool
        np.testing.assert_array_equal(g.mask, e.mask)
        np.testing.assert_array_equal(g.xyxy, e.xyxy)
        np.testing.assert_array_equal(g.confidence, e.confidence)
        np.testing.assert_array_equal(g.class_id, e.class_id)
        np.testing.assert_array_equal(g.data["caption"], e.data["caption"])
        np.testing.assert_array_equal(g.data["mask_score"], e.confidence)  # SAM 3 scores its masks
    single = pipeline.predict(IMAGES[1])
    np.testing.assert_array_equal(single.mask, got[1].mask)


def test_an_explicit_segmenter_re_segments_the_boxes(sam3_dir, tiny_models) -> None:
    sam = tiny_models.sam
    both = GroundedSAM(ONTO, detector=sam3_dir, segmenter="sam2.1_hiera_tiny", checkpoint=sam, image_size=256,
                       device="cpu", box_threshold=THRESHOLD)
    assert both.predictor is not None
    alone = GroundedSAM(ONTO, detector=sam3_dir, device="cpu", box_threshold=THRESHOLD)
    (a,), (b,) = both.predict_batch(IMAGES[:1]), alone.predict_batch(IMAGES[:1])
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.xyxy, b.xyxy)  # the same detections ...
    assert not np.array_equal(a.mask, b.mask)  # ... segmented by SAM 2
    both.predictor.set_image(IMAGES[0])
    masks, scores, _ = both.predictor.predict(box=a.xyxy[:1], multimask_output=False)
    np.testing.assert_array_equal(a.mask[0], masks[0].astype(bool))


def test_exemplars_reach_the_detector(pipeline, sam3_dir) -> None:
    boxes = {"dog": [[10, 12, 60, 70]]}
    detector = load_detector("sam3", model_id=sam3_dir, device="cpu", box_threshold=THRESHOLD)
    (expected,) = detector.detect([IMAGES[0]], ONTO, exemplars=boxes, negative_exemplars={"dog": [[70, 20, 120, 90]]})
    got = pipeline.predict(IMAGES[0], exemplars=boxes, negative_exemplars={"dog": [[70, 20, 120, 90]]})
    np.testing.assert_array_equal(got.mask, expected.mask)
    np.testing.assert_array_equal(got.confidence, expected.confidence)
    plain = pipeline.predict(IMAGES[0])
    assert len(plain) != len(got) or not np.array_equal(plain.confidence, got.confidence)
    with pytest.raises(ValueError, match="outside"):
        pipeline.predict(IMAGES[0], exemplars={"dog": [[500, 500, 600, 600]]})


def test_exemplars_with_a_text_only_detector_say_they_need_sam3(tiny_models) -> None:
    owl, sam = tiny_models
    gs = GroundedSAM(ONTO, detector=str(owl), checkpoint=sam, image_size=256, device="cpu")
    with pytest.raises(ValueError, match="sam3"):
        gs.predict(IMAGES[0], exemplars={"dog": [[1, 1, 20, 20]]})


def test_sam3_preset_and_labeling(sam3_dir, tmp_path) -> None:
    gs = GroundedSAM.from_config("sam3", ontology=ONTO, detector_model_id=sam3_dir, device="cpu",
                                 box_threshold=THRESHOLD)
    assert gs.predictor is None and gs.fingerprint()["segmenter"] is None
    assert gs.fingerprint()["detector"]["family"] == "sam3" and gs.fingerprint()["detector"]["mask_threshold"] == 0.5
    assert gs.spec()["segmenter"] is None
    folder = tmp_path / "images"
    folder.mkdir()
    from PIL import Image

    for i, image in enumerate(IMAGES):
        Image.fromarray(image).save(folder / f"{i}.png")
    report = gs.label(folder, extension=".png", output_folder=tmp_path / "out", progress=False)
    coco = json.loads(next((tmp_path / "out").rglob("*.json")).read_text())
    assert report.ok and report.labeled == 2 and report.instances_written == len(coco["annotations"])
    assert len(coco["images"]) == 2 and len(coco["annotations"]) > 0
    assert {c["name"] for c in coco["categories"]} == {"cat", "dog"}


def test_label_with_exemplars(pipeline, tmp_path) -> None:
    """``label`` gives each image the exemplars meant for it, keeps them in the fingerprint, and a
    box that does not fit one image fails that image alone."""
    from PIL import Image

    from grounded_sam.labeling import LabelingConfigError

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(IMAGES[0]).save(folder / name)
    every = {"dog": [[10, 12, 60, 70]]}
    own = {"b.png": {"exemplars": {"dog": [[70, 20, 120, 90]]}, "negative_exemplars": {"cat": [[5, 5, 40, 40]]}},
           "c.png": {"exemplars": {"dog": [[100, 80, 200, 200]]}}}  # outside the 128 x 96 image
    report = pipeline.label(folder, ".png", tmp_path / "out", format="jsonl", progress=False,
                            exemplars=every, image_exemplars=own)
    assert report.labeled == 2 and list(report.failed) == [str(folder / "c.png")]
    assert "outside" in report.failed[str(folder / "c.png")]
    records = {r["file_name"].rsplit("/", 1)[-1]: r
               for r in map(json.loads, (tmp_path / "out" / "annotations.jsonl").read_text().splitlines())}
    expected = {"a.png": pipeline.predict(IMAGES[0], exemplars=every),
                "b.png": pipeline.predict(IMAGES[0], exemplars=own["b.png"]["exemplars"],
                                          negative_exemplars=own["b.png"]["negative_exemplars"])}
    assert sorted(records) == ["a.png", "b.png"]
    for name, dets in expected.items():
        np.testing.assert_allclose([i["score"] for i in records[name]["instances"]], dets.confidence, atol=1e-6)
    assert [i["score"] for i in records["a.png"]["instances"]] != [i["score"] for i in records["b.png"]["instances"]]
    with pytest.raises(LabelingConfigError):  # other boxes, other labels: not mixed into this dataset
        pipeline.label(folder, ".png", tmp_path / "out", format="jsonl", progress=False, exemplars={"dog": [[0, 0, 9, 9]]})
    with pytest.raises(ValueError, match="image_exemplars"):
        pipeline.label(folder, ".png", tmp_path / "x", image_exemplars={"a.png": {"dog": [[1, 1, 5, 5]]}})


def test_cli_label_with_an_exemplars_file(sam3_dir, tmp_path) -> None:
    from typer.testing import CliRunner

    from PIL import Image

    from grounded_sam.cli import app

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(IMAGES[0]).save(folder / name)
    spec = {"exemplars": {"dog": [[10, 12, 60, 70]]}, "images": {"b.png": {"dog": [[70, 20, 120, 90]]}}}
    (tmp_path / "ex.json").write_text(json.dumps(spec))
    args = ["label", str(folder), "--out", str(tmp_path / "out"), "--format", "jsonl", "--extension", ".png",
            "--prompt", "a cat:cat, a dog:dog", "--detector", sam3_dir, "--device", "cpu",
            "--box-threshold", str(THRESHOLD), "--exemplars", str(tmp_path / "ex.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    gs = GroundedSAM({"a cat": "cat", "a dog": "dog"}, detector=sam3_dir, device="cpu", box_threshold=THRESHOLD)
    expected = gs.label(folder, ".png", tmp_path / "api", format="jsonl", progress=False,
                        exemplars=spec["exemplars"], image_exemplars={"b.png": {"exemplars": spec["images"]["b.png"]}})
    assert expected.labeled == 2
    assert (tmp_path / "out" / "annotations.jsonl").read_bytes() == (tmp_path / "api" / "annotations.jsonl").read_bytes()


def test_checkpoint_without_a_segmenter_is_refused(sam3_dir) -> None:
    with pytest.raises(ValueError, match="segmenter"):
        GroundedSAM(ONTO, detector=sam3_dir, device="cpu", checkpoint="sam.pt")


@pytest.mark.slow
def test_cli_segment_with_sam3_and_an_exemplars_file(sam3_dir, tmp_path) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    from grounded_sam.cli.commands import read_exemplars

    Image.fromarray(IMAGES[0]).save(tmp_path / "a.png")
    Image.fromarray(IMAGES[0]).save(tmp_path / "b.png")
    spec = {"exemplars": {"dog": [[10, 12, 60, 70]]}, "images": {"b.png": {"dog": [[70, 20, 120, 90]]}}}
    (tmp_path / "ex.json").write_text(json.dumps(spec))
    lookup = read_exemplars(tmp_path / "ex.json").for_image
    assert lookup("a.png") == ({"dog": [[10, 12, 60, 70]]}, None)
    assert lookup("b.png") == ({"dog": [[70, 20, 120, 90]]}, None)
    out = subprocess.run(
        [sys.executable, "-m", "grounded_sam.cli", "segment", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
         "--out", str(tmp_path / "out"), "--prompt", "a cat:cat, a dog:dog", "--detector", sam3_dir,
         "--device", "cpu", "--box-threshold", str(THRESHOLD), "--exemplars", str(tmp_path / "ex.json")],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2/2 images segmented" in out.stdout
    gs = GroundedSAM({"a cat": "cat", "a dog": "dog"}, detector=sam3_dir, device="cpu", box_threshold=THRESHOLD)
    for name in ("a.png", "b.png"):
        record = json.loads((tmp_path / "out" / name.replace(".png", ".json")).read_text())
        positive, _ = lookup(name)
        expected = gs.predict(IMAGES[0], exemplars=positive)
        assert len(record["instances"]) == len(expected) > 0
        np.testing.assert_allclose([i["score"] for i in record["instances"]], expected.confidence, atol=1e-6)  # JSON keeps 6 decimals
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    out = subprocess.run(
        [sys.executable, "-m", "grounded_sam.cli", "segment", str(tmp_path / "a.png"), "--prompt", "a dog",
         "--exemplars", str(bad)], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120,
    )
    assert out.returncode != 0 and "not valid JSON" in out.stderr


@pytest.fixture(scope="module")
def sam3_video_dir(tmp_path_factory) -> str:
    from tiny_detectors import tiny_sam3_video

    torch.manual_seed(0)
    model, processor = tiny_sam3_video(score_threshold_detection=0.53, new_det_thresh=0.53)
    folder = tmp_path_factory.mktemp("sam3_video")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.mark.slow
def test_track_with_sam3_runs_the_concept_tracker(sam3_video_dir) -> None:
    from grounded_sam.tracking.sam3 import Sam3ConceptTracker
    from grounded_sam.assets.samples import SyntheticScene

    frames = list(SyntheticScene((72, 96), objects=3, seed=1).frames(4))
    gs = GroundedSAM(ONTO, detector=sam3_video_dir, device="cpu")  # facebook/sam3's layout: detector + tracker
    assert gs.predictor is None
    got = list(gs.track(frames))
    expected = list(Sam3ConceptTracker(ONTO, sam3_video_dir, device="cpu", nms_iou=0.5).track(frames))
    assert [t for t, _ in got] == [0, 1, 2, 3]
    assert sum(len(d) for _, d in got) > 0
    for (_, g), (_, e) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g.tracker_id, e.tracker_id)
        np.testing.assert_array_equal(g.class_id, e.class_id)
        np.testing.assert_array_equal(g.mask, e.mask)
        np.testing.assert_array_equal(g.confidence, e.confidence)
    with pytest.raises(ValueError, match="redetect_every"):
        next(gs.track(frames, redetect_every=5))
    with pytest.raises(ValueError, match="segmenter"):
        next(gs.track(frames, tracker="sam2"))


def test_cli_models_lists_sam3() -> None:
    from typer.testing import CliRunner

    from grounded_sam.cli import app

    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    rows = {line[2:].split()[0]: line[2:].split()[1] for line in result.output.splitlines()
            if line[:2] in ("  ", "* ") and len(line.split()) > 2}  # "* " marks the defaults
    assert rows["sam3"] == "facebook/sam3" and rows["grounding-dino"] == "iSEE-Laboratory/llmdet_tiny"
    assert rows["sam2.1_hiera_tiny"] == "facebook/sam2.1-hiera-tiny"
