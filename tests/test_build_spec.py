"""Objects from load_detector / build_sam / from_pretrained remember how they were built, so a
pipeline made of them goes to label(backend="ray"); objects built by hand keep the clear error."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from detectors import DetectorSpec, load_detector
from grounded_sam import GroundedSAM
from segmenter import ModelSpec, build_sam, from_pretrained
from tiny import SAM_IMAGE_SIZE


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_models):
    return tiny_models


def test_objects_remember_their_recipe(checkpoints, tmp_path, monkeypatch) -> None:
    owl, sam = checkpoints
    monkeypatch.chdir(owl.parent)
    detector = load_detector("owlv2", model_id=owl.name, device="cpu", box_threshold=0.0)
    assert detector.build_spec == DetectorSpec("owlv2", str(owl.resolve()), (("box_threshold", 0.0),))
    model = build_sam("sam2.1_hiera_tiny", checkpoint=sam, device="cpu", image_size=SAM_IMAGE_SIZE)
    assert model.build_spec == ModelSpec("sam2.1_hiera_tiny", str(sam.resolve()), SAM_IMAGE_SIZE)
    assert from_pretrained(sam, device="cpu", image_size=SAM_IMAGE_SIZE).build_spec == model.build_spec
    assert not hasattr(build_sam("sam2.1_hiera_tiny", device="cpu", image_size=SAM_IMAGE_SIZE), "build_spec")  # random
    rebuilt = model.build_spec.build("cpu")
    for (k, a), b in zip(model.state_dict().items(), rebuilt.state_dict().values()):
        assert a.equal(b), k
    spec = GroundedSAM({"a cat": "cat"}, detector=detector, segmenter=model, device="cpu").spec()
    assert spec["detector"] == detector.build_spec and spec["segmenter"] == model.build_spec


def test_hand_built_objects_keep_the_clear_error(checkpoints) -> None:
    owl, sam = checkpoints

    class MyDetector:
        def detect(self, images, ontology):  # noqa: ANN001, ANN201
            raise AssertionError("not called")

    model = build_sam("sam2.1_hiera_tiny", device="cpu", image_size=SAM_IMAGE_SIZE)  # random weights: no recipe
    with pytest.raises(ValueError, match="detector was given as a MyDetector object built by hand"):
        GroundedSAM({"cat": "cat"}, detector=MyDetector(), segmenter=model, device="cpu").spec()
    detector = load_detector("owlv2", model_id=str(owl), device="cpu")
    with pytest.raises(ValueError, match="segmenter was given as a SAM2Model object built by hand"):
        GroundedSAM({"cat": "cat"}, detector=detector, segmenter=model, device="cpu").spec()


@pytest.mark.slow  # starts a local Ray
def test_ray_labels_a_pipeline_made_of_objects(checkpoints, tmp_path) -> None:
    owl, sam = checkpoints
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    gs = GroundedSAM({"a cat": "cat", "a dog": "dog"},
                     detector=load_detector("owlv2", model_id=str(owl), device="cpu", box_threshold=0.0, nms_iou=0.2),
                     segmenter=build_sam("sam2.1_hiera_tiny", checkpoint=sam, device="cpu", image_size=SAM_IMAGE_SIZE),
                     device="cpu")
    local = gs.label(folder, ".png", tmp_path / "local", progress=False)
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        remote = gs.label(folder, ".png", tmp_path / "ray", progress=False, backend="ray", num_workers=1,
                          num_cpus_per_worker=0.5)
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old
    assert (local.labeled, remote.labeled) == (4, 4) and not remote.failed
    assert (tmp_path / "ray" / "annotations.json").read_bytes() == (tmp_path / "local" / "annotations.json").read_bytes()
