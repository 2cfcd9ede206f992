"""A ``label`` rerun never merges settings: every setting that can change a label is in the job's
fingerprint (weights by content), a rerun that differs is refused and changes no file, and
``overwrite`` relabels while keeping the images reviewed in the app."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image

from grounded_sam import GroundedSAM
from grounded_sam.app.review import ReviewFolder
from grounded_sam.labeling import STORE_DIR, LabelingConfigError
from ontologies import CaptionOntology
from grounded_sam.pipeline.weights import cache_dir, file_sha256, hub_commit, module_weights_id, weights_id
from segmenter import ImagePredictor, build_sam
from tiny import SAM_IMAGE_SIZE, save_tiny_owlv2, save_tiny_sam

ONTOLOGY = {"a cat": "cat", "a dog": "dog"}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_models):
    """Tiny checkpoints, 3 images, and a dataset labeled from them (the baseline every case reruns)."""
    root = tmp_path_factory.mktemp("integrity")
    owl, sam = tiny_models
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(48, 64), (40, 40), (64, 52)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    base = make(owl, sam)
    report = base.label(images, ".png", root / "baseline", progress=False)
    assert report.labeled == 3 and report.instances_written > 0
    return owl, sam, images, root / "baseline"


def make(owl: Path, sam: Path, **changes) -> GroundedSAM:
    kwargs = dict(ontology=ONTOLOGY, detector=str(owl), segmenter="sam2.1_hiera_tiny", checkpoint=sam,
                  image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0, nms_iou=0.2)
    return GroundedSAM(**{**kwargs, **changes})


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` (the store included): its bytes and mtime."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


CHANGES = {  # each setting changed alone -> the fingerprint entry that must name it
    "image_size": (dict(image_size=128), "segmenter.image_size", 256, 128),
    "box_threshold": (dict(box_threshold=0.05), "detector.box_threshold", 0.0, 0.05),
    "text_threshold": (dict(text_threshold=0.05), "detector.box_threshold", 0.0, 0.05),  # effective threshold
    "class_threshold": (dict(ontology=CaptionOntology.from_dict({"classes": {
        "cat": {"captions": ["a cat"], "threshold": 0.2}, "dog": {"captions": ["a dog"]}}})), "ontology", ONTOLOGY, None),
    "nms_iou": (dict(nms_iou=0.7), "detector.nms_iou", 0.2, 0.7),
    "negative_iou": (dict(detector_options={"negative_iou": 0.9}), "detector.negative_iou", 0.5, 0.9),
    "multimask": (dict(multimask=True), "segmenter.multimask", False, True),
    "postprocess": (dict(min_hole_area=4), "postprocess.min_hole_area", 0, 4),
}


@pytest.mark.parametrize("case", list(CHANGES))
def test_each_setting_changed_alone_is_refused_and_changes_no_file(world, tmp_path, case) -> None:
    owl, sam, images, baseline = world
    changes, key, old, new = CHANGES[case]
    out = tmp_path / "ds"
    shutil.copytree(baseline, out)
    before = snapshot(out)
    with pytest.raises(LabelingConfigError) as refused:
        make(owl, sam, **changes).label(images, ".png", out, progress=False)
    names = {name for name, _, _ in refused.value.changes}
    if case == "class_threshold":  # the plain ontology became the rich form: its entries differ
        assert any(name.startswith("ontology.") for name in names), names
    else:
        assert refused.value.changes == [(key, old, new)]
        assert f"{key}: {json.dumps(old)} -> {json.dumps(new)}" in str(refused.value)
    assert "nothing was changed" in str(refused.value) and "overwrite=True" in str(refused.value)
    assert snapshot(out) == before


def test_mask_threshold_is_part_of_the_fingerprint(world, tmp_path) -> None:
    owl, sam, images, baseline = world
    out = tmp_path / "ds"
    shutil.copytree(baseline, out)
    model = build_sam("sam2.1_hiera_tiny", checkpoint=sam, device="cpu", image_size=SAM_IMAGE_SIZE)
    same = make(owl, None, segmenter=ImagePredictor(model), checkpoint=None)
    assert same.label(images, ".png", out, progress=False).skipped == 3  # the same weights loaded by hand
    before = snapshot(out)
    with pytest.raises(LabelingConfigError) as refused:
        make(owl, None, segmenter=ImagePredictor(model, mask_threshold=1.0), checkpoint=None).label(
            images, ".png", out, progress=False)
    assert refused.value.changes == [("segmenter.mask_threshold", 0.0, 1.0)]
    assert snapshot(out) == before


def test_other_weights_at_the_same_path_are_refused(world, tmp_path) -> None:
    owl, sam, images, _ = world
    det_dir, ckpt = tmp_path / "owl", tmp_path / "sam.pt"
    shutil.copytree(owl, det_dir)
    shutil.copy(sam, ckpt)
    out = tmp_path / "ds"
    make(det_dir, ckpt).label(images, ".png", out, progress=False)
    before = snapshot(out)

    (tmp_path / "other_sam").mkdir()
    save_tiny_sam(tmp_path / "other_sam", seed=1).replace(ckpt)  # another checkpoint, same file name
    with pytest.raises(LabelingConfigError) as refused:
        make(det_dir, ckpt).label(images, ".png", out, progress=False)
    assert [name for name, _, _ in refused.value.changes] == ["segmenter.weights"]
    assert snapshot(out) == before

    shutil.copy(sam, ckpt)  # the first weights again: accepted
    assert make(det_dir, ckpt).label(images, ".png", out, progress=False).skipped == 3
    before = snapshot(out)
    (tmp_path / "other_owl").mkdir()
    other = save_tiny_owlv2(tmp_path / "other_owl", seed=1)
    shutil.copy(other / "model.safetensors", det_dir / "model.safetensors")
    with pytest.raises(LabelingConfigError) as refused:
        make(det_dir, ckpt).label(images, ".png", out, progress=False)
    assert [name for name, _, _ in refused.value.changes] == ["detector.weights"]
    assert snapshot(out) == before


def test_same_weights_copied_elsewhere_are_accepted(world, tmp_path) -> None:
    owl, sam, images, baseline = world
    out = tmp_path / "ds"
    shutil.copytree(baseline, out)
    det_dir, ckpt = tmp_path / "elsewhere" / "detector", tmp_path / "elsewhere" / "weights.pt"
    shutil.copytree(owl, det_dir)
    shutil.copy(sam, ckpt)
    os.utime(ckpt, ns=(1, 1))  # another mtime too: the content decides
    report = make(det_dir, ckpt).label(images, ".png", out, progress=False)
    assert (report.labeled, report.skipped) == (0, 3)


def _review_first_image(out: Path) -> tuple[str, sv.Detections]:
    folder = ReviewFolder(out)
    rel = folder.names[0]
    dets = folder.detections(rel)
    assert len(dets) > 1
    fixed = dets[:1]  # a person kept one instance and deleted the rest
    folder.save(rel, fixed)
    return rel, fixed


def _instances(out: Path, rel: str) -> int:
    coco = json.loads((out / "annotations.json").read_text())
    image = next(im for im in coco["images"] if im["file_name"].endswith(rel))
    return sum(1 for a in coco["annotations"] if a["image_id"] == image["id"])


def test_overwrite_relabels_and_keeps_reviewed_records(world, tmp_path) -> None:
    owl, sam, images, baseline = world
    out = tmp_path / "ds"
    shutil.copytree(baseline, out)
    rel, fixed = _review_first_image(out)
    stricter = make(owl, sam, box_threshold=0.05, nms_iou=0.7)
    with pytest.raises(LabelingConfigError):
        stricter.label(images, ".png", out, progress=False)
    report = stricter.label(images, ".png", out, progress=False, overwrite=True)
    assert (report.labeled, report.skipped, report.kept_reviewed) == (3, 0, 1)  # the reviewed one for its model output
    assert "1 reviewed kept" in report.summary()
    assert _instances(out, rel) == len(fixed)  # the reviewed fix, not the new model output
    assert ReviewFolder(out).is_reviewed(rel)
    from grounded_sam.labeling.store import RecordStore

    manifest = json.loads((out / STORE_DIR / "manifest.json").read_text())
    stored = RecordStore.open(out, manifest["fingerprint"]).read_rel(rel)
    fresh = stricter.predict(images / rel)
    assert len(stored.model) == len(fresh) and stored.record["reviewed"]  # the new settings' model output
    for other in (f"img{i}.png" for i in range(3)):
        if other != rel:
            assert _instances(out, other) == len(stricter.predict(images / other).mask.any(axis=(1, 2)).nonzero()[0])
    again = stricter.label(images, ".png", out, progress=False)  # the new settings resume as usual
    assert (again.labeled, again.skipped) == (0, 3)

    with pytest.raises(ValueError, match="overwrite=True"):
        stricter.label(images, ".png", out, progress=False, discard_reviewed=True)
    report = stricter.label(images, ".png", out, progress=False, overwrite=True, discard_reviewed=True)
    assert (report.labeled, report.kept_reviewed) == (3, 0)
    assert not ReviewFolder(out).is_reviewed(rel)


def test_refusal_message_names_every_change(world, tmp_path) -> None:
    owl, sam, images, baseline = world
    out = tmp_path / "ds"
    shutil.copytree(baseline, out)
    with pytest.raises(LabelingConfigError) as refused:
        make(owl, sam, image_size=128, box_threshold=0.5).label(images, ".png", out, progress=False)
    text = str(refused.value)
    assert "segmenter.image_size: 256 -> 128" in text and "detector.box_threshold: 0.0 -> 0.5" in text


# ---------------------------------------------------------------------------- weights by content
def test_file_hash_is_cached_by_path_size_and_mtime(tmp_path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"weights" * 1000)
    real = file_sha256(path)
    cache_file = cache_dir() / "weight-hashes.json"
    cache = json.loads(cache_file.read_text())
    cache[str(path.resolve())]["sha256"] = "cached-value"
    cache_file.write_text(json.dumps(cache))
    assert file_sha256(path) == "cached-value"  # not read again
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: hashed anew
    assert file_sha256(path) == real
    path.write_bytes(b"other")
    assert file_sha256(path) != real


def test_folder_identity_ignores_location_and_hidden_files(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (a / "config.json").write_text("{}")
    (a / "model.safetensors").write_bytes(b"\x00" * 64)
    shutil.copytree(a, b)
    (b / ".cache").mkdir()
    (b / ".cache" / "download.metadata").write_text("local-dir bookkeeping")
    assert weights_id(a) == weights_id(b)
    (b / "model.safetensors").write_bytes(b"\x01" * 64)
    assert weights_id(a) != weights_id(b)
    (b / "model.safetensors").write_bytes(b"\x00" * 64)
    (b / "model.safetensors").rename(b / "renamed.safetensors")
    assert weights_id(a) != weights_id(b)  # names count too


def test_hub_id_is_identified_by_its_cached_commit(tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "snapshots" / ("a" * 40)).mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hub_commit("org/tiny") == "a" * 40
    assert weights_id("org/tiny") == f"hub:org/tiny@{'a' * 40}"
    (repo / "refs" / "main").write_text("b" * 40)  # another revision downloaded
    assert weights_id("org/tiny") == f"hub:org/tiny@{'b' * 40}"
    (repo / "refs" / "v1").write_text("c" * 40)
    assert hub_commit("org/tiny", "v1") == "c" * 40 and hub_commit("org/tiny", "a" * 40) == "a" * 40
    assert hub_commit("org/missing") is None and weights_id("org/missing") == "hub:org/missing@uncached"


def test_module_identity_follows_the_tensors() -> None:
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert module_weights_id(a) == module_weights_id(b)
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert module_weights_id(a) != module_weights_id(b)
    fp32 = module_weights_id(a)
    assert module_weights_id(a.to(torch.bfloat16)) != fp32  # the dtype counts


def test_manifest_records_the_weights_by_content(world, tmp_path) -> None:
    owl, sam, images, baseline = world
    out = tmp_path / "ds"
    shutil.copytree(baseline, out)
    manifest = json.loads((out / STORE_DIR / "manifest.json").read_text())
    assert manifest["fingerprint"]["config"]["segmenter"]["weights"].startswith("sha256:")
    assert manifest["fingerprint"]["config"]["detector"]["weights"] == weights_id(owl)
