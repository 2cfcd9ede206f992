"""Ray Data labeling backend: the same records and dataset files as the local backend.

Tiny random detector + segmenter checkpoints, a local Ray (2 CPUs, actors at 0.5 CPU each so the
pool never holds every CPU slot, token auth off), shut down at the end of the module.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image
from pyarrow import fs as pafs

from grounded_sam import GroundedSAM
from grounded_sam.pipeline.files import list_images
from gsam_runtime.images import ImageLoadError, load_image
from grounded_sam.labeling import STORE_DIR, PipelineFactory, label_folder_ray, list_remote_images
from tiny import SAM_IMAGE_SIZE

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("heavy")]  # starts a local Ray (one xdist worker)

N_IMAGES, BATCH = 20, 2
RAY = dict(backend="ray", num_workers=2, num_cpus_per_worker=0.5)


@pytest.fixture(scope="module")
def ray_session():
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # Ray >= 2.5x turns token auth on by default
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()
    if old is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = old


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_models):
    owl, sam = tiny_models
    gs = GroundedSAM({"a cat": "cat", "a dog": "dog"}, detector=str(owl), segmenter="sam2.1_hiera_tiny",
                     checkpoint=sam, image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0, nms_iou=0.2)
    root = tmp_path_factory.mktemp("data")
    folder = root / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        h, w = rng.integers(32, 72, 2)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    local = gs.label(folder, ".png", root / "local", batch_size=BATCH, progress=False)
    return gs, folder, root, local


@pytest.fixture(scope="module")
def ray_run(setup, ray_session):
    gs, folder, root, _ = setup
    return gs.label(folder, ".png", root / "ray", batch_size=BATCH, progress=False, **RAY)


def _tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _records(out: Path) -> list[Path]:
    return sorted((out / STORE_DIR / "records").rglob("*.json"))


def test_ray_output_is_byte_identical_to_local(setup, ray_run) -> None:
    gs, folder, root, local = setup
    bad = str(folder / "broken.png")
    assert set(local.failed) == {bad} and "broken.png" in local.failed[bad]
    assert ray_run.failed == local.failed  # reported by name, with the local backend's reason
    assert (ray_run.total, ray_run.labeled, ray_run.skipped) == (N_IMAGES + 1, N_IMAGES, 0)
    assert (ray_run.images_written, ray_run.instances_written) == (local.images_written, local.instances_written)
    assert local.instances_written > N_IMAGES  # the tiny random models do find things
    ours, theirs = _tree(root / "ray"), _tree(root / "local")
    assert sorted(ours) == sorted(theirs) and len(_records(root / "ray")) == N_IMAGES
    for name in theirs:  # annotations.json (RLE included), images/, records, manifest
        assert ours[name] == theirs[name], name
    assert ray_run.files == [root / "ray" / "annotations.json"]


def test_resume_skips_finished_images(setup, ray_run, tmp_path) -> None:
    gs, folder, root, local = setup
    out = tmp_path / "resumed"
    shutil.copytree(root / "ray", out)
    records = _records(out)
    dropped = records[::4]  # 5 of 20, as if the job had been killed before them
    kept = {p: p.stat().st_mtime_ns for p in records if p not in dropped}
    for p in dropped:
        p.unlink()
    (out / "annotations.json").unlink()
    report = gs.label(folder, ".png", out, batch_size=BATCH, progress=False, **{**RAY, "num_workers": 1})
    assert (report.labeled, report.skipped) == (len(dropped), N_IMAGES - len(dropped))  # only those were predicted
    assert report.failed == local.failed  # the broken image is retried and fails again
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # finished records were not rewritten
    assert _tree(out) == _tree(root / "local")


def test_remote_filesystem_input(setup, ray_session, tmp_path) -> None:
    """Inputs read through a pyarrow filesystem (the path for s3:// etc.): same annotations."""
    gs, folder, root, local = setup
    fs = pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem())
    factory = PipelineFactory({**gs.spec(), "device": "cpu"})
    report = label_folder_ray(factory, "/images", tmp_path / "remote", gs.classes, extension=".png",
                              batch_size=BATCH, progress=False, fingerprint=gs.fingerprint(), filesystem=fs,
                              num_workers=1, num_cpus_per_worker=0.5)
    bad = str(folder / "broken.png")
    assert report.labeled == N_IMAGES  # reported by URI, with the reason the local loader gives
    assert report.failed == {"/images/broken.png": local.failed[bad].replace(bad, "/images/broken.png")}
    ours, theirs = _tree(tmp_path / "remote"), _tree(root / "local")
    assert ours["annotations.json"] == theirs["annotations.json"]
    assert {k: v for k, v in ours.items() if k.startswith("images/")} == {
        k: v for k, v in theirs.items() if k.startswith("images/")}


