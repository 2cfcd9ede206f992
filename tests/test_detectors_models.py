"""The five detector families end to end, with tiny random models saved by ``save_pretrained``.

Each family is built in the test, saved to a temp dir and loaded through
``load_detector(name, model_id=dir)``: the production loading path, offline. Random weights
give meaningless boxes, so the contract test asserts shapes, ranges and mappings; the
behaviour tests (caption mapping, thresholds, NMS, negatives, passes, batching) replace the
model's forward with controlled outputs and go through the real pre- and post-processing.
"""

from __future__ import annotations

import logging
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image

from detectors import load_detector
from detectors.florence2 import FLORENCE2_CONFIDENCE
from detectors.grounding_dino import build_prompt, phrase_scores, token_spans
from detectors.ontology_ops import DATA_KEYS
from ontologies import CaptionOntology

from tiny_detectors import BUILDERS, bert_tokenizer, tiny_owl

DETECTOR_NAME = {"mm-grounding-dino": "grounding-dino"}  # LLMDet / MM-GDINO share the name


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """``model_dir(kind)`` -> a directory with a tiny model and processor (built once per kind)."""
    cache: dict[str, str] = {}

    def get(kind: str) -> str:
        if kind not in cache:
            torch.manual_seed(0)
            model, proc = BUILDERS[kind]()
            d = tmp_path_factory.mktemp(kind)
            model.save_pretrained(d)
            proc.save_pretrained(d)
            cache[kind] = str(d)
        return cache[kind]

    return get


def load(model_dir, kind: str, **options):
    options.setdefault("device", "cpu")
    return load_detector(DETECTOR_NAME.get(kind, kind), model_id=model_dir(kind), **options)


rng = np.random.default_rng(0)
IMAGES = [
    rng.integers(0, 255, (96, 128, 3), dtype=np.uint8),
    Image.fromarray(rng.integers(0, 255, (60, 41, 3), dtype=np.uint8)),
]
SIZES = [(128, 96), (41, 60)]  # (W, H)
ONTO = CaptionOntology(
    {"a cat": "cat", "the cat": "cat", "a dog": "dog", "remote control": "remote", "st. bernard": "dog"},
    negatives={"dog": ["red dog"]},
)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def check_contract(results: list[sv.Detections], onto: CaptionOntology, scored: bool = True) -> None:
    assert len(results) == len(SIZES)
    for det, (w, h) in zip(results, SIZES):
        assert isinstance(det, sv.Detections)
        assert set(DATA_KEYS) <= set(det.data)
        assert det.xyxy.dtype == np.float32 and det.xyxy.shape == (len(det), 4)
        assert det.confidence.dtype == np.float32 and det.confidence.shape == (len(det),)
        assert det.class_id.dtype.kind == "i"
        if len(det) == 0:
            continue
        assert (det.xyxy[:, [0, 2]] >= 0).all() and (det.xyxy[:, [0, 2]] <= w).all()
        assert (det.xyxy[:, [1, 3]] >= 0).all() and (det.xyxy[:, [1, 3]] <= h).all()
        assert (det.xyxy[:, 2] > det.xyxy[:, 0]).all() and (det.xyxy[:, 3] > det.xyxy[:, 1]).all()
        assert ((det.class_id >= 0) & (det.class_id < onto.num_classes)).all()
        assert det.data["class_name"].tolist() == [onto.classes()[c] for c in det.class_id]
        for caption, name in zip(det.data["caption"], det.data["class_name"]):
            assert caption in onto.prompts()  # negatives never reach the output
            assert onto.caption_class(caption) == name
        assert (det.data["has_score"] == scored).all()
        assert (np.diff(det.confidence) <= 0).all()  # sorted by confidence


