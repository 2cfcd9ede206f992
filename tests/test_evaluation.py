"""Label quality metrics: COCO AP equal to pycocotools' COCOeval run by hand on the same files,
SAM 3's cgF1 / pmF1 / IL_MCC against a brute-force reading of its definition, per-class counts and
confusions on cases worked out by hand, and clear errors for inputs that cannot be scored."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from grounded_sam.evaluation import EvalInputError, evaluate
from grounded_sam.evaluation.coco_ap import STAT_NAMES
from grounded_sam.evaluation.data import EvalImage, EvalInstance, EvalSet

CLASSES = ["cat", "dog", "bird", "fish"]  # fish: never in the ground truth


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _blob(rng, h: int, w: int) -> np.ndarray:
    y0, x0 = rng.integers(0, h - 12), rng.integers(0, w - 12)
    y1, x1 = rng.integers(y0 + 8, h + 1), rng.integers(x0 + 8, w + 1)
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    if rng.random() < 0.5:  # not always a rectangle
        m[y0:(y0 + y1) // 2, x0:(x0 + x1) // 2] = False
    return m


def _jitter(rng, m: np.ndarray) -> np.ndarray:
    shift = rng.integers(-2, 3, 2)
    out = np.roll(m, tuple(shift), axis=(0, 1))
    return out if out.any() else m


def make_case(tmp_path: Path, seed: int = 0, n_images: int = 12) -> tuple[Path, Path, list[dict]]:
    """A COCO ground truth (polygons, compressed and uncompressed RLE, crowd regions, images without
    ground truth, a class without ground truth) and a results list (near and far predictions,
    duplicates, a class never predicted) with masks and boxes."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for i in range(1, n_images + 1):
        h, w = int(rng.integers(40, 200)), int(rng.integers(40, 200))
        images.append({"id": i, "file_name": f"sub/img{i:03d}.jpg", "width": w, "height": h})
        if i % 5 == 0:
            continue  # an image without ground truth
        for _ in range(int(rng.integers(1, 5))):
            cat = int(rng.integers(1, 4))  # cat, dog, bird
            m = _blob(rng, h, w)
            kind = rng.integers(0, 3)
            if kind == 0:  # a polygon around the blob's box
                ys, xs = np.nonzero(m)
                x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                seg = [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]]
                m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, h, w))).astype(bool)
            elif kind == 1:
                seg = _rle(m)
            else:  # uncompressed RLE
                flat = m.flatten(order="F").astype(np.uint8)
                runs, value, count = [], 0, 0
                for v in flat:
                    if v == value:
                        count += 1
                    else:
                        runs.append(count)
                        value, count = v, 1
                runs.append(count)
                seg = {"size": [h, w], "counts": [int(r) for r in runs]}
            crowd = int(rng.random() < 0.12)
            ann = {"id": len(anns) + 1, "image_id": i, "category_id": cat, "segmentation": seg, "iscrowd": crowd,
                   "area": float(m.sum()) * (3.0 if len(anns) % 3 == 0 else 1.0),  # COCOeval reads the file's area
                   "bbox": mask_utils.toBbox(_rle(m)).tolist()}
            anns.append(ann)
            for _ in range(int(rng.integers(0, 3))):  # near predictions (duplicates included), sometimes mislabeled
                pm = _jitter(rng, m)
                pcat = cat if rng.random() < 0.85 else int(rng.choice([1, 2, 4]))
                results.append({"image_id": i, "category_id": pcat, "score": round(float(rng.random()), 4),
                                "segmentation": _rle(pm), "bbox": mask_utils.toBbox(_rle(pm)).tolist()})
        for _ in range(int(rng.integers(0, 2))):  # far (false) predictions
            pm = _blob(rng, h, w)
            results.append({"image_id": i, "category_id": int(rng.choice([1, 2, 4])), "score": round(float(rng.random()), 4),
                            "segmentation": _rle(pm), "bbox": mask_utils.toBbox(_rle(pm)).tolist()})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": k, "name": n} for k, n in enumerate(CLASSES, start=1)]}
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    return gt_path, res_path, results


