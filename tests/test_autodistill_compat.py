"""grounded_sam.compat.autodistill: autodistill's GroundedSAM2 constructor, BGR predict / plot, and
label() returning an sv.DetectionDataset in autodistill's YOLO train/valid layout (no autodistill needed)."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv
import yaml
from PIL import Image

from grounded_sam.export.annotate import annotate_image
from grounded_sam.compat.autodistill import GroundedSAM2, plot
from tiny import SAM_IMAGE_SIZE


class AutodistillOntology:
    """The parts of autodistill's CaptionOntology that user code hands over (promptMap, prompts, classes)."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.promptMap = list(mapping.items())

    def prompts(self) -> list[str]:
        return [p for p, _ in self.promptMap]

    def classes(self) -> list[str]:
        return [c for _, c in self.promptMap]


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_models):
    owl, sam = tiny_models
    ontology = AutodistillOntology({"a cat": "cat", "a dog": "dog"})
    return GroundedSAM2(ontology=ontology, model=str(owl), segmenter="sam2.1_hiera_tiny", checkpoint=sam,
                        image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0)


def test_constructor_and_bgr_predict(model) -> None:
    assert model.ontology.classes() == ["cat", "dog"] and model.pipeline.classes == ["cat", "dog"]
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    got = model.predict(np.ascontiguousarray(rgb[..., ::-1]))  # BGR in, as autodistill passes cv2 arrays
    want = model.pipeline.predict(rgb)
    assert isinstance(got, sv.Detections) and len(got) == len(want) > 0
    np.testing.assert_array_equal(got.xyxy, want.xyxy)
    np.testing.assert_array_equal(got.mask, want.mask)


def test_plot_takes_and_returns_bgr(model) -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    dets = model.pipeline.predict(rgb)
    out = plot(np.ascontiguousarray(rgb[..., ::-1]), dets, ["cat", "dog"], raw=True)
    np.testing.assert_array_equal(out, annotate_image(rgb, dets, ["cat", "dog"])[..., ::-1])


def test_label_returns_a_dataset_in_autodistills_layout(model, tmp_path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(folder / f"im{i}.jpg")
    (folder / "other.png").write_bytes(b"not listed: another extension")
    dataset = model.label(str(folder), extension=".jpg", progress=False)
    out = tmp_path / "images_labeled"  # autodistill's default output folder
    assert isinstance(dataset, sv.DetectionDataset) and len(dataset) == 5
    assert dataset.classes == ["cat", "dog"]
    train = sorted(p.name for p in (out / "train" / "images").iterdir())
    valid = sorted(p.name for p in (out / "valid" / "images").iterdir())
    assert (len(train), len(valid)) == (4, 1) and not set(train) & set(valid)
    assert set(train) | set(valid) == {f"im{i}.jpg" for i in range(5)}
    for split, names in (("train", train), ("valid", valid)):
        assert sorted(p.name for p in (out / split / "labels").iterdir()) == [n.replace(".jpg", ".txt") for n in names]
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {"train": str((out / "train" / "images").resolve()), "val": str((out / "valid" / "images").resolve()),
                    "nc": 2, "names": ["cat", "dog"]}
    _, _, annotations = dataset[0]
    assert annotations.mask is not None  # YOLO-seg polygons read back as masks
    again = model.label(str(folder), extension=".jpg", progress=False)  # resumes; the same split
    assert len(again) == 5 and sorted(p.name for p in (out / "valid" / "images").iterdir()) == valid