# ----------------------------------------------------------------------------- contract
@pytest.mark.parametrize("kind", ["grounding-dino", "mm-grounding-dino", "owlv2", "owlvit", "omdet-turbo"])
def test_scored_family_contract_and_threshold(model_dir, kind) -> None:
    # OmDet keeps the top num_queries (query, caption) pairs; keep them all here
    extra = {"max_detections": 20 * 6} if kind == "omdet-turbo" else {}
    det = load(model_dir, kind, box_threshold=0.0, **extra)
    results = det.detect(IMAGES, ONTO)
    check_contract(results, ONTO)
    assert all(len(r) > 0 for r in results)  # threshold 0 keeps every non-degenerate box
    # a higher threshold removes exactly the detections below it
    conf = np.concatenate([r.confidence for r in results])
    det.box_threshold = float(np.median(conf)) + 1e-6
    stricter = det.detect(IMAGES, ONTO)
    check_contract(stricter, ONTO)
    assert sum(len(r) for r in stricter) < len(conf)
    assert all((r.confidence >= det.box_threshold).all() for r in stricter)


def test_florence_contract(model_dir) -> None:
    det = load(model_dir, "florence-2", max_new_tokens=8)
    assert type(det.model).__name__ == "Florence2ForConditionalGeneration"
    check_contract(det.detect(IMAGES, ONTO), ONTO, scored=False)


def test_wrong_family_and_remote_code_ids_are_refused(model_dir) -> None:
    with pytest.raises(ValueError, match="'owlv2' model, not Grounding DINO"):
        load_detector("grounding-dino", model_id=model_dir("owlv2"), device="cpu")
    with pytest.raises(ValueError, match="florence-community/Florence-2-large"):
        load_detector("florence-2", model_id="microsoft/Florence-2-large", device="cpu")
    with pytest.raises(TypeError, match="bogus"):
        load(model_dir, "owlv2", bogus=1)
    with pytest.raises(ValueError, match="box_threshold"):
        load(model_dir, "owlv2", box_threshold=1.5)


def test_prebuilt_model_and_processor(tmp_path) -> None:
    model, proc = tiny_owl(v2=True)
    det = load_detector("owlv2", model=model, processor=proc, device="cpu", box_threshold=0.0)
    assert det.model is model and det.processor is proc
    path = tmp_path / "image.png"
    Image.fromarray(IMAGES[0]).save(path)
    res = det.detect([path, IMAGES[1]], ONTO)  # a file path and a PIL image
    check_contract(res, ONTO)
    with pytest.raises(ValueError, match="both model and processor"):
        load_detector("owlv2", model=model, device="cpu")


# ----------------------------------------------------------------------------- fakes
class FakeModel(torch.nn.Module):
    """Stands in for a detector's model: records its inputs, returns ``make(inputs)``."""

    def __init__(self, real: torch.nn.Module, make) -> None:
        super().__init__()
        self.config = real.config
        self.make = make
        self.calls: list[dict] = []

    def forward(self, **inputs):
        self.calls.append(inputs)
        return self.make(inputs)


def test_grounding_dino_prompt_spans_and_phrase_scores() -> None:
    prompt, spans = build_prompt(["a cat", "remote control"])
    assert prompt == "a cat. remote control."
    assert [prompt[s:e] for s, e in spans] == ["a cat", "remote control"]
    enc = bert_tokenizer()(prompt, return_offsets_mapping=True)
    tok_spans = token_spans(enc["offset_mapping"], spans)
    assert tok_spans == [[1, 2], [4, 5]]  # [CLS] a cat . remote control . [SEP]
    probs = torch.tensor([[0.1, 0.2, 0.9, 0.0, 0.5, 0.3, 0.0, 0.0]])
    torch.testing.assert_close(phrase_scores(probs, tok_spans), torch.tensor([[0.9, 0.5]]))
    torch.testing.assert_close(phrase_scores(probs, tok_spans, "mean"), torch.tensor([[0.55, 0.4]]))