def reference_stats(gt_path: Path, results: list[dict], iou_type: str) -> np.ndarray:
    """COCOeval as a user runs it: the file, and results of one kind."""
    keep = "segmentation" if iou_type == "segm" else "bbox"
    only = [{k: v for k, v in r.items() if k in ("image_id", "category_id", "score", keep)} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(only), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_ap_equals_cocoeval(tmp_path, seed) -> None:
    gt_path, res_path, results = make_case(tmp_path, seed)
    report = evaluate(gt_path, res_path)
    assert report.iou_type == "segm" and set(report.coco) == {"segm", "bbox"}
    for iou_type in ("segm", "bbox"):
        ref = reference_stats(gt_path, results, iou_type)
        ours = np.array([report.coco[iou_type][name] for name in STAT_NAMES])
        np.testing.assert_allclose(ours, ref.stats, rtol=0, atol=1e-9)
        if iou_type == "segm":  # per-class AP: COCOeval's precision array, area "all", 100 detections
            for k, name in enumerate(CLASSES):
                p = ref.eval["precision"][:, :, k, 0, -1]
                expected = float(p[p > -1].mean()) if (p > -1).any() else None
                got = report.per_class[name]["AP"]
                assert (got is None and expected is None) or abs(got - expected) < 1e-9, name
    assert report.per_class["fish"]["AP"] is None and report.per_class["fish"]["gt_instances"] == 0


def test_no_predictions_at_all_scores_zero(tmp_path) -> None:
    gt_path, res_path, _ = make_case(tmp_path)
    res_path.write_text("[]")
    report = evaluate(gt_path, res_path)
    assert report.coco["segm"]["AP"] == 0.0 and report.sa_co["segm"]["cgF1"] == 0.0
    assert all(row["TP"] == 0 and row["FP"] == 0 for row in report.per_class.values())


# ---------------------------------------------------------------------------- SA-Co (SAM 3)
def _box(x: float, y: float, w: float, h: float, image: str, cat: str, score: float = 1.0, crowd: bool = False):
    return EvalInstance(image, cat, (x, y, w, h), None, crowd, score)


def _brute_force_sa_co(gt: EvalSet, pred: EvalSet) -> dict:
    """SAM 3's definition read directly: best assignment by trying every one, counts summed."""
    thresholds = np.linspace(0.5, 0.95, 10)
    tp = fp = pm_fp = fn = np.zeros(10)
    il = {"TP": 0, "FP": 0, "TN": 0, "FN": 0}
    for image in gt.images:
        for cat in gt.classes:
            g = [x for x in gt.instances if x.image == image and x.category == cat and not x.iscrowd]
            d = [x for x in pred.instances if x.image == image and x.category == cat]
            if not g and not d:
                il["TN"] += 1
                continue
            ious = np.array(mask_utils.iou([list(x.bbox) for x in d], [list(x.bbox) for x in g], [0] * len(g))
                            ).reshape(len(d), len(g)) if g and d else np.zeros((len(d), len(g)))
            best = []
            if g and d:
                small, large = (d, g) if len(d) <= len(g) else (g, d)
                for perm in itertools.permutations(range(len(large)), len(small)):
                    pairs = [(i, j) if small is d else (j, i) for i, j in enumerate(perm)]
                    value = sum(ious[i, j] for i, j in pairs)
                    if not best or value > best[0] + 1e-12:
                        best = [value, [ious[i, j] for i, j in pairs]]
            scores = np.array(best[1] if best else [])
            hits = np.array([(scores >= t).sum() for t in thresholds])
            tp, fp, fn = tp + hits, fp + len(d) - hits, fn + len(g) - hits
            if g and d:
                il["TP"] += 1
                pm_fp = pm_fp + len(d) - hits
            else:
                il["FP" if d else "FN"] += 1
    rec = tp / (tp + fn + 1e-4)
    prec = tp / (tp + pm_fp + 1e-4)
    f1 = 2 * prec * rec / (prec + rec + 1e-4)
    a, b, c, e = il["TP"], il["FP"], il["TN"], il["FN"]
    mcc = (a * c - b * e) / (((a + b) * (a + e) * (c + b) * (c + e)) ** 0.5 + 1e-6)
    return {"cgF1": float((100 * f1 * mcc).mean()), "cgF1@50": float(100 * f1[0] * mcc), "pmF1": float(f1.mean()),
            "IL_MCC": float(mcc), "image_level": il}


def test_sa_co_metrics_follow_the_definition() -> None:
    images = {k: EvalImage(k, 100, 100) for k in ("a", "b", "c", "d")}
    gt = EvalSet(images, [
        _box(10, 10, 20, 20, "a", "cat"), _box(50, 50, 20, 20, "a", "cat"),  # two cats, one found well, one badly
        _box(0, 0, 30, 30, "b", "cat"),  # found by nothing: IL FN for (b, cat)
        _box(60, 0, 30, 30, "b", "dog"), _box(0, 60, 40, 40, "b", "dog", crowd=True),  # a crowd region
        _box(5, 5, 10, 10, "c", "dog"),
    ], ["cat", "dog"], "gt")
    pred = EvalSet(dict(images), [
        _box(10, 10, 20, 20, "a", "cat", 0.9), _box(53, 52, 20, 20, "a", "cat", 0.8), _box(80, 80, 5, 5, "a", "cat", 0.3),
        _box(10, 10, 20, 20, "a", "dog", 0.7),  # (a, dog): predictions without ground truth, IL FP
        _box(62, 1, 29, 30, "b", "dog", 0.6), _box(0, 60, 40, 40, "b", "dog", 0.5),  # the crowd one is a FP here
        _box(5, 5, 10, 10, "c", "dog", 0.9), _box(6, 5, 10, 10, "c", "dog", 0.4),  # a duplicate
    ], ["cat", "dog"], "pred")  # (c, cat), (d, cat), (d, dog): true negatives
    report = evaluate(gt, pred)
    expected = _brute_force_sa_co(gt, pred)
    got = report.sa_co["bbox"]
    assert got["image_level"] == expected["image_level"] == {"TP": 3, "FP": 1, "TN": 3, "FN": 1}
    for key in ("cgF1", "cgF1@50", "pmF1", "IL_MCC"):
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key
    assert 0 < got["cgF1"] < got["cgF1@50"] < 100


def test_per_class_counts_and_confusions_by_hand() -> None:
    images = {"a": EvalImage("a", 100, 100)}
    gt = EvalSet(images, [_box(0, 0, 10, 10, "a", "cat"), _box(50, 50, 10, 10, "a", "dog"),
                          _box(20, 20, 10, 10, "a", "dog"), _box(70, 0, 30, 30, "a", "cat", crowd=True)],
                 ["cat", "dog"], "gt")
    pred = EvalSet(dict(images), [
        _box(0, 0, 10, 10, "a", "cat"),  # TP cat
        _box(50, 50, 10, 10, "a", "cat"),  # a dog found as a cat: FP cat, FN dog, one confusion dog -> cat
        _box(72, 2, 10, 10, "a", "cat"),  # on the crowd region: ignored
        _box(20, 20, 10, 10, "a", "dog"),  # TP dog
        _box(90, 90, 5, 5, "a", "dog"),  # FP dog
    ], ["cat", "dog"], "pred")
    report = evaluate(gt, pred)
    cat, dog = report.per_class["cat"], report.per_class["dog"]
    assert (cat["TP"], cat["FP"], cat["FN"]) == (1, 1, 0) and cat["precision"] == 0.5 and cat["recall"] == 1.0
    assert (dog["TP"], dog["FP"], dog["FN"]) == (1, 1, 1) and dog["F1"] == pytest.approx(0.5)
    assert report.confusions == [{"gt": "dog", "pred": "cat", "count": 1}]
    assert "| dog | cat | 1 |" in report.to_markdown()


# ---------------------------------------------------------------------------- bad input
def test_bad_inputs_say_what_is_wrong(tmp_path) -> None:
    gt_path, res_path, results = make_case(tmp_path, n_images=6)
    gt = json.loads(gt_path.read_text())
    images = {"img001.jpg": EvalImage("img001.jpg", 10, 10), "img002.jpg": EvalImage("img002.jpg", 10, 10)}
    base = EvalSet(dict(images), [_box(0, 0, 5, 5, "img001.jpg", "cat")], ["cat"], "gt")
    with pytest.raises(EvalInputError, match=r"1 ground-truth image\(s\) have no predictions.*img002"):
        evaluate(base, EvalSet({"img001.jpg": images["img001.jpg"]}, [], ["cat"], "pred"))
    with pytest.raises(EvalInputError, match=r"not in the ground truth.*'zzz.jpg'"):
        evaluate(base, EvalSet({**images, "zzz.jpg": EvalImage("zzz.jpg", 10, 10)}, [], ["cat"], "pred"))
    other = EvalSet({**images, "zzz.jpg": EvalImage("zzz.jpg", 10, 10)},
                    [_box(0, 0, 5, 5, "zzz.jpg", "cat")], ["cat"], "pred")
    assert evaluate(base, other, ground_truth_images_only=True).per_class["cat"]["FP"] == 0  # zzz left out
    with pytest.raises(EvalInputError, match=r"differ in size.*10x10 vs 12x10"):
        evaluate(base, EvalSet({**images, "img002.jpg": EvalImage("img002.jpg", 12, 10)}, [], ["cat"], "pred"))
    with pytest.raises(EvalInputError, match=r"classes the ground truth does not have: 'kitten'"):
        evaluate(base, EvalSet(dict(images), [_box(0, 0, 5, 5, "img001.jpg", "kitten")], ["kitten"], "pred"))
    mapped = evaluate(base, EvalSet(dict(images), [_box(0, 0, 5, 5, "img001.jpg", "kitten")], ["kitten"], "p"),
                      class_map={"kitten": "cat"})
    assert mapped.per_class["cat"]["TP"] == 1
    with pytest.raises(EvalInputError, match="has no images"):
        evaluate(EvalSet({}, [], ["cat"], "empty.json"), base)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(EvalInputError, match="broken.json.*not valid JSON"):
        evaluate(tmp_path / "broken.json", res_path)
    gt["annotations"][0]["segmentation"] = [[1.0, 2.0, 3.0]]  # a polygon of one and a half points
    (tmp_path / "badpoly.json").write_text(json.dumps(gt))
    with pytest.raises(EvalInputError, match="badpoly.json: annotation 1: malformed segmentation"):
        evaluate(tmp_path / "badpoly.json", res_path)
    with pytest.raises(EvalInputError, match="not found"):
        evaluate(tmp_path / "missing.json", res_path)


def test_report_folder_is_written_whole(tmp_path) -> None:
    gt_path, res_path, _ = make_case(tmp_path, n_images=4)
    report = evaluate(gt_path, res_path)
    out = report.save(tmp_path / "report")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["coco"]["segm"]["AP"] == report.ap and metrics["sa_co"]["segm"]["cgF1"] == report.cgf1
    assert "| cat |" in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(CLASSES) and "<td>cat</td>" in html  # self-contained
    assert sorted(p.name for p in (out / "pr").iterdir()) == sorted(f"{c}.png" for c in CLASSES)
    assert (out / "pr" / "cat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "worst").exists()  # the images are not at hand here
    (out / "stale.txt").write_text("from an earlier report")
    report.save(out)  # replaced whole
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "pr", "report.html", "report.md"]
    assert report.worst_images and report.worst_images[0]["FP"] + report.worst_images[0]["FN"] >= max(
        w["FP"] + w["FN"] for w in report.worst_images)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_matching_is_cocos(tmp_path, seed) -> None:
    """TP / FP per class at IoU 0.5 equal COCOeval's own matches (area "all", crowd regions ignored)."""
    gt_path, res_path, results = make_case(tmp_path, seed)
    ref = reference_stats(gt_path, results, "segm")
    n_area = len(ref.params.areaRng)
    n_img = len(ref.params.imgIds)
    report = evaluate(gt_path, res_path)
    for k, name in enumerate(CLASSES):
        tp = fp = 0
        for e in ref.evalImgs[k * n_area * n_img:(k * n_area + 1) * n_img]:  # area range "all"
            if e is None:
                continue
            matched, ignored = e["dtMatches"][0] > 0, e["dtIgnore"][0].astype(bool)
            tp += int((matched & ~ignored).sum())
            fp += int((~matched & ~ignored).sum())
        assert (report.per_class[name]["TP"], report.per_class[name]["FP"]) == (tp, fp), name
