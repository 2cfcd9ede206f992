"""GroundedSAM end to end with tiny random detector and segmenter checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from grounded_sam import GroundedSAM, GroundedSAM2
from ontologies import CaptionOntology
from tiny import SAM_IMAGE_SIZE

ONTOLOGY = {"a cat": "cat", "kitten": "cat", "a dog": "dog"}


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_models):
    return tiny_models


@pytest.fixture(scope="module")
def pipeline(models) -> GroundedSAM:
    owl, sam = models
    return GroundedSAM(
        ONTOLOGY, detector=str(owl), segmenter="sam2.1_hiera_tiny", checkpoint=sam,
        image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0, nms_iou=0.3,
    )


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_predict_contract(pipeline: GroundedSAM) -> None:
    img = _image(90, 120, 0)
    det = pipeline.predict(img)
    assert isinstance(det, sv.Detections) and len(det) > 0
    n = len(det)
    assert det.mask.shape == (n, 90, 120) and det.mask.dtype == bool
    assert det.xyxy.shape == (n, 4) and det.xyxy.dtype == np.float32
    assert (det.xyxy[:, [0, 2]] >= 0).all() and (det.xyxy[:, [0, 2]] <= 120).all()
    assert set(det.class_id.tolist()) <= {0, 1}
    assert det.confidence.shape == (n,) and det.data["mask_score"].shape == (n,)
    assert [pipeline.classes[c] for c in det.class_id] == det.data["class_name"].tolist()
    assert all(pipeline.ontology.caption_class(c) == k for c, k in zip(det.data["caption"], det.data["class_name"]))
    # the masks are the segmenter's: equal to decoding the same boxes with the ImagePredictor
    pred = pipeline.predictor
    pred.set_image(img)
    masks, scores, _ = pred.predict(box=det.xyxy, multimask_output=False)
    masks = masks.reshape(n, 90, 120).astype(bool)
    assert np.array_equal(masks, det.mask)
    np.testing.assert_allclose(scores.reshape(n), det.data["mask_score"], atol=1e-6)


def test_inputs_path_pil_array_agree(pipeline: GroundedSAM, tmp_path) -> None:
    img = _image(64, 80, 1)
    path = tmp_path / "x.png"
    Image.fromarray(img).save(path)
    a, b, c = pipeline.predict(img), pipeline.predict(Image.fromarray(img)), pipeline.predict(str(path))
    for other in (b, c):
        assert np.array_equal(a.xyxy, other.xyxy) and np.array_equal(a.mask, other.mask)


def test_predict_batch_equals_predict(pipeline: GroundedSAM) -> None:
    imgs = [_image(90, 120, 2), _image(50, 70, 3)]
    batch = pipeline.predict_batch(imgs)
    assert len(batch) == 2
    for img, det in zip(imgs, batch):
        single = pipeline.predict(img)
        assert len(single) == len(det)
        np.testing.assert_allclose(single.xyxy, det.xyxy, atol=1e-4)
        assert (single.mask != det.mask).mean() < 1e-3
    with pytest.raises(ValueError, match="list of images"):
        pipeline.predict_batch(imgs[0])
    assert pipeline.predict_batch([]) == []


class _NothingFound:
    def detect(self, images, ontology):
        return [sv.Detections.empty() for _ in images]


def test_empty_result_has_the_right_shapes(pipeline: GroundedSAM) -> None:
    gs = GroundedSAM(ONTOLOGY, detector=_NothingFound(), segmenter=pipeline.predictor, device="cpu")
    det = gs.predict(_image(40, 60, 4))
    assert len(det) == 0 and det.mask.shape == (0, 40, 60) and det.xyxy.shape == (0, 4)
    assert det.data["class_name"].shape == (0,) and det.data["mask_score"].shape == (0,)
    merged = sv.Detections.merge([det, det])
    assert len(merged) == 0


class _SameBoxTwice:
    """Finds one box for both classes (as OWL does when two captions score one patch) and another box."""

    def detect(self, images, ontology):
        xyxy = np.array([[10, 8, 50, 40], [30, 20, 70, 60], [10, 8, 50, 40]], np.float32)
        return [sv.Detections(xyxy=xyxy, confidence=np.array([0.9, 0.8, 0.7], np.float32),
                              class_id=np.array([0, 1, 1]),
                              data={"class_name": np.array(["cat", "dog", "dog"]),
                                    "caption": np.array(["a cat", "a dog", "a dog"])}) for _ in images]


def test_a_box_found_twice_is_segmented_once(pipeline: GroundedSAM) -> None:
    """Each box is its own prompt: the pipeline decodes a repeated box once and gives both
    detections the mask and score that decoding the boxes one by one gives."""
    gs = GroundedSAM(ONTOLOGY, detector=_SameBoxTwice(), segmenter=pipeline.predictor, device="cpu")
    img = _image(70, 90, 6)
    det = gs.predict(img)
    assert len(det) == 3 and det.class_id.tolist() == [0, 1, 1]
    pred = gs.predictor
    pred.set_image(img)
    for i, box in enumerate(det.xyxy):
        mask, score, _ = pred.predict(box=box, multimask_output=False)
        assert np.array_equal(mask.reshape(70, 90).astype(bool), det.mask[i])
        np.testing.assert_allclose(score.reshape(()), det.data["mask_score"][i], atol=1e-6)
    assert np.array_equal(det.mask[0], det.mask[2]) and not np.array_equal(det.mask[0], det.mask[1])


def test_multimask_picks_best_and_postprocess(models, pipeline: GroundedSAM) -> None:
    owl, sam = models
    img = _image(90, 120, 5)
    gs = GroundedSAM(ONTOLOGY, detector=pipeline.detector, segmenter=pipeline.predictor, device="cpu", multimask=True)
    det = gs.predict(img)
    pred = gs.predictor
    pred.set_image(img)
    masks, scores, _ = pred.predict(box=det.xyxy, multimask_output=True)
    masks, scores = masks.reshape(len(det), 3, 90, 120), scores.reshape(len(det), 3)
    best = scores.argmax(1)
    assert np.array_equal(masks[np.arange(len(det)), best].astype(bool), det.mask)
    np.testing.assert_allclose(scores.max(1), det.data["mask_score"], atol=1e-6)
    smooth = GroundedSAM(ONTOLOGY, detector=pipeline.detector, segmenter=pipeline.predictor, device="cpu",
                         min_hole_area=50, min_island_area=50)
    d2 = smooth.predict(img)
    assert d2.mask.shape == pipeline.predict(img).mask.shape


def test_objects_and_alias(pipeline: GroundedSAM) -> None:
    assert GroundedSAM2 is GroundedSAM
    gs = GroundedSAM2(CaptionOntology(ONTOLOGY), detector=pipeline.detector, segmenter=pipeline.predictor.model, device="cpu")
    assert gs.classes == ["cat", "dog"]
    with pytest.raises(ValueError, match="detector_model_id"):
        GroundedSAM(ONTOLOGY, detector=pipeline.detector, segmenter=pipeline.predictor, detector_model_id="x")
    with pytest.raises(FileNotFoundError, match="checkpoint '/no/such/checkpoint.pt' does not exist"):
        GroundedSAM(ONTOLOGY, detector=pipeline.detector, segmenter="/no/such/checkpoint.pt", device="cpu")
    with pytest.raises(ValueError, match="ontology is empty"):
        GroundedSAM({}, detector=pipeline.detector, segmenter=pipeline.predictor)


def test_from_config(models, tmp_path) -> None:
    owl, sam = models
    preset = tmp_path / "p.yaml"
    (tmp_path / "onto.yaml").write_text("a cat: cat\na dog: dog\n")
    preset.write_text(
        f"ontology: onto.yaml\ndetector: {{name: owlv2, model_id: '{owl}', box_threshold: 0.0}}\n"
        f"segmenter: {{name: sam2.1_hiera_tiny, checkpoint: '{sam}', image_size: {SAM_IMAGE_SIZE}}}\n"
        "device: cpu\nmultimask: true\n"
    )
    gs = GroundedSAM.from_config(preset)
    assert gs.classes == ["cat", "dog"] and gs.multimask and gs.predictor.model.image_size == SAM_IMAGE_SIZE
    assert len(gs.predict(_image(50, 50, 6))) > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("detector: {name: owlv2, colour: red}\n")
    with pytest.raises(ValueError, match="unknown keys in 'detector'"):
        GroundedSAM.from_config(bad)
    from grounded_sam.pipeline.presets import load_preset

    assert load_preset("default")["segmenter"] == "sam2.1_hiera_tiny"