def gd_outputs(rows: list[tuple[dict[int, float], list[float]]], batch: int, text_len: int = 32):
    """Logits ``(B, Q, text_len)``: token index -> probability per query, others 0.01."""
    logits = torch.full((batch, len(rows), text_len), logit(0.01))
    boxes = torch.zeros(batch, len(rows), 4)
    for q, (tokens, box) in enumerate(rows):
        for t, p in tokens.items():
            logits[:, q, t] = logit(p)
        boxes[:, q] = torch.tensor(box)
    return SimpleNamespace(logits=logits, pred_boxes=boxes)


def test_grounding_dino_caption_mapping_threshold_nms(model_dir) -> None:
    onto = CaptionOntology({"a cat": "cat", "remote control": "remote", "a dog": "dog", "the cat": "cat"})
    # captions go class by class: [CLS] a cat . the cat . remote control . a dog . [SEP]
    #                               0   1  2  3  4   5  6   7      8     9 10 11 12  13
    rows = [
        ({2: 0.9}, [0.25, 0.25, 0.2, 0.2]),  # "cat"
        ({7: 0.8, 8: 0.7, 2: 0.6}, [0.7, 0.7, 0.2, 0.2]),  # merged "cat remote control" -> remote control
        ({11: 0.2}, [0.5, 0.8, 0.2, 0.2]),  # weak dog
        ({5: 0.7}, [0.26, 0.25, 0.2, 0.2]),  # "the cat" on the first cat: same class, NMS
    ]
    det = load(model_dir, "grounding-dino", batch_size=2)
    det.model = fake = FakeModel(det.model, lambda inp: gd_outputs(rows, inp["input_ids"].shape[0]))
    results = det.detect(IMAGES, onto)
    assert len(fake.calls) == 1  # both images in one batch, one pass
    assert fake.calls[0]["input_ids"][0, :14].tolist() == [
        101,
        200,
        201,
        1012,
        206,
        201,
        1012,
        203,
        204,
        1012,
        200,
        202,
        1012,
        102,
    ]
    for r, (w, h) in zip(results, SIZES):
        assert r.data["caption"].tolist() == ["a cat", "remote control"]
        assert r.class_id.tolist() == [0, 1]
        np.testing.assert_allclose(r.confidence, [0.9, 0.8], rtol=1e-5)
        np.testing.assert_allclose(r.xyxy[1], [0.6 * w, 0.6 * h, 0.8 * w, 0.8 * h], rtol=1e-5)
    det.box_threshold, det.nms_iou = 0.1, None
    results = det.detect(IMAGES, onto)
    assert results[0].data["caption"].tolist() == ["a cat", "remote control", "the cat", "a dog"]
    det.phrase_score = "mean"  # remote control 0.75, a cat 0.455, the cat 0.355, a dog 0.105
    mean = det.detect(IMAGES[:1], onto)[0]
    assert mean.data["caption"].tolist() == ["remote control", "a cat", "the cat", "a dog"]
    np.testing.assert_allclose(mean.confidence, [0.75, 0.455, 0.355, 0.105], rtol=1e-4)


def test_grounding_dino_caption_longer_than_the_text_limit(model_dir) -> None:
    det = load(model_dir, "grounding-dino")
    long = " ".join(["red cat"] * 20)  # 40 tokens + "." > 32 - 2
    with pytest.raises(ValueError, match="red cat red cat.*41 tokens"):
        det.detect(IMAGES, {"a dog": "dog", long: "cat"})


