"""The detector registry, ``load_detector`` and image validation (no model weights)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image

import detectors
from detectors import DEFAULT_MODEL_IDS, Detector, available_detectors, load_detector, register_detector
from detectors.base import _REGISTRY
from detectors.images import load_image, load_images
from ontologies import CaptionOntology

ROOT = Path(__file__).resolve().parents[1]


class EchoDetector:
    """A user plug-in: one full-image box per image, for the first class."""

    def __init__(self, model_id=None, device=None, **options):
        self.model_id, self.device, self.options = model_id, device, options

    def detect(self, images, ontology):
        out = []
        for im in load_images(images):
            out.append(
                sv.Detections(
                    xyxy=np.array([[0, 0, im.width, im.height]], np.float32),
                    confidence=np.array([1.0], np.float32),
                    class_id=np.array([0]),
                    data={
                        "class_name": np.array([ontology.classes()[0]]),
                        "caption": np.array([ontology.prompts()[0]]),
                    },
                )
            )
        return out


@pytest.fixture
def clean_registry():
    before = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(before)


def test_builtin_names_and_defaults() -> None:
    names = available_detectors()
    for name in ("grounding-dino", "owlv2", "owlvit", "florence-2", "omdet-turbo"):
        assert name in names
        assert detectors.default_model_id(name) == DEFAULT_MODEL_IDS[name]
    assert DEFAULT_MODEL_IDS["grounding-dino"] == "iSEE-Laboratory/llmdet_tiny"
    assert DEFAULT_MODEL_IDS["florence-2"].startswith("florence-community/")
    # every default id is documented in the package docstring table
    for model_id in DEFAULT_MODEL_IDS.values():
        assert model_id in detectors.__doc__
    assert detectors.default_model_id("Grounding_DINO") == DEFAULT_MODEL_IDS["grounding-dino"]


def test_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match="unknown detector 'yolo'.*grounding-dino.*owlv2"):
        load_detector("yolo")
    with pytest.raises(ValueError, match="non-empty string"):
        load_detector("  ")


def test_register_and_load_a_user_detector(clean_registry) -> None:
    register_detector("echo", EchoDetector, default_model_id="me/echo-v1")
    det = load_detector("ECHO", device="cpu", gain=2)
    assert isinstance(det, EchoDetector) and isinstance(det, Detector)
    assert det.model_id == "me/echo-v1" and det.device == "cpu" and det.options == {"gain": 2}
    assert load_detector("echo", model_id="/some/dir").model_id == "/some/dir"
    onto = CaptionOntology({"a cat": "cat"})
    out = det.detect([np.zeros((5, 7, 3), np.uint8)], onto)
    assert out[0].xyxy.tolist() == [[0, 0, 7, 5]]
    with pytest.raises(ValueError, match="already registered"):
        register_detector("echo", EchoDetector)
    register_detector("echo", EchoDetector, overwrite=True)

    @register_detector("echo-2")
    class Echo2(EchoDetector):
        pass

    assert Echo2.__name__ == "Echo2"  # the decorator returns the class
    assert isinstance(load_detector("echo-2"), Echo2)
    assert load_detector("echo-2").model_id is None


def test_load_detector_instances_and_bad_factories(clean_registry) -> None:
    det = EchoDetector()
    assert load_detector(det) is det
    with pytest.raises(ValueError, match="instance"):
        load_detector(det, device="cpu")
    with pytest.raises(ValueError, match="name"):
        load_detector(42)
    register_detector("broken", lambda **kw: object())
    with pytest.raises(TypeError, match="no detect"):
        load_detector("broken")
    with pytest.raises(TypeError, match="callable"):
        register_detector("nope", "not callable")


def test_import_is_light() -> None:
    code = "import sys, detectors; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- images
def test_load_images_accepts_arrays_pil_paths(tmp_path) -> None:
    arr = np.random.default_rng(0).integers(0, 255, (6, 9, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    gray = Image.fromarray(arr[..., 0])  # mode "L"
    ims = load_images([arr, gray, str(path), path])
    assert [im.mode for im in ims] == ["RGB"] * 4
    assert [im.size for im in ims] == [(9, 6)] * 4
    np.testing.assert_array_equal(np.asarray(ims[0]), arr)
    np.testing.assert_array_equal(np.asarray(ims[2]), arr)
    assert len(load_images(arr)) == 1  # a single image
    assert len(load_images(np.stack([arr, arr]))) == 2  # an (N, H, W, 3) batch


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((4, 4, 3), np.float32), "uint8.*float32"),
        (np.zeros((4, 4, 2), np.uint8), r"shape \(4, 4, 2\)"),
        (np.zeros((4, 4, 5), np.uint8), r"\(H, W, 3\).*\(4, 4, 5\)"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (3.5, "float"),
    ],
)
def test_load_image_rejects_bad_arrays(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        load_images([np.zeros((2, 2, 3), np.uint8), bad])
    with pytest.raises(ValueError, match=r"images\[1\]"):
        load_images([np.zeros((2, 2, 3), np.uint8), bad])


def test_load_image_bad_files(tmp_path) -> None:
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_image(corrupt)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_detectors_decode_like_every_other_package(tmp_path) -> None:
    """One decoder: grey, RGBA and 16-bit inputs come out as gsam_runtime.images.load_image makes them."""
    from gsam_runtime.images import load_image as shared_load_image

    rng = np.random.default_rng(1)
    grey = rng.integers(0, 255, (5, 7), dtype=np.uint8)
    rgba = rng.integers(0, 255, (5, 7, 4), dtype=np.uint8)
    deep = (rng.integers(0, 65535, (5, 7), dtype=np.uint16))
    Image.fromarray(deep).save(tmp_path / "deep.png")  # a 16-bit grey PNG
    inputs = [grey, rgba, tmp_path / "deep.png"]
    for got, src in zip(load_images(inputs), inputs, strict=True):
        np.testing.assert_array_equal(np.asarray(got), shared_load_image(src))
