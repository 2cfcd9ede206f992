"""SAM 3 concept tracking (``grounded_sam.tracking.sam3``) against transformers' streaming loop.

The reference is transformers' own example loop, run on a tiny random ``Sam3VideoModel``:
``processor(images=frame)``, ``model(session, frame=pixel_values[0])``,
``processor.postprocess_outputs``, every frame kept in the session. Ours prunes the session
after every frame; the outputs must stay identical.

The random model is biased so that tracking is not vacuous: the tracker's object-score head
says "present" (+2), the detection thresholds sit among the random scores (which depend mostly
on the caption), and re-conditioning is frequent and easy (every 2nd frame) so that
conditioning frames pile up beyond ``max_cond_frame_num`` and their pruning is exercised.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import supervision as sv
import torch
from tiny_detectors import tiny_sam3, tiny_sam3_video
from transformers import Sam3VideoModel, Sam3VideoProcessor

from grounded_sam.assets.samples import SyntheticScene
from grounded_sam.tracking.sam3_memory import FrameWindow, tensor_bytes
from grounded_sam.tracking.sam3 import Sam3ConceptTracker
from ontologies import CaptionOntology

CAPTIONS = ["a cat", "a dog", "red car"]  # lower case: the session's prompt texts are these exactly
FRAMES = 10
WINDOW = {"num_maskmem": 3, "max_pointers": 4, "max_cond": 2}
PARITY = {  # thresholds among the random scores: 8 objects over the 3 captions
    "score_threshold_detection": 0.53,
    "new_det_thresh": 0.53,
    "recondition_every_nth_frame": 2,
    "high_conf_thresh": 0.5,
    "high_iou_thresh": 0.3,
}


def scene_frames(n: int, size: tuple[int, int] = (72, 96)) -> list[np.ndarray]:
    return list(SyntheticScene(size, objects=3, seed=1).frames(n))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model, processor = tiny_sam3_video(**WINDOW, **PARITY)
    d = tmp_path_factory.mktemp("sam3_video")
    model.save_pretrained(d)
    processor.save_pretrained(d)
    return str(d)


def transformers_loop(model, processor, frames, texts):
    """transformers' streaming example, unchanged: per frame the postprocessed outputs; the session."""
    session = processor.init_video_session(inference_device="cpu")
    processor.add_text_prompt(session, texts)
    results = []
    for frame in frames:
        inputs = processor(images=frame, device="cpu", return_tensors="pt")
        out = model(inference_session=session, frame=inputs.pixel_values[0])
        results.append(processor.postprocess_outputs(session, out, original_sizes=inputs.original_sizes))
    return results, session


@pytest.fixture(scope="module")
def reference(model_dir):
    model, processor = Sam3VideoModel.from_pretrained(model_dir).eval(), Sam3VideoProcessor.from_pretrained(model_dir)
    results, session = transformers_loop(model, processor, scene_frames(FRAMES), CAPTIONS)
    return results, tensor_bytes(session)


def run(tracker: Sam3ConceptTracker, frames) -> tuple[list[sv.Detections], object]:
    """Our detections per frame, and the session as it was after the last frame."""
    out, last_session = [], None
    for t, _, det in tracker.frames(frames):
        out.append(det)
        last_session = tracker.session
    return out, last_session


def assert_same_as_reference(ours: list[sv.Detections], reference, reported=lambda t, row: True) -> dict:
    """Frame by frame: the reference's objects (rows) for which ``reported`` holds, masks identical,
    scores to 1e-5, one stable tracker id per SAM 3 object id (1, 2, ... never reused)."""
    ids: dict[int, int] = {}
    for t, (det, ref) in enumerate(zip(ours, reference, strict=True)):
        text_of = {o: text for text, objs in ref["prompt_to_obj_ids"].items() for o in objs}
        obj_ids = ref["object_ids"].tolist()
        rows = [i for i in range(len(obj_ids)) if reported(t, i)]
        assert len(det) == len(rows), f"frame {t}"
        for j, i in enumerate(rows):
            expected = ids.setdefault(obj_ids[i], len(ids) + 1)
            assert det.tracker_id[j] == expected, f"frame {t}"
            assert det.data["caption"][j] == text_of[obj_ids[i]]
        assert np.array_equal(det.mask, ref["masks"][rows].numpy()), f"frame {t}"
        np.testing.assert_allclose(det.confidence, ref["scores"][rows].numpy(), rtol=0, atol=1e-5)
        np.testing.assert_array_equal(det.xyxy, ref["boxes"][rows].numpy())
        assert det.mask.dtype == bool and det.xyxy.dtype == np.float32 and det.mask.shape[1:] == (72, 96)
        assert det.data["has_score"].all()
    return ids


