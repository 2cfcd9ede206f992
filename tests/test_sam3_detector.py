"""The ``sam3`` detector against transformers' own SAM 3 pipeline, on a tiny random model.

The oracle is ``Sam3Processor`` + ``Sam3Model`` + ``post_process_instance_segmentation`` loaded
from the same ``save_pretrained`` folder. The ontology semantics (merges, thresholds, negative
captions, on masks) are driven by a model whose forward returns controlled outputs.
"""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image
from transformers import Sam3Model, Sam3Processor

from detectors import Sam3Detector, load_detector, returns_masks, supports_exemplars
from detectors.mask_ops import classwise_mask_nms, mask_iou
from detectors.ontology_ops import DATA_KEYS
from detectors.sam3 import EXEMPLAR_CAPTION
from ontologies import CaptionOntology

from tiny_detectors import tiny_owl

rng = np.random.default_rng(0)
IMAGES = [
    rng.integers(0, 255, (96, 128, 3), dtype=np.uint8),
    rng.integers(0, 255, (60, 41, 3), dtype=np.uint8),
]
MASK_THRESHOLD = 0.6  # the random masks' probabilities sit around 0.6: a real boundary
CAPTIONS = ["a cat", "the cat", "a dog", "remote control", "red car", "a person", "the dog", "a red cat"]


@pytest.fixture(scope="module")
def model_dir(tiny_sam3_dir) -> str:
    return tiny_sam3_dir


@pytest.fixture(scope="module")
def oracle(model_dir):
    return Sam3Model.from_pretrained(model_dir).eval(), Sam3Processor.from_pretrained(model_dir)


def median_score(oracle, images=IMAGES, **prompt) -> float:
    """A score threshold that keeps about half the queries of the random model for ``prompt``."""
    return float(np.median(np.concatenate([reference(oracle, im, 0.0, **prompt)[0] for im in images])))


THRESHOLD = 0.47  # keeps some queries of some captions (random scores depend mostly on the caption)


def load(model_dir: str, **options) -> Sam3Detector:
    options.setdefault("device", "cpu")
    options.setdefault("mask_threshold", MASK_THRESHOLD)
    return load_detector("sam3", model_id=model_dir, **options)


def reference(oracle, image, threshold: float, **prompt):
    """transformers' pipeline: (scores, clipped boxes, masks), sorted by score."""
    model, proc = oracle
    inputs = proc(images=image, return_tensors="pt", **prompt)
    with torch.inference_mode():
        out = model(**inputs)
    h, w = image.shape[:2]
    res = proc.post_process_instance_segmentation(
        out, threshold=threshold, mask_threshold=MASK_THRESHOLD, target_sizes=[(h, w)]
    )[0]
    order = np.argsort(-res["scores"].numpy(), kind="stable")
    boxes = res["boxes"].numpy()[order]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return res["scores"].numpy()[order], boxes, res["masks"].numpy()[order].astype(bool)


def assert_same(det: sv.Detections, ref, what: str) -> None:
    scores, boxes, masks = ref
    assert len(det) == len(scores) > 0, what
    ds, db = np.abs(det.confidence - scores).max(), np.abs(det.xyxy - boxes).max()
    same = np.array_equal(det.mask, masks)
    print(f"{what}: N={len(det)} max|score diff| {ds:.1e}, max|box diff| {db:.1e} px, same masks: {same}")
    assert ds <= 1e-5 and db <= 1e-4, what
    np.testing.assert_array_equal(det.mask, masks, err_msg=what)


def check_contract(results: list[sv.Detections], onto: CaptionOntology) -> None:
    for det, image in zip(results, IMAGES):
        h, w = image.shape[:2]
        assert set(DATA_KEYS) <= set(det.data)
        assert det.mask is not None and det.mask.dtype == bool and det.mask.shape == (len(det), h, w)
        assert det.xyxy.dtype == np.float32 and det.confidence.dtype == np.float32
        assert det.data["class_name"].tolist() == [onto.classes()[c] for c in det.class_id]
        assert (np.diff(det.confidence) <= 0).all() and det.data["has_score"].all()


# ----------------------------------------------------------------------------- parity
def test_one_caption_equals_transformers(model_dir, oracle) -> None:
    threshold = median_score(oracle, text="a cat")
    det = load(model_dir, box_threshold=threshold, nms_iou=None)
    assert returns_masks(det) and supports_exemplars(det)
    results = det.detect(IMAGES, {"a cat": "cat"})
    check_contract(results, CaptionOntology({"a cat": "cat"}))
    for k, (r, image) in enumerate(zip(results, IMAGES)):
        assert len(r) < 10  # the threshold bites
        assert_same(r, reference(oracle, image, threshold, text="a cat"), f"one caption, image {k}")
        assert r.data["caption"].tolist() == ["a cat"] * len(r)