def test_grounding_dino_long_ontology_split_into_passes(model_dir) -> None:
    words = ["a", "cat", "dog", "red", "the", "person", "car", "remote", "control"]
    captions = [f"{a} {b}" for a in words[:4] for b in words[4:]][:14]
    onto = CaptionOntology(
        {c: f"class {i}" for i, c in enumerate(captions)}, negatives={"class 0": ["st. bernard"]}
    )
    det = load(model_dir, "grounding-dino", box_threshold=0.0)
    table, passes = det.plan(onto)
    assert len(table) == 15 and len(passes) >= 2  # 15 captions x 3 tokens + 2 > 32
    assert sorted(i for p in passes for i in p) == list(range(15))
    assert table.texts[1] == "st bernard"  # dots stripped, kept next to its class
    real = det.detect(IMAGES, onto)  # the real tiny model: no 32-token overflow
    assert len(real) == 2 and all(len(r) > 0 for r in real)

    def make(inputs):  # query k fires on the k-th phrase of the pass, box k is distinct
        ids = inputs["input_ids"][0].tolist()
        seps = [i for i, t in enumerate(ids) if t == 1012]
        starts = [1] + [s + 1 for s in seps[:-1]]
        rows = [({s: 0.9}, [(k + 0.5) / 16, 0.5, 0.5 / 16, 0.5]) for k, s in enumerate(starts)]
        return gd_outputs(rows, inputs["input_ids"].shape[0])

    det.model = fake = FakeModel(det.model, make)
    results = det.detect(IMAGES, onto)
    assert len(fake.calls) == 2 * len(passes)  # batch_size 1: each image, each pass
    position = {table.captions[i]: k for p in passes for k, i in enumerate(p)}
    for r, (w, _) in zip(results, SIZES):
        # class 0's positive is suppressed by its negative "st. bernard" only when they overlap;
        # here every phrase has its own box, so all 14 positives are found, each at its slot
        assert sorted(r.data["caption"].tolist()) == sorted(captions)
        for caption, box in zip(r.data["caption"], r.xyxy):
            assert box[0] == pytest.approx((position[caption] + 0.25) / 16 * w, rel=1e-4)


def owl_outputs(rows: list[tuple[int, float, list[float]]], batch: int, num_queries: int):
    logits = torch.full((batch, len(rows), num_queries), -10.0)
    boxes = torch.zeros(batch, len(rows), 4)
    for n, (q, p, box) in enumerate(rows):
        logits[:, n, q] = logit(p)
        boxes[:, n] = torch.tensor(box)
    return SimpleNamespace(logits=logits, pred_boxes=boxes)


