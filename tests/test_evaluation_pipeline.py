"""Label quality on real pipeline output (tiny random models): a ``label`` folder and its reviewed
images as predictions and ground truth, ``GroundedSAM.evaluate`` predicting the ground truth's
images itself, and ``grounded-sam eval``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grounded_sam import GroundedSAM
from grounded_sam.app.review import ReviewFolder
from grounded_sam.evaluation import evaluate, read_label_folder
from grounded_sam.evaluation.data import EvalInputError, from_detections
from grounded_sam.export.records import detections_to_record
from tiny import SAM_IMAGE_SIZE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_models):
    owl, sam = tiny_models
    gs = GroundedSAM({"a cat": "cat", "a dog": "dog"}, detector=str(owl), segmenter="sam2.1_hiera_tiny",
                     checkpoint=sam, image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0, nms_iou=0.2)
    root = tmp_path_factory.mktemp("eval")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate([(48, 64), (40, 40), (64, 52), (50, 50)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    report = gs.label(images, ".png", root / "labeled", progress=False)
    assert report.labeled == 4
    return gs, images, root


def _coco_gt(gs, images: Path, path: Path) -> None:
    """A COCO ground truth: the pipeline's own masks, one instance dropped per image."""
    out_images, anns = [], []
    for i, name in enumerate(sorted(p.name for p in images.iterdir()), start=1):
        dets = gs.predict(images / name)
        record = detections_to_record(dets, name, dets.mask.shape[2], dets.mask.shape[1], gs.classes)
        out_images.append({"id": i, "file_name": name, "width": record["width"], "height": record["height"]})
        for inst in record["instances"][1:]:
            if inst["area"]:
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": inst["class_id"] + 1, "iscrowd": 0,
                             "segmentation": inst["segmentation"], "bbox": inst["bbox"], "area": inst["area"]})
    path.write_text(json.dumps({"images": out_images, "annotations": anns,
                                "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))


def test_label_folder_and_reviewed_images(setup) -> None:
    gs, images, root = setup
    folder = root / "labeled"
    preds = read_label_folder(folder)
    assert sorted(preds.images) == [f"img{i}.png" for i in range(4)] and preds.classes == ["cat", "dog"]
    with pytest.raises(EvalInputError, match="no reviewed images yet"):
        evaluate(folder, folder)
    review = ReviewFolder(folder)
    rel = review.names[1]
    before = review.detections(rel)
    review.save(rel, before[:2])  # a person kept two instances
    report = evaluate(folder, folder, ground_truth_images_only=True)
    assert report.images == 1 and report.iou_type == "segm"
    row = {k: sum(r[k] for r in report.per_class.values()) for k in ("TP", "FP", "FN")}
    model = read_label_folder(folder)  # for the reviewed image: the model's own instances, kept by the review
    assert sum(1 for i in model.instances if i.image == rel) == len(before)
    assert row == {"TP": 2, "FP": len(before) - 2, "FN": 0}  # a person kept 2 of the model's instances
    with pytest.raises(EvalInputError, match="not in the ground truth"):
        evaluate(folder, folder)


def test_pipeline_evaluate_predicts_the_ground_truth_images(setup, tmp_path) -> None:
    gs, images, root = setup
    gt = tmp_path / "gt.json"
    _coco_gt(gs, images, gt)
    (tmp_path / "img0.png").write_bytes((images / "img0.png").read_bytes())
    report = gs.evaluate(gt, images=images, batch_size=3)
    dets = {p.name: gs.predict(p) for p in sorted(images.iterdir())}
    same = evaluate(gt, from_detections(dets, gs.classes))
    assert report.coco == same.coco and report.sa_co == same.sa_co and report.per_class == same.per_class
    assert 0.0 < report.ap <= 1.0 and sum(r["FP"] for r in report.per_class.values()) >= 4  # one dropped per image
    with pytest.raises(EvalInputError, match="not in"):
        gs.evaluate(gt)  # the default image folder is the ground truth's, which holds only img0.png


def test_cli_eval_writes_a_report_or_nothing(setup, tmp_path) -> None:
    gs, images, root = setup
    gt = tmp_path / "gt.json"
    _coco_gt(gs, images, gt)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "grounded_sam.cli", "eval", *a], cwd=ROOT,  # noqa: E731
                                    capture_output=True, text=True, env=env, timeout=300)
    r = run("--gt", str(gt), "--pred", str(root / "labeled"), "--out", str(tmp_path / "report"))
    assert r.returncode == 0, r.stderr
    assert "mask AP" in r.stdout and "cgF1" in r.stdout
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert not (tmp_path / "report" / "worst").exists()  # the images are not next to gt.json
    r = run("--gt", str(gt), "--pred", str(root / "labeled"), "--images", str(images), "--out", str(tmp_path / "r4"))
    assert r.returncode == 0 and len(list((tmp_path / "r4" / "worst").iterdir())) > 0
    assert metrics["coco"]["segm"] == evaluate(gt, root / "labeled").coco["segm"]
    r = run("--gt", str(gt), "--pred", str(root / "labeled"), "--class-map", "cat:tiger", "--out", str(tmp_path / "r2"))
    assert r.returncode == 2 and "'tiger'" in r.stderr and not (tmp_path / "r2").exists()
    r = run("--gt", str(gt), "--pred", str(root / "labeled"), "--class-map", "cat", "--out", str(tmp_path / "r3"))
    assert r.returncode == 2 and "prediction_name:ground_truth_name" in r.stderr


def test_cli_tune_writes_an_ontology_that_label_takes(setup, tmp_path, tiny_models) -> None:
    """``grounded-sam tune`` on a COCO ground truth: the tuned ontology has a threshold per class,
    ``label --ontology`` reads it, and a bad objective is refused before any model loads."""
    from ontologies import CaptionOntology

    gs, images, root = setup
    gt = tmp_path / "gt.json"
    _coco_gt(gs, images, gt)
    owl, sam = tiny_models
    models = ["--prompt", "a cat:cat, a dog:dog", "--detector", str(owl), "--segmenter", "sam2.1_hiera_tiny",
              "--checkpoint", str(sam), "--image-size", str(SAM_IMAGE_SIZE), "--device", "cpu", "--nms-iou", "0.2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "grounded_sam.cli", *a], cwd=ROOT,  # noqa: E731
                                    capture_output=True, text=True, env=env, timeout=600)
    r = run("tune", "--gt", str(gt), "--images", str(images), "--out", str(tmp_path / "tuned.yaml"), "--floor", "0.0",
            "--report", str(tmp_path / "report"), *models)
    assert r.returncode == 0, r.stderr
    tuned = CaptionOntology.from_yaml(tmp_path / "tuned.yaml")
    assert tuned.classes() == ["cat", "dog"] and all(tuned.threshold(c) is not None for c in tuned.classes())
    assert (tmp_path / "report" / "metrics.json").is_file() and "F1 after" in r.stdout
    r = run("tune", "--gt", str(gt), "--out", str(tmp_path / "x.yaml"), "--objective", "accuracy", *models)
    assert r.returncode == 2 and "objective must be" in r.stderr and not (tmp_path / "x.yaml").exists()
    r = run("tune", "--gt", str(gt), "--out", str(tmp_path / "x.yaml"), "--candidates", "a kitten", *models)
    assert r.returncode == 2 and "class=caption" in r.stderr and not (tmp_path / "x.yaml").exists()
    models[:2] = ["--ontology", str(tmp_path / "tuned.yaml")]
    r = run("label", str(images), "--out", str(tmp_path / "relabeled"), "--extension", ".png", *models)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "relabeled" / ".grounded_sam" / "manifest.json").read_text())
    assert manifest["fingerprint"]["config"]["ontology"]["classes"]["cat"]["threshold"] == tuned.threshold("cat")