def test_batched_images_match_single_images(model_dir) -> None:
    onto = {"a cat": "cat", "the cat": "cat"}
    single = load(model_dir, box_threshold=THRESHOLD, nms_iou=None).detect(IMAGES, onto)
    batched = load(model_dir, box_threshold=THRESHOLD, nms_iou=None, batch_size=2).detect(IMAGES, onto)
    for a, b in zip(single, batched):
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)
        assert_masks_close(a.mask, b.mask)


def test_several_captions_decoded_together_equal_each_caption_alone(model_dir, oracle) -> None:
    """Raw outputs, before any ontology logic: 8 prompts on shared features vs transformers per caption."""
    model, proc = oracle
    det = load(model_dir, captions_per_pass=8)
    for k, image in enumerate(IMAGES):
        h, w = image.shape[:2]
        with torch.inference_mode():
            vision = det.encode_images([Image.fromarray(image)])
            raw = det.decode_prompts(vision, 0, CAPTIONS, (w, h), min_score=0.0)  # every query kept
        assert len(raw) == 10 * len(CAPTIONS)
        worst = np.zeros(3)
        for i, caption in enumerate(CAPTIONS):
            with torch.inference_mode():
                out = model(**proc(images=image, text=caption, return_tensors="pt"))
            rows = raw.boxes.prompt_ids == i
            scores = (out.pred_logits.sigmoid() * out.presence_logits.sigmoid())[0].numpy()
            boxes = out.pred_boxes[0].numpy() * [w, h, w, h]
            probs = out.pred_masks[0].sigmoid()
            worst = np.maximum(worst, [
                np.abs(raw.boxes.scores[rows] - scores).max(),
                np.abs(raw.boxes.xyxy[rows] - boxes).max(),
                (raw.mask_probs[torch.from_numpy(rows)] - probs).abs().max().item(),
            ])
        print(f"8 captions on shared features vs transformers per caption, image {k}: max|diff| "
              f"score {worst[0]:.1e}, box {worst[1]:.1e} px, mask prob {worst[2]:.1e}")
        assert worst[0] <= 1e-5 and worst[1] <= 1e-4 and worst[2] <= 1e-5