@pytest.mark.parametrize("kind", ["owlv2", "owlvit"])
def test_owl_thresholds_nms_negatives_and_scaling(model_dir, kind) -> None:
    onto = CaptionOntology(
        {"a cat": "cat", "the cat": "cat", "a dog": "dog"}, negatives={"dog": ["red dog"]}
    )  # prompts: a cat, the cat, a dog, red dog
    rows = [
        (0, 0.9, [0.5, 0.5, 0.2, 0.2]),
        (1, 0.8, [0.5, 0.5, 0.21, 0.2]),  # the cat, same box: merged into "a cat"
        (2, 0.5, [0.2, 0.2, 0.2, 0.2]),  # a dog
        (3, 0.6, [0.2, 0.2, 0.2, 0.21]),  # red dog on it: suppresses the dog
    ]
    det = load(model_dir, kind)

    def make(inp):
        batch = inp["pixel_values"].shape[0]
        return owl_outputs(rows, batch, inp["input_ids"].shape[0] // batch)

    det.model = FakeModel(det.model, make)
    res = det.detect(IMAGES, onto)
    for r, (w, h) in zip(res, SIZES):
        assert r.data["caption"].tolist() == ["a cat"]
        scale = (max(w, h), max(w, h)) if kind == "owlv2" else (w, h)  # OWLv2 pads to a square
        expected = np.array([0.4 * scale[0], 0.4 * scale[1], 0.6 * scale[0], 0.6 * scale[1]])
        np.testing.assert_allclose(r.xyxy[0], np.minimum(expected, [w, h, w, h]), rtol=1e-5)
    det.negative_iou = None
    assert det.detect(IMAGES, onto)[0].data["caption"].tolist() == ["a cat", "a dog"]
    det.nms_iou = None
    assert det.detect(IMAGES, onto)[0].data["caption"].tolist() == ["a cat", "the cat", "a dog"]
    det.box_threshold = 0.85
    assert det.detect(IMAGES, onto)[0].data["caption"].tolist() == ["a cat"]
    strict = CaptionOntology(
        {"a cat": "cat", "the cat": "cat", "a dog": "dog"},
        thresholds={"cat": 0.95},
        negatives={"dog": ["red dog"]},
    )
    det.box_threshold = 0.1
    assert det.detect(IMAGES, strict)[0].data["caption"].tolist() == ["a dog"]
    # a class threshold below the default lets that class through (the pre-filter uses the minimum)
    lenient = CaptionOntology(
        {"a cat": "cat", "the cat": "cat", "a dog": "dog"},
        thresholds={"dog": 0.4},
        negatives={"dog": ["red dog"]},
    )
    det.box_threshold = 0.85
    assert det.detect(IMAGES, lenient)[0].data["caption"].tolist() == ["a cat", "a dog"]


def test_owl_long_caption_is_truncated_with_a_warning(model_dir, caplog) -> None:
    det = load(model_dir, "owlv2", box_threshold=0.0)
    long = "a remarkably long caption about a cat"
    with caplog.at_level(logging.WARNING, logger="detectors.owl"):
        res = det.detect(IMAGES, {long: "cat", "dog": "dog"})
    assert "truncated" in caplog.text and long in caplog.text
    check_contract(res, CaptionOntology({long: "cat", "dog": "dog"}))


def test_owl_batching_matches_single_images(model_dir) -> None:
    single = load(model_dir, "owlv2", box_threshold=0.0, batch_size=1)
    batched = load(model_dir, "owlv2", box_threshold=0.0, batch_size=2)
    calls = {"single": 0, "batched": 0}
    for name, det in (("single", single), ("batched", batched)):
        real = det.model
        det.model = FakeModel(
            real, lambda inp, real=real, name=name: (calls.__setitem__(name, calls[name] + 1), real(**inp))[1]
        )
    a, b = single.detect(IMAGES, ONTO), batched.detect(IMAGES, ONTO)
    assert calls == {"single": 2, "batched": 1}
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.xyxy, y.xyxy, atol=1e-3)
        assert x.data["caption"].tolist() == y.data["caption"].tolist()


def test_omdet_pairs_class_slice_and_max_detections(model_dir) -> None:
    onto = CaptionOntology({"a cat": "cat", "the cat": "cat", "a dog": "dog"})

    def make(inputs):
        b = inputs["pixel_values"].shape[0]
        assert inputs["classes_structure"].tolist() == [3] * b
        logits = torch.full((b, 20, 5), -10.0)
        logits[:, :, 3:] = 10.0  # columns past the image's classes must be ignored
        logits[:, 0, 0], logits[:, 0, 1] = logit(0.9), logit(0.8)  # one box, both cat captions
        logits[:, 1, 2] = logit(0.7)  # a dog
        logits[:, 2, 2] = logit(0.4)  # a second, weaker dog elsewhere
        boxes = torch.tensor(
            [[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2], [0.8, 0.8, 0.1, 0.1]] + [[0.5, 0.5, 0.1, 0.1]] * 17
        )
        return SimpleNamespace(decoder_class_logits=logits, decoder_coord_logits=boxes.expand(b, 20, 4))

    det = load(model_dir, "omdet-turbo")
    det.model = FakeModel(det.model, make)
    res = det.detect(IMAGES, onto)
    for r, (w, h) in zip(res, SIZES):
        assert r.data["caption"].tolist() == ["a cat", "a dog", "a dog"]
        np.testing.assert_allclose(r.confidence, [0.9, 0.7, 0.4], rtol=1e-5)
        np.testing.assert_allclose(r.xyxy[1], [0.1 * w, 0.1 * h, 0.3 * w, 0.3 * h], rtol=1e-5)
    det.nms_iou = None
    assert det.detect(IMAGES, onto)[0].data["caption"].tolist() == ["a cat", "the cat", "a dog", "a dog"]
    det.box_threshold = 0.5
    assert det.detect(IMAGES, onto)[0].data["caption"].tolist() == ["a cat", "the cat", "a dog"]
    det.max_detections = 2  # top-2 (query, caption) pairs only
    assert det.detect(IMAGES, onto)[0].data["caption"].tolist() == ["a cat", "the cat"]