def test_remote_listing_and_loading_match_local(tmp_path) -> None:
    (tmp_path / "sub" / ".hidden").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ["b.PNG", "a.png", "sub/c.png", "sub/.d.png", "sub/.hidden/e.png", "f.jpg"]:
        Image.fromarray(rng.integers(0, 255, (8, 9, 3), dtype=np.uint8)).save(tmp_path / name, format="PNG")
    (tmp_path / "empty.png").write_bytes(b"")
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    for recursive in (False, True):
        _, items, _ = list_remote_images("/", ".png", recursive=recursive, filesystem=fs)
        expected = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, ".png", recursive=recursive)]
        assert [it.rel for it in items] == expected
    by_rel = {it.rel: it for it in items}
    assert np.array_equal(by_rel["sub/c.png"].load(), load_image(tmp_path / "sub" / "c.png"))
    assert by_rel["a.png"].stat()["size"] == (tmp_path / "a.png").stat().st_size
    with pytest.raises(ImageLoadError, match="empty"):
        by_rel["empty.png"].load()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_remote_images("/nowhere", filesystem=fs)
    with pytest.raises(NotADirectoryError):
        list_remote_images("/a.png", filesystem=fs)


class _Fixed:
    def detect(self, images, ontology):
        return [sv.Detections.empty() for _ in images]


def test_argument_errors(setup, tmp_path) -> None:
    gs, folder, root, _ = setup
    with pytest.raises(ValueError, match="backend must be"):
        gs.label(folder, ".png", tmp_path / "x", backend="spark")
    objects = GroundedSAM({"a cat": "cat"}, detector=_Fixed(), segmenter=gs.predictor, device="cpu")
    with pytest.raises(ValueError, match="detector was given as a _Fixed object"):
        objects.label(folder, ".png", tmp_path / "x", backend="ray")
    spec = gs.spec()
    assert Path(spec["detector"]).is_absolute() and spec["ontology"] == gs.ontology
    factory = PipelineFactory(spec)
    for kwargs, match in [({"num_workers": 0}, "num_workers"), ({"num_gpus_per_worker": -1}, "num_gpus_per_worker"),
                          ({"num_cpus_per_worker": 0}, "num_cpus_per_worker")]:
        with pytest.raises(ValueError, match=match):
            label_folder_ray(factory, folder, tmp_path / "x", gs.classes, extension=".png", **kwargs)
    with pytest.raises(ValueError, match="needs local inputs"):
        label_folder_ray(factory, "s3://bucket/images", tmp_path / "x", gs.classes, copy_images="symlink")


def test_ray_labels_with_sam3_like_the_local_backend(ray_session, tiny_sam3_dir, tmp_path) -> None:
    """A pipeline whose detector segments by itself (sam3, no SAM 2) rebuilds on the workers."""
    gs = GroundedSAM({"a cat": "cat", "a dog": "dog"}, detector=tiny_sam3_dir, device="cpu", box_threshold=0.4)
    assert gs.predictor is None
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    local = gs.label(folder, ".png", tmp_path / "local", batch_size=2, progress=False)
    remote = gs.label(folder, ".png", tmp_path / "ray", batch_size=2, progress=False, **RAY)
    assert local.ok and remote.ok and local.instances_written > 0
    assert _tree(tmp_path / "local") == _tree(tmp_path / "ray")
    # exemplar boxes (every image, and one image's own) travel to the workers with the job
    visual = dict(exemplars={"dog": [[2, 2, 30, 30]]}, image_exemplars={"img1.png": {"exemplars": {"cat": [[30, 10, 60, 40]]}}})
    local = gs.label(folder, ".png", tmp_path / "local_ex", batch_size=2, progress=False, **visual)
    remote = gs.label(folder, ".png", tmp_path / "ray_ex", batch_size=2, progress=False, **visual, **RAY)
    assert local.ok and remote.ok
    assert _tree(tmp_path / "local_ex") == _tree(tmp_path / "ray_ex") != _tree(tmp_path / "local")


def test_other_settings_refused_and_overwrite_keeps_reviewed_like_local(setup, ray_run, tmp_path) -> None:
    """Issue 25: the Ray backend refuses a rerun with other settings (no file changes) and its
    overwrite keeps the reviewed records, writing the same files as the local backend."""
    from grounded_sam.app.review import ReviewFolder
    from grounded_sam.labeling import LabelingConfigError

    gs, folder, root, _ = setup
    stricter = GroundedSAM(**{**gs.spec(), "box_threshold": 0.05})
    outs = {}
    for backend, extra in (("ray", RAY), ("local", {})):
        out = outs[backend] = tmp_path / backend
        shutil.copytree(root / "ray", out)
        review = ReviewFolder(out)
        rel = review.names[3]
        review.save(rel, review.detections(rel)[:1])
        before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
        with pytest.raises(LabelingConfigError, match=r"detector.box_threshold: 0.0 -> 0.05"):
            stricter.label(folder, ".png", out, batch_size=BATCH, progress=False, **extra)
        assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == before
        report = stricter.label(folder, ".png", out, batch_size=BATCH, progress=False, overwrite=True, **extra)
        assert (report.labeled, report.skipped, report.kept_reviewed) == (N_IMAGES, 0, 1)  # the reviewed: its model output
        assert ReviewFolder(out).is_reviewed(rel)
    assert _tree(outs["ray"]) == _tree(outs["local"])