def test_report_draws_the_worst_images(setup, tmp_path) -> None:
    gs, images, root = setup
    gt = tmp_path / "gt.json"
    _coco_gt(gs, images, gt)
    report = gs.evaluate(gt, images=images)
    assert report.worst_images  # one instance was dropped from the ground truth of every image
    out = report.save(tmp_path / "report")
    drawn = sorted((out / "worst").iterdir())
    assert len(drawn) == len(report.worst_images) and drawn[0].name.startswith("01_")
    from PIL import Image

    first = report.worst_images[0]["image"]
    w = report.data[0].images[first].width
    assert Image.open(drawn[0]).size[0] > 2 * w  # ground truth and predictions side by side
    assert (out / "report.html").read_text().count("data:image/png;base64,") == len(drawn) + len(report.classes)


def test_compare_pipelines_one_pass_each(setup, tmp_path, tiny_models) -> None:
    """``compare`` (Python) and ``eval --compare`` (presets as YAML files): one row per pipeline,
    numbers that match evaluating the same pass by hand, and the comparison folder."""
    from grounded_sam.evaluation.compare import COLUMNS, compare

    gs, images, root = setup
    gt = tmp_path / "gt.json"
    _coco_gt(gs, images, gt)
    owl, sam = tiny_models
    coarse = lambda: GroundedSAM({"cat": "cat", "dog": "dog"}, detector=str(owl), segmenter="sam2.1_hiera_tiny",  # noqa: E731
                                 checkpoint=sam, image_size=128, device="cpu", box_threshold=0.0, nms_iou=0.2)
    result = compare({"ours": gs, "coarse": coarse}, gt, images=images, floor=0.0)
    assert list(result.rows) == ["ours", "coarse"] and result.images == 4
    for row in result.rows.values():
        assert set(row) == set(COLUMNS) and row["s/image"] > 0 and 0 <= row["box AP"] <= 1
        assert row["F1 tuned"] >= row["F1"] - 1e-12  # tuning on the same images cannot do worse
    same = evaluate(gt, predict_ground_truth_of(gs, gt, images))
    assert result.rows["ours"]["mask AP"] == pytest.approx(same.coco["segm"]["AP"], abs=1e-12)
    assert result.rows["ours"]["cgF1"] == pytest.approx(same.cgf1, abs=1e-9)
    out = result.save(tmp_path / "cmp")
    assert sorted(p.name for p in out.iterdir()) == ["comparison.json", "comparison.md", "comparison.png"]

    presets = []
    for name, size in (("p256", SAM_IMAGE_SIZE), ("p128", 128)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"detector: {{name: {owl}, box_threshold: 0.0, nms_iou: 0.2}}\n"
                        f"segmenter: {{name: sam2.1_hiera_tiny, checkpoint: {sam}, image_size: {size}}}\n")
        presets.append(str(path))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "grounded_sam.cli", "eval", "--gt", str(gt), "--images", str(images),
                        "--compare", ",".join(presets), "--prompt", "a cat:cat, a dog:dog", "--device", "cpu",
                        "--out", str(tmp_path / "cmp2")], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "cmp2" / "comparison.json").read_text())["rows"]
    assert list(rows) == presets and "| pipeline | mask AP" in r.stdout
    r = subprocess.run([sys.executable, "-m", "grounded_sam.cli", "eval", "--gt", str(gt), "--compare", "nosuch"],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "nosuch" in r.stderr


def predict_ground_truth_of(gs, gt, images):
    """Every candidate of ``gs`` at a floor of 0 (as compare's pass), for the hand-made check."""
    from grounded_sam.evaluation.data import read_ground_truth
    from grounded_sam.evaluation.run import predict_ground_truth
    from grounded_sam.evaluation.candidates import candidate_pass

    truth = read_ground_truth(gt)
    with candidate_pass(gs, 0.0):
        return predict_ground_truth(gs, truth, gt, images)[0]


@pytest.mark.slow
def test_the_quality_loop_through_the_cli(setup, tmp_path, tiny_models) -> None:
    """label -> review some images (the app's review API) -> tune on the reviewed ones (cgF1, a caption search) ->
    label --thresholds --overwrite (reviewed records kept) -> eval against the reviewed images."""
    from ontologies import CaptionOntology

    gs, images, root = setup
    owl, sam = tiny_models
    models = ["--prompt", "a cat:cat, a dog:dog", "--detector", str(owl), "--segmenter", "sam2.1_hiera_tiny",
              "--checkpoint", str(sam), "--image-size", str(SAM_IMAGE_SIZE), "--device", "cpu", "--nms-iou", "0.2",
              "--box-threshold", "0.0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "grounded_sam.cli", *a], cwd=ROOT,  # noqa: E731
                                    capture_output=True, text=True, env=env, timeout=600)
    ds = tmp_path / "ds"
    assert run("label", str(images), "--out", str(ds), "--extension", ".png", *models).returncode == 0
    review = ReviewFolder(ds)
    fixed = {}
    for rel in review.names[:2]:  # a person keeps the first instance of two images
        fixed[rel] = review.detections(rel)[:1]
        review.save(rel, fixed[rel])
    r = run("tune", "--gt", str(ds), "--out", str(tmp_path / "tuned.yaml"), "--floor", "0.0", "--objective", "cgf1",
            "--candidates", "cat=a kitten|a feline", "--report", str(tmp_path / "tuning"), *models)
    assert r.returncode == 0, r.stderr
    tuned = CaptionOntology.from_yaml(tmp_path / "tuned.yaml")
    tuning = json.loads((tmp_path / "tuning" / "tuning.json").read_text())
    assert tuning["objective"] == "cgf1" and tuning["overall"]["after"]["cgF1"] >= tuning["overall"]["before"]["cgF1"]
    assert [r["captions"] for r in tuning["caption_table"]["cat"]][:3] == [["a cat"], ["a kitten"], ["a feline"]]
    assert set(tuned.captions("cat")) <= {"a cat", "a kitten", "a feline"} and tuned.captions("dog") == ["a dog"]
    r = run("label", str(images), "--out", str(ds), "--extension", ".png", "--thresholds", str(tmp_path / "tuned.yaml"),
            *models)
    assert r.returncode == 2 and "threshold" in r.stderr  # other settings: refused without --overwrite
    r = run("label", str(images), "--out", str(ds), "--extension", ".png", "--thresholds", str(tmp_path / "tuned.yaml"),
            "--overwrite", *models)
    assert r.returncode == 0, r.stderr
    assert "2 reviewed kept" in r.stdout
    assert ("takes its thresholds only" in r.stderr) == (tuned.captions("cat") != ["a cat"])  # searched captions: said
    manifest = json.loads((ds / ".grounded_sam" / "manifest.json").read_text())
    onto = manifest["fingerprint"]["config"]["ontology"]["classes"]
    assert {c: onto[c]["threshold"] for c in onto} == {c: tuned.threshold(c) for c in tuned.classes()}
    after = ReviewFolder(ds)
    for rel, det in fixed.items():  # the reviewed records are as the person left them
        assert after.is_reviewed(rel) and np.array_equal(after.detections(rel).mask, det.mask)
    r = run("eval", "--gt", str(ds), "--pred", str(ds), "--gt-images-only", "--out", str(tmp_path / "report"))
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["images"] == 2
    assert metrics == json.loads(json.dumps(evaluate(ds, ds, ground_truth_images_only=True).to_dict()))