def test_florence_rows_map_to_captions_without_scores(model_dir, caplog) -> None:
    onto = CaptionOntology(
        {"a cat": "cat", "the cat": "cat", "a dog": "dog"},
        thresholds={"cat": 0.99},
        negatives={"dog": ["red dog"]},
    )
    det = load(model_dir, "florence-2", max_new_tokens=8)
    tok = det.processor.tokenizer
    boxes = {
        "a cat": "<loc_100><loc_100><loc_400><loc_500>",
        "the cat": "<loc_100><loc_110><loc_400><loc_500>",
        "a dog": "<loc_600><loc_600><loc_900><loc_900>",
        "red dog": "<loc_610><loc_600><loc_900><loc_900>",
    }
    seen: list[int] = []

    def fake_generate(input_ids, attention_mask, encoder_outputs, **kwargs):
        seen.append(input_ids.shape[0])
        assert encoder_outputs.last_hidden_state.shape[0] == input_ids.shape[0]
        rows = []
        for text in tok.batch_decode(input_ids, skip_special_tokens=True):
            caption = re.search(r"Locate (.+) in the image", text).group(1)
            # the model echoes a *different* label: the row, not the text, decides the caption
            rows.append([2, 0] + tok("thing" + boxes[caption], add_special_tokens=False)["input_ids"] + [2])
        width = max(len(r) for r in rows)
        return torch.tensor([r + [1] * (width - len(r)) for r in rows])

    det.model.generate = fake_generate
    with caplog.at_level(logging.WARNING, logger="detectors.florence2"):
        res = det.detect(IMAGES, onto)
    assert "not applied" in caplog.text
    assert seen == [2 * 4]  # one generate: 2 images x 4 captions
    for r, (w, h) in zip(res, SIZES):
        # cat captions merged by NMS (first in generation order wins), dog removed by "red dog",
        # the class threshold 0.99 not applied to the constant confidence
        assert r.data["caption"].tolist() == ["a cat"]
        assert r.confidence.tolist() == [FLORENCE2_CONFIDENCE]
        assert r.data["has_score"].tolist() == [False]
        np.testing.assert_allclose(r.xyxy[0], [0.1005 * w, 0.1005 * h, 0.4005 * w, 0.5005 * h], atol=1.0)
    det.negative_iou, det.nms_iou = None, None
    assert det.detect(IMAGES, onto)[1].data["caption"].tolist() == ["a cat", "the cat", "a dog"]


