"""Labeling a folder of videos (local backend): one video COCO per video + index.json, resumable per video.

The Ray backend's video jobs run on a real two-node cluster in tests/test_ray_cluster.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from grounded_sam import GroundedSAM
from grounded_sam.tracking.outputs import write_tracking_outputs
from grounded_sam.labeling import STORE_DIR, LabelingConfigError
from grounded_sam.labeling.videos import INDEX_NAME, TrackOptions, label_videos
from grounded_sam.assets.samples import write_synthetic_video
from tiny import SAM_IMAGE_SIZE

VIDEOS = {"a.mp4": (4, 0), "b.mkv": (3, 1), "sub/c.mp4": (3, 2)}  # name -> (frames, seed)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_models):
    owl, sam = tiny_models
    gs = GroundedSAM({"a cat": "cat", "a dog": "dog"}, detector=str(owl), segmenter="sam2.1_hiera_tiny",
                     checkpoint=sam, image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0, nms_iou=0.2)
    folder = tmp_path_factory.mktemp("videos")
    (folder / "sub").mkdir()
    for name, (n, seed) in VIDEOS.items():
        write_synthetic_video(folder / name, num_frames=n, size=(48, 64), objects=2, seed=seed)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    (folder / "notes.txt").write_text("not a video")
    return gs, folder


def _run(gs, folder, out, **kw):
    return label_videos(gs, folder, out, track=TrackOptions(redetect_every=2), fingerprint=gs.fingerprint(),
                        recursive=True, progress=False, **kw)


@pytest.fixture(scope="module")
def first_run(setup, tmp_path_factory):
    gs, folder = setup
    out = tmp_path_factory.mktemp("first") / "out"
    return _run(gs, folder, out), out


def _tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_one_coco_per_video_and_an_index(setup, first_run, tmp_path) -> None:
    gs, folder = setup
    report, out = first_run
    assert (report.total, report.labeled, report.skipped, report.unit) == (4, 3, 0, "videos")
    assert list(report.failed) == [str(folder / "broken.mp4")] and "broken.mp4" in report.summary()
    index = json.loads((out / INDEX_NAME).read_text())
    assert [v["name"] for v in index["videos"]] == ["a.mp4", "b.mkv", "sub/c.mp4"]
    assert [c["name"] for c in index["categories"]] == ["cat", "dog"]
    tracks = 0
    for entry in index["videos"]:
        coco = json.loads((out / entry["file_name"]).read_text())
        frames = VIDEOS[entry["name"]][0]
        assert entry["file_name"] == f"videos/{entry['name']}.json"
        assert (entry["frames"], entry["width"], entry["height"]) == (frames, 64, 48)
        assert [im["frame_index"] for im in coco["images"]] == list(range(frames))
        assert coco["videos"][0]["name"] == Path(entry["name"]).name
        assert all(a["video_id"] == 1 and a["track_id"] >= 1 for a in coco["annotations"])
        assert entry["tracks"] == len({a["track_id"] for a in coco["annotations"]})
        assert entry["instances"] == len(coco["annotations"])
        tracks += entry["tracks"]
    assert tracks > 0 and report.instances_written == sum(v["instances"] for v in index["videos"])
    # each file is what the `track` command's COCO holds for that video
    write_tracking_outputs(gs, folder / "b.mkv", tmp_path / "track", redetect_every=2, outputs=("coco",))
    assert (tmp_path / "track" / "annotations.json").read_bytes() == (out / "videos/b.mkv.json").read_bytes()
    assert not (tmp_path / "track" / "tracked.mp4").exists() and not (tmp_path / "track" / "frames.jsonl").exists()


@pytest.mark.slow
def test_resume_per_video(setup, first_run, tmp_path) -> None:
    gs, folder = setup
    out = tmp_path / "out"
    shutil.copytree(first_run[1], out)
    first = _tree(out)
    again = _run(gs, folder, out)
    assert (again.labeled, again.skipped) == (0, 3) and _tree(out) == first  # finished videos are not redone
    kept = out / "videos" / "a.mp4.json", (out / "videos" / "a.mp4.json").stat().st_mtime_ns
    (out / "videos" / "b.mkv.json").write_text('{"images": [')  # a torn file (its record no longer matches)
    (out / "videos" / "sub" / "c.mp4.json").unlink()  # as if killed before it was written
    report = _run(gs, folder, out)
    assert (report.labeled, report.skipped) == (2, 1)
    assert kept[0].stat().st_mtime_ns == kept[1]  # the finished one was not rewritten
    assert _tree(out) == first  # byte-identical to the uninterrupted run
    assert not [p for p in out.rglob("*") if ".gs-tmp" in p.name or "partial" in p.name]


def test_changed_settings_and_bad_arguments(setup, tmp_path) -> None:
    gs, folder = setup
    out = tmp_path / "out"
    label_videos(gs, folder, out, track=TrackOptions(redetect_every=2), fingerprint=gs.fingerprint(), progress=False,
                 extension=".mkv")
    with pytest.raises(LabelingConfigError, match="videos.redetect_every: 2 -> 3"):  # other tracking settings: refused
        label_videos(gs, folder, out, track=TrackOptions(redetect_every=3), fingerprint=gs.fingerprint(),
                     progress=False, extension=".mkv")
    assert (out / STORE_DIR / "manifest.json").is_file()
    with pytest.raises(ValueError, match="tracker must be"):
        TrackOptions(tracker="kalman")
    with pytest.raises(ValueError, match="redetect_every"):
        TrackOptions(redetect_every=0)
    with pytest.raises(ValueError, match="video COCO"):
        label_videos(gs, folder, tmp_path / "y", format="yolo")
    with pytest.raises(FileNotFoundError):
        label_videos(gs, tmp_path / "missing", tmp_path / "z")


@pytest.mark.slow
def test_pipeline_label_videos(setup, tmp_path) -> None:
    """``GroundedSAM.label(..., videos=True)`` is this job; extension defaults to the video types."""
    gs, folder = setup
    report = gs.label(folder, output_folder=tmp_path / "out", videos=True, redetect_every=2, progress=False)
    assert (report.total, report.labeled) == (3, 2)  # a.mp4, b.mkv (no recursion), broken.mp4 fails
    assert sorted(os.listdir(tmp_path / "out" / "videos")) == ["a.mp4.json", "b.mkv.json"]


def test_tracker_settings_in_effect_are_the_fingerprint(setup, tmp_path) -> None:
    """``auto`` and the defaults are recorded as what they stand for; the memory policy counts; a
    refused rerun changes no file; ``overwrite`` relabels."""
    gs, folder = setup
    out = tmp_path / "out"
    report = gs.label(folder, output_folder=out, videos=True, extension=".mkv", progress=False)
    assert report.labeled == 1
    manifest = json.loads((out / STORE_DIR / "manifest.json").read_text())
    assert manifest["fingerprint"]["config"]["videos"] == {"tracker": "sam2", "redetect_every": 15, "memory": "fifo"}
    same = gs.label(folder, output_folder=out, videos=True, extension=".mkv", tracker="sam2", redetect_every=15,
                    memory="fifo", progress=False)  # the same settings spelled out: resumed
    assert (same.labeled, same.skipped) == (0, 1)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    with pytest.raises(LabelingConfigError, match='videos.memory: "fifo" -> "quality"') as refused:
        gs.label(folder, output_folder=out, videos=True, extension=".mkv", memory="quality", progress=False)
    assert refused.value.changes == [("videos.memory", "fifo", "quality")]
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(ValueError, match="unknown memory policy"):
        TrackOptions(memory="lru")
    again = gs.label(folder, output_folder=out, videos=True, extension=".mkv", memory="quality", overwrite=True,
                     progress=False)
    assert (again.labeled, again.skipped) == (1, 0)