# ----------------------------------------------------------------------------- parity
def test_tracks_equal_transformers_streaming_loop_with_pruning(model_dir, reference) -> None:
    results, reference_bytes = reference
    nonempty = [len(r["object_ids"]) for r in results]
    assert sum(n >= 2 for n in nonempty) >= FRAMES - 1, nonempty  # objects are tracked on (almost) every frame
    assert {text for r in results for text in r["prompt_to_obj_ids"]} == set(CAPTIONS)  # every caption finds objects

    tracker = Sam3ConceptTracker({c: c.split()[-1] for c in CAPTIONS}, model_id=model_dir, device="cpu")
    ours, session = run(tracker, scene_frames(FRAMES))
    ids = assert_same_as_reference(ours, results)
    assert len(ids) >= 6
    for det in ours:
        assert list(det.data["class_name"]) == [tracker.ontology.classes()[c] for c in det.class_id]

    # pruning happened within the run and changed nothing above
    per_obj = session.output_dict_per_obj.values()
    cond = [len(o["cond_frame_outputs"]) for o in per_obj]
    assert max(cond) > WINDOW["max_cond"], cond  # re-conditioning piled up conditioning frames
    for o in per_obj:
        assert len(o["non_cond_frame_outputs"]) <= WINDOW["max_pointers"] - 1
        with_memory = [t for t, out in o["cond_frame_outputs"].items() if "maskmem_features" in out]
        assert len(with_memory) <= WINDOW["max_cond"] + WINDOW["num_maskmem"] - 1
        assert all("high_res_masks" not in out for out in o["non_cond_frame_outputs"].values())
    assert isinstance(session.processed_frames, FrameWindow) and len(session.processed_frames) == FRAMES
    assert len(list(session.processed_frames)) == 1
    assert tensor_bytes(session) < 0.5 * reference_bytes


def greedy_nms_rows(masks: np.ndarray, scores: np.ndarray, rows: list[int], iou: float) -> set[int]:
    """Rows (of one class) that survive mask NMS: highest score first, ties in row order."""
    from detectors.mask_ops import mask_iou

    kept: list[int] = []
    for i in sorted(rows, key=lambda r: -scores[r]):
        if all(mask_iou(masks[i : i + 1], masks[k : k + 1])[0, 0] <= iou for k in kept):
            kept.append(i)
    return set(kept)


@pytest.mark.slow
def test_many_captions_one_class_class_thresholds_and_nms(model_dir, reference) -> None:
    results, _ = reference
    onto = CaptionOntology({"a cat": "animal", "a dog": "animal", "red car": "vehicle"}, thresholds={"vehicle": 0.585})
    tracker = Sam3ConceptTracker(onto, model_id=model_dir, device="cpu")  # nms_iou=0.5
    ours, _ = run(tracker, scene_frames(FRAMES))

    expected, merged = [], 0
    for ref in results:
        text_of = {o: text for text, objs in ref["prompt_to_obj_ids"].items() for o in objs}
        texts = [text_of[o] for o in ref["object_ids"].tolist()]
        scores, masks = ref["scores"].numpy(), ref["masks"].numpy()
        animals = [i for i, text in enumerate(texts) if text != "red car"]
        cars = {i for i, text in enumerate(texts) if text == "red car" and scores[i] >= 0.585}
        kept = greedy_nms_rows(masks, scores, animals, 0.5) | greedy_nms_rows(masks, scores, sorted(cars), 0.5)
        merged += len(animals) - len(kept - cars)
        expected.append(kept)
    assert merged > 0, "no cat and dog masks overlapped: NMS across a class's captions is untested"
    assert_same_as_reference(ours, results, reported=lambda t, row: row in expected[t])

    seen = set()
    for det in ours:
        for cid, name, caption in zip(det.class_id, det.data["class_name"], det.data["caption"]):
            assert (cid, name) == ((0, "animal") if caption in ("a cat", "a dog") else (1, "vehicle"))
            seen.add(caption)
    assert seen == set(CAPTIONS)
    scores = {o: s for r in results for o, s in zip(r["object_ids"].tolist(), r["scores"].tolist())}
    cars = {o for r in results for o in r["prompt_to_obj_ids"].get("red car", [])}
    assert any(scores[o] < 0.585 for o in cars) and any(scores[o] >= 0.585 for o in cars)  # not vacuous


@pytest.mark.slow
def test_negative_captions_hide_overlapping_objects_of_their_class(model_dir, reference) -> None:
    from detectors.mask_ops import mask_iou

    results, _ = reference
    onto = CaptionOntology.from_dict(
        {"classes": {"pet": {"captions": ["a cat"], "negative": ["a dog"]}, "car": {"captions": ["red car"]}}}
    )
    tracker = Sam3ConceptTracker(onto, model_id=model_dir, device="cpu", negative_iou=0.1, nms_iou=None)
    ours, _ = run(tracker, scene_frames(FRAMES))
    hidden = 0
    for det, ref in zip(ours, results):
        text_of = {o: text for text, objs in ref["prompt_to_obj_ids"].items() for o in objs}
        obj_ids = ref["object_ids"].tolist()
        masks = ref["masks"].numpy()
        dogs = [i for i, o in enumerate(obj_ids) if text_of[o] == "a dog"]
        keep = []
        for i, o in enumerate(obj_ids):
            if text_of[o] == "a cat" and dogs and mask_iou(masks[i : i + 1], masks[dogs]).max() > 0.1:
                hidden += 1
                continue
            if text_of[o] != "a dog":
                keep.append(i)
        assert np.array_equal(det.mask, masks[keep])
        assert "a dog" not in set(det.data["caption"])
    assert hidden > 0, "no cat overlapped a dog: the test would be vacuous"