def test_florence_shared_image_features_match_the_model(model_dir) -> None:
    det = load(model_dir, "florence-2", max_new_tokens=4)
    texts = ["a cat", "remote control", "a dog"]
    pil = [Image.fromarray(IMAGES[0]), IMAGES[1]]
    ids, mask = det._encode_texts(texts, pil[0])
    pixel_values = det.processor.image_processor(pil, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        enc, row_ids, row_mask = det.encode(ids, mask, pixel_values, len(texts))
        ref = det.model(
            input_ids=row_ids,
            attention_mask=row_mask,
            pixel_values=pixel_values.repeat_interleave(len(texts), 0),
            decoder_input_ids=torch.full((row_ids.shape[0], 1), 2),
        ).encoder_last_hidden_state
    assert row_ids.shape[0] == 6
    torch.testing.assert_close(enc.last_hidden_state, ref, rtol=1e-4, atol=1e-5)
    # rows of different images really differ (the comparison above is not vacuous)
    assert not torch.allclose(enc.last_hidden_state[0], enc.last_hidden_state[3])


@pytest.mark.parametrize("kind", ["owlv2", "grounding-dino"])
def test_exif_rotated_file_is_detected_upright(model_dir, kind, tmp_path) -> None:
    """detect([path]) reads a file the way predict() does: EXIF-upright, so it equals the upright array."""
    upright = np.random.default_rng(3).integers(0, 255, (40, 64, 3), dtype=np.uint8)
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # (64, 40, 3): what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=100, subsampling=0)
    decoded = np.asarray(Image.open(path).convert("RGB"))  # JPEG's own rounding, still sideways
    expected_input = np.ascontiguousarray(np.rot90(decoded, k=-1))
    assert expected_input.shape == upright.shape

    detector = load(model_dir, kind, box_threshold=0.0)
    onto = CaptionOntology({"a cat": "cat", "a dog": "dog"})
    (from_file,) = detector.detect([path], onto)
    (from_array,) = detector.detect([expected_input], onto)
    assert len(from_array) > 0
    np.testing.assert_array_equal(from_file.xyxy, from_array.xyxy)
    np.testing.assert_array_equal(from_file.confidence, from_array.confidence)
    np.testing.assert_array_equal(from_file.class_id, from_array.class_id)
    assert from_file.xyxy[:, 2].max() > 40  # boxes live in the upright frame (width 64), not the stored one


FAMILY_SETTINGS = {  # the options beyond the shared thresholds that change what a family finds
    "grounding-dino": {"captions_per_pass", "phrase_score"},
    "owlv2": set(),  # one query per caption: the captions per pass only change the speed
    "florence-2": {"captions_per_pass", "max_new_tokens", "num_beams"},
    "omdet-turbo": {"captions_per_pass", "max_detections"},
}


@pytest.mark.parametrize("kind", list(FAMILY_SETTINGS))
def test_settings_name_the_options_in_effect(model_dir, kind) -> None:
    """``settings()`` (a labeling job's fingerprint) holds the family and its output-changing
    options with the defaults filled in, and no speed-only option."""
    det = load(model_dir, kind)
    settings = det.settings()
    assert settings["family"] == kind
    assert set(settings) == {"family", "box_threshold", "nms_iou", "negative_iou"} | FAMILY_SETTINGS[kind]
    assert settings["box_threshold"] == type(det).default_box_threshold  # the default, filled in
    assert "batch_size" not in settings and "use_autocast" not in settings
    stricter = load(model_dir, kind, box_threshold=0.25, batch_size=7).settings()
    if kind == "florence-2":  # no scores: the threshold is not applied, so it does not count
        assert stricter == settings
    else:
        assert stricter == {**settings, "box_threshold": 0.25}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_every_family_detects_in_tiles(model_dir, kind) -> None:
    """Issue 28: each family runs tiled (tile="auto" finds its input side) and its boxes (and SAM 3's
    masks) come back in the whole image's pixels, inside it."""
    from grounded_sam.pipeline.tiling import TileOptions, detect_tiled, detector_input_side, tile_windows

    det = load(model_dir, kind, box_threshold=0.0, **({"max_new_tokens": 8} if kind == "florence-2" else {}))
    side = detector_input_side(det)
    assert isinstance(side, int) and side > 0, kind
    image = np.random.default_rng(5).integers(0, 255, (150, 200, 3), dtype=np.uint8)
    seen = []
    detect = det.detect
    det.detect = lambda images, onto: seen.append([im.shape[:2] for im in images]) or detect(images, onto)
    (out,) = detect_tiled(det, [image], ONTO, TileOptions(64, 0.25))
    assert seen == [[(64, 64)] * len(tile_windows((150, 200), 64, 0.25))]  # one call, every tile
    assert isinstance(out, sv.Detections) and set(DATA_KEYS) <= set(out.data)
    if len(out):
        assert (out.xyxy[:, :2] >= -1e-3).all() and (out.xyxy[:, 2] <= 200 + 1e-3).all()
        assert (out.xyxy[:, 3] <= 150 + 1e-3).all()
    if out.mask is not None:
        assert out.mask.shape == (len(out), 150, 200)