def test_mask_decoder_runs_only_for_prompts_that_kept_a_query(model_dir, oracle) -> None:
    """Boxes and scores come first; the mask decoder then runs on the prompts (rows) with a kept
    query only, and their masks equal transformers' full forward."""
    model, proc = oracle
    det = load(model_dir, captions_per_pass=8)
    rows_decoded: list[int] = []
    det.model.mask_decoder.register_forward_pre_hook(
        lambda m, args, kwargs: rows_decoded.append(kwargs["decoder_queries"].shape[0]), with_kwargs=True)
    image = IMAGES[0]
    h, w = image.shape[:2]
    with torch.inference_mode():
        vision = det.encode_images([Image.fromarray(image)])
        scores = {}
        for caption in CAPTIONS:
            out = model(**proc(images=image, text=caption, return_tensors="pt"))
            scores[caption] = (out.pred_logits.sigmoid() * out.presence_logits.sigmoid())[0]
        best = sorted(float(v.max()) for v in scores.values())
        cut = (best[len(best) // 2 - 1] + best[len(best) // 2]) / 2  # half the captions keep a query
        raw = det.decode_prompts(vision, 0, CAPTIONS, (w, h), min_score=cut)
        assert rows_decoded == [len(CAPTIONS) // 2]
        for i, caption in enumerate(CAPTIONS):
            rows = raw.boxes.prompt_ids == i
            assert rows.sum() == (scores[caption] >= cut).sum()
            if rows.any():
                out = model(**proc(images=image, text=caption, return_tensors="pt"))
                expected = out.pred_masks[0][scores[caption] >= cut].sigmoid()
                assert (raw.mask_probs[torch.from_numpy(rows)] - expected).abs().max() <= 1e-5
        rows_decoded.clear()
        nothing = det.decode_prompts(vision, 0, CAPTIONS, (w, h), min_score=1.1)
    assert len(nothing) == 0 and rows_decoded == []


def assert_masks_close(a: np.ndarray, b: np.ndarray) -> None:
    """Equal but for the odd pixel whose probability sits within float noise of the threshold."""
    assert a.shape == b.shape and (a != b).sum() <= 1e-4 * a.size


def test_several_captions_equal_each_caption_alone(model_dir) -> None:
    det = load(model_dir, box_threshold=THRESHOLD, nms_iou=None, negative_iou=None)
    assert det.captions_per_pass == 1  # the CPU default: one prompt per forward
    assert load(model_dir, captions_per_pass=8).captions_per_pass == 8
    alone = {c: det.detect(IMAGES, {c: "x"}) for c in CAPTIONS}
    # one class per caption, nothing merged
    together = det.detect(IMAGES, {c: f"class {i}" for i, c in enumerate(CAPTIONS)})
    for k in range(len(IMAGES)):
        for i, c in enumerate(CAPTIONS):
            got = together[k][together[k].class_id == i]
            ref = alone[c][k]
            assert len(got) == len(ref) and got.data["caption"].tolist() == [c] * len(ref)
            np.testing.assert_allclose(got.confidence, ref.confidence, atol=1e-5)
            np.testing.assert_allclose(got.xyxy, ref.xyxy, atol=1e-4)
            assert_masks_close(got.mask, ref.mask)
    found = {c for r in together for c in r.data["caption"]}
    assert 0 < len(found) < len(CAPTIONS)  # some captions fire, some do not
    # after the ontology merge: all captions one class, mask NMS over the single-caption results
    det.nms_iou = 0.5
    merged = det.detect(IMAGES, {c: "thing" for c in CAPTIONS})
    for k in range(len(IMAGES)):
        pool = sv.Detections.merge([alone[c][k] for c in CAPTIONS])
        keep = classwise_mask_nms(pool.mask, pool.confidence, np.zeros(len(pool), int), 0.5)
        assert merged[k].data["caption"].tolist() == pool.data["caption"][keep].tolist()
        np.testing.assert_allclose(merged[k].confidence, pool.confidence[keep], atol=1e-5)
        assert_masks_close(merged[k].mask, pool.mask[keep])


def test_exemplars_equal_transformers_box_prompts(model_dir, oracle) -> None:
    image = IMAGES[0]
    pos, neg = [10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 90.5]
    # joint text + exemplar prompt (default)
    joint = {"text": "a cat", "input_boxes": [[pos, neg]], "input_boxes_labels": [[1, 0]]}
    threshold = median_score(oracle, [image], **joint)
    det = load(model_dir, box_threshold=threshold, nms_iou=None)
    (r,) = det.detect([image], {"a cat": "cat"}, exemplars={"cat": [pos]}, negative_exemplars={"cat": [neg]})
    assert_same(r, reference(oracle, image, threshold, **joint), "text + exemplars")
    assert r.data["caption"].tolist() == ["a cat"] * len(r)
    # a purely visual prompt (transformers sends the text "visual"), beside the unchanged text prompt
    visual = {"input_boxes": [[pos]], "input_boxes_labels": [[1]]}
    det.box_threshold = threshold = median_score(oracle, [image], **visual)
    onto = {"a cat": "cat", "red car": "cat"}
    (r,) = det.detect([image], onto, exemplars={"cat": [pos]}, exemplar_text=False)
    found = r[r.data["caption"] == EXEMPLAR_CAPTION]
    assert_same(found, reference(oracle, image, threshold, **visual), "visual exemplar")
    assert (found.class_id == 0).all()
    beside = r[r.data["caption"] == "red car"]
    assert_same(beside, reference(oracle, image, threshold, text="red car"), "text beside")


def test_per_image_exemplars(model_dir) -> None:
    det = load(model_dir, box_threshold=0.4, nms_iou=None)
    onto = {"a cat": "cat", "a dog": "dog"}
    boxes = [{"cat": [[5, 5, 40, 50]]}, {"dog": np.array([[1, 2, 30, 40], [3, 3, 20, 20]])}]
    both = det.detect(IMAGES, onto, exemplars=boxes)
    for k, image in enumerate(IMAGES):
        (alone,) = det.detect([image], onto, exemplars=boxes[k])
        np.testing.assert_allclose(both[k].confidence, alone.confidence, atol=1e-5)
        assert_masks_close(both[k].mask, alone.mask)
    (plain,) = det.detect(IMAGES[:1], onto)
    assert not np.array_equal(plain.confidence, both[0].confidence)  # the exemplars change the answer


# ----------------------------------------------------------------------------- sharing
def test_image_side_runs_once_per_image_and_text_once_per_caption(model_dir) -> None:
    det = load(model_dir, box_threshold=0.0, captions_per_pass=8)
    calls = {"vision": 0, "text": 0, "decode": 0}
    modules = {"vision": det.model.vision_encoder, "text": det.model.text_encoder, "decode": det.model}
    for name, module in modules.items():
        module.register_forward_hook(lambda *a, name=name: calls.__setitem__(name, calls[name] + 1))
    onto = {c: f"class {i % 3}" for i, c in enumerate(CAPTIONS)}
    det.detect(IMAGES, onto)
    assert calls == {"vision": 2, "text": 1, "decode": 2}  # 8 captions in one decode per image
    det.detect(IMAGES, onto)  # text features are cached
    assert calls == {"vision": 4, "text": 1, "decode": 4}
    det.batch_size, det.captions_per_pass = 2, 3
    det.detect(IMAGES, onto)
    assert calls == {"vision": 5, "text": 1, "decode": 4 + 2 * 3}
    det.captions_per_pass = 1  # the CPU default: one forward per prompt, the image side still once
    det.detect(IMAGES, onto)
    assert calls == {"vision": 6, "text": 1, "decode": 10 + 2 * 8}


# ----------------------------------------------------------------------------- semantics
def logit(p: float) -> float:
    return math.log(p / (1 - p))


def rect(y0: int, y1: int, x0: int, x1: int, size: int = 64) -> torch.Tensor:
    m = torch.full((size, size), -20.0)
    m[y0:y1, x0:x1] = 20.0
    return m


A = rect(10, 40, 10, 25)  # left half of the box (10, 10)-(40, 40)
B = rect(10, 40, 25, 40)  # right half: the same box, a disjoint mask
D = rect(45, 60, 45, 60)
BOX_AB, BOX_D = [10 / 64, 10 / 64, 40 / 64, 40 / 64], [45 / 64, 45 / 64, 60 / 64, 60 / 64]
ROWS = {  # prompt row -> [(score, box xyxy normalised, mask logits 64x64)]
    0: [(0.9, BOX_AB, A)],  # a cat
    1: [(0.8, BOX_AB, A + 0.5), (0.7, BOX_AB, B)],  # the cat: a duplicate of A, and B
    2: [(0.6, BOX_D, D)],  # a dog
    3: [(0.7, BOX_D, D)],  # red dog, on the dog
}


def controlled_forward(inputs_seen: list):
    def forward(*, vision_embeds, text_embeds, attention_mask, **prompts):
        inputs_seen.append(text_embeds.pooler_output.shape[0])
        rows = text_embeds.pooler_output.shape[0]
        logits = torch.full((rows, 10), -10.0)
        boxes = torch.zeros(rows, 10, 4)
        masks = torch.full((rows, 10, 64, 64), -20.0)
        for r in range(rows):
            for q, (p, box, mask) in enumerate(ROWS[r]):
                logits[r, q], boxes[r, q], masks[r, q] = logit(p), torch.tensor(box), mask
        return SimpleNamespace(
            pred_logits=logits,
            presence_logits=torch.full((rows, 1), 20.0),
            pred_boxes=boxes,
            pred_masks=masks,
        )

    return forward


def test_ontology_semantics_on_masks(model_dir) -> None:
    onto = CaptionOntology({"a cat": "cat", "the cat": "cat", "a dog": "dog"}, negatives={"dog": ["red dog"]})
    det = load(model_dir, box_threshold=0.3, mask_threshold=0.5, captions_per_pass=8)
    seen: list[int] = []
    det.model.forward = controlled_forward(seen)
    image = np.zeros((64, 64, 3), np.uint8)  # masks come out at their own size: no resampling
    (r,) = det.detect(image, onto)
    assert seen == [4]  # the four prompts (negatives too) in one decode
    # "the cat"'s copy of A is merged into "a cat" by mask IoU; B has the same box but another
    # mask, so it stays (box NMS would have dropped it); "red dog" removes the dog
    assert r.data["caption"].tolist() == ["a cat", "the cat"]
    assert r.class_id.tolist() == [0, 0]
    np.testing.assert_allclose(r.confidence, [0.9, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(r.mask[0], (A > 0).numpy())
    np.testing.assert_array_equal(r.mask[1], (B > 0).numpy())
    np.testing.assert_allclose(r.xyxy[0], [10, 10, 40, 40], atol=1e-4)
    det.negative_iou = None
    assert det.detect(image, onto)[0].data["caption"].tolist() == ["a cat", "the cat", "a dog"]
    det.nms_iou = None
    assert det.detect(image, onto)[0].data["caption"].tolist() == ["a cat", "the cat", "the cat", "a dog"]
    det.box_threshold = 0.85
    assert det.detect(image, onto)[0].data["caption"].tolist() == ["a cat"]
    strict = CaptionOntology(
        {"a cat": "cat", "the cat": "cat", "a dog": "dog"}, thresholds={"cat": 0.95, "dog": 0.5}
    )  # a class threshold above the default removes a class, one below lets it through
    assert det.detect(image, strict)[0].data["caption"].tolist() == ["a dog"]


def test_mask_iou_is_exact() -> None:
    a = np.zeros((2, 5, 7), dtype=bool)  # 35 pixels: the packed rows end in a partial byte
    a[0, :2] = True  # 14 pixels
    a[1, 1:4, :3] = True  # 9 pixels, 3 shared with a[0]
    iou = mask_iou(a, np.concatenate([a, np.zeros((1, 5, 7), dtype=bool)]))
    np.testing.assert_allclose(iou, [[1, 3 / 20, 0], [3 / 20, 1, 0]])
    big = np.random.default_rng(0).random((5, 300, 301)) > 0.5
    inter = (big[:, None] & big[None]).sum((2, 3))
    union = (big[:, None] | big[None]).sum((2, 3))
    np.testing.assert_array_equal(mask_iou(big, big), inter / union)


# ----------------------------------------------------------------------------- errors
def test_missing_or_gated_weights_say_how_to_get_them(tmp_path) -> None:
    with pytest.raises(OSError) as err:  # conftest sets HF_HUB_OFFLINE=1: nothing is cached
        load_detector("sam3", device="cpu")
    hints = ("huggingface.co/facebook/sam3", "hf auth login", "hf download facebook/sam3", "save_pretrained")
    assert all(hint in str(err.value) for hint in hints)
    with pytest.raises(OSError, match="hf download me/sam3-finetune"):
        load_detector("sam3", model_id="me/sam3-finetune", device="cpu")
    with pytest.raises(OSError, match="no such folder"):
        load_detector("sam3", model_id=str(tmp_path / "missing" / "dir"), device="cpu")


def test_transformers_without_sam3(model_dir, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers.models.sam3", None)  # as if the module did not exist
    with pytest.raises(ImportError, match=r"transformers>=5\.0"):
        load(model_dir)


def test_bad_arguments(model_dir, tmp_path) -> None:
    model, proc = tiny_owl(v2=True)
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'owlv2' model, not SAM 3"):
        load(str(tmp_path))
    with pytest.raises(ValueError, match="mask_threshold"):
        load(model_dir, mask_threshold=1.5)
    det = load(model_dir)
    with pytest.raises(ValueError, match="ontology is empty"):
        det.detect(IMAGES, {})
    onto = {"a cat": "cat"}
    bad = {
        "outside": ({"cat": [[0, 0, 129, 50]]}, r"exemplars\['cat'\]\[0\].*outside images\[0\] \(128x96"),
        "inverted": ({"cat": [[1, 1, 5, 5], [30, 10, 20, 40]]}, r"exemplars\['cat'\]\[1\].*inverted"),
        "nan": ({"cat": [[float("nan"), 0, 5, 5]]}, r"exemplars\['cat'\]\[0\].*finite"),
        "short": ({"cat": [[1, 2, 3]]}, r"exemplars\['cat'\]\[0\].*four finite numbers"),
        "unknown class": ({"dog": [[1, 1, 5, 5]]}, r"class 'dog'.*classes: \['cat'\]"),
        "list length": ([{"cat": [[1, 1, 5, 5]]}], r"1 mappings but there are 2 images"),
        "second image": (
            [{}, {"cat": [[0, 0, 50, 50]]}],
            r"exemplars\[1\]\['cat'\]\[0\].*outside images\[1\] \(41x60",
        ),
    }
    for name, (exemplars, message) in bad.items():
        with pytest.raises(ValueError, match=message):
            det.detect(IMAGES, onto, exemplars=exemplars)
    with pytest.raises(ValueError, match=r"negative_exemplars\['cat'\]\[0\].*inverted"):
        det.detect(IMAGES, onto, negative_exemplars={"cat": [[5, 5, 1, 1]]})
    with pytest.raises(ValueError, match="need positive exemplars"):
        det.detect(IMAGES, onto, negative_exemplars={"cat": [[1, 1, 5, 5]]}, exemplar_text=False)


def test_file_input_and_empty_result(model_dir, tmp_path) -> None:
    path = tmp_path / "image.png"
    Image.fromarray(IMAGES[0]).save(path)
    det = load(model_dir, box_threshold=1.0)  # nothing passes
    (r,) = det.detect(path, {"a cat": "cat"})
    assert len(r) == 0 and r.mask.shape == (0, 96, 128) and set(DATA_KEYS) <= set(r.data)