def test_frames_without_objects_give_empty_detections_with_every_field(model_dir) -> None:
    tracker = Sam3ConceptTracker({"a cat": "cat"}, model_id=model_dir, device="cpu", score_threshold=0.99)
    dets = [det for _, det in tracker.track(scene_frames(2))]
    assert len(dets) == 2
    for det in dets:
        assert len(det) == 0 and det.mask.shape == (0, 72, 96) and det.tracker_id.shape == (0,)
        assert set(det.data) == {"class_name", "caption", "has_score"}
    merged = sv.Detections.merge(dets)  # the fields line up
    assert len(merged) == 0


# ----------------------------------------------------------------------------- memory
@pytest.mark.slow
def test_session_memory_does_not_grow_with_video_length() -> None:
    torch.manual_seed(0)
    model, processor = tiny_sam3_video(
        **WINDOW, score_threshold_detection=0.585, new_det_thresh=0.585, recondition_every_nth_frame=4,
        high_conf_thresh=0.5, high_iou_thresh=0.3,
    )
    frames = SyntheticScene((48, 64), objects=3, seed=1).frames(400)  # a generator: no frame list is held
    tracker = Sam3ConceptTracker({"red car": "car"}, model_id=(model, processor), device="cpu")
    measured, tracked = {}, 0
    for t, _, det in tracker.frames(frames):
        tracked += len(det) > 0
        if t + 1 in (50, 400):
            measured[t + 1] = tensor_bytes(tracker.session)
            per_obj = tracker.session.output_dict_per_obj.values()
            assert max(len(o["non_cond_frame_outputs"]) for o in per_obj) <= WINDOW["max_pointers"] - 1
    print(f"session tensors: 50 frames {measured[50]} B, 400 frames {measured[400]} B ({measured[400] / measured[50]:.3f}x)")
    assert tracked >= 390
    assert measured[400] <= 1.15 * measured[50]

    # the measure sees growth when nothing is pruned
    unbounded = Sam3ConceptTracker(
        {"red car": "car"}, model_id=(model, processor), device="cpu", bounded_memory=False
    )
    sizes = {}
    for t, _, _ in unbounded.frames(SyntheticScene((48, 64), objects=3, seed=1).frames(40)):
        if t + 1 in (20, 40):
            sizes[t + 1] = tensor_bytes(unbounded.session)
    assert sizes[40] > 1.5 * sizes[20]


# ----------------------------------------------------------------------------- errors
def test_bad_input(model_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match="empty"):
        Sam3ConceptTracker({}, model_id=model_dir, device="cpu")
    tracker = Sam3ConceptTracker({"a cat": "cat"}, model_id=model_dir, device="cpu")
    missing = tmp_path / "no_such_video.mp4"
    with pytest.raises(FileNotFoundError, match="no_such_video.mp4"):
        tracker.track(missing)  # raised when called, not on the first frame
    with pytest.raises(ValueError, match="tokens"):
        Sam3ConceptTracker({"a very " * 20 + "long caption": "x"}, model_id=model_dir, device="cpu")
    with pytest.raises(ValueError, match="score_threshold"):
        Sam3ConceptTracker({"a cat": "cat"}, model_id=model_dir, device="cpu", score_threshold=1.5)


def test_loading_errors(tmp_path, monkeypatch) -> None:
    with pytest.raises(OSError, match="no such folder"):
        Sam3ConceptTracker({"a cat": "cat"}, model_id=str(tmp_path / "missing"), device="cpu")
    with pytest.raises(OSError, match="hf download facebook/sam3"):  # offline and not cached
        Sam3ConceptTracker({"a cat": "cat"}, device="cpu")
    model, proc = tiny_sam3()
    model.save_pretrained(tmp_path / "image_only")
    proc.save_pretrained(tmp_path / "image_only")
    with pytest.raises(ValueError, match="'sam3' checkpoint"):
        Sam3ConceptTracker({"a cat": "cat"}, model_id=str(tmp_path / "image_only"), device="cpu")
    monkeypatch.setitem(sys.modules, "transformers.models.sam3_video", None)  # as if it did not exist
    with pytest.raises(ImportError, match=r"transformers>=5\.0"):
        Sam3ConceptTracker({"a cat": "cat"}, model_id=str(tmp_path / "image_only"), device="cpu")
