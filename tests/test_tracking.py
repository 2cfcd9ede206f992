"""Text-prompted tracking: track bookkeeping with a scripted scene, then end to end with tiny models."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import supervision as sv

from grounded_sam import GroundedSAM
from grounded_sam.tracking.sam2 import GroundedTracker
from ontologies import CaptionOntology
from tiny import SAM_IMAGE_SIZE

H, W = 48, 64
# object -> (class id, frames where it is visible, box at frame t)
SCRIPT = {
    "cat": (0, set(range(0, 12)) | set(range(18, 22)), lambda t: (2 + t, 4, 18 + t, 20)),
    "dog": (1, set(range(4, 22)), lambda t: (40, 20 + t % 3, 60, 40 + t % 3)),
}
ONTO = CaptionOntology({"a cat": "cat", "a dog": "dog"})


def _boxes(t: int) -> dict[str, tuple[int, int, int, int]]:
    return {name: box(t) for name, (_, frames, box) in SCRIPT.items() if t in frames}


def _rect(box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((H, W), bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


class ScriptedDetector:
    def detect(self, images, ontology):
        out = []
        for img in images:
            t = int(img[0, 0, 0])  # the frame index is written into the pixels
            found = _boxes(t)
            names = list(found)
            out.append(sv.Detections(
                xyxy=np.array([found[n] for n in names], dtype=np.float32).reshape(-1, 4),
                confidence=np.full(len(names), 0.9, dtype=np.float32),
                class_id=np.array([SCRIPT[n][0] for n in names], dtype=int),
                data={"class_name": np.array(names, dtype=str), "caption": np.array([f"a {n}" for n in names], dtype=str)},
            ))
        return out


class OraclePredictor:
    """Stands in for the SAM 2 video predictor: it 'tracks' the scripted objects perfectly."""

    def init_stream(self):
        return {"t": -1, "objects": {}}

    def add_frame(self, state, frame):
        state["t"] += 1
        return state["t"]

    def _logits(self, state):
        t = state["t"]
        found = _boxes(t)
        ids = list(state["objects"])
        masks = np.stack([_rect(found[state["objects"][i]]) if state["objects"][i] in found else np.zeros((H, W), bool)
                          for i in ids]) if ids else np.zeros((0, H, W), bool)
        import torch

        return ids, torch.from_numpy(np.where(masks, 10.0, -10.0)).float()[:, None]

    def track(self, state):
        ids, logits = self._logits(state)
        return state["t"], ids, logits

    def add_new_boxes(self, state, obj_ids, boxes, frame_idx=None):
        t = state["t"] if frame_idx is None else frame_idx
        found = _boxes(t)
        for obj_id, box in zip(obj_ids, boxes):
            best = max(found, key=lambda n: sv.box_iou_batch(np.array([box]), np.array([found[n]]))[0, 0])
            state["objects"][obj_id] = best
        ids, logits = self._logits(state)
        return t, ids, logits

    def remove_object(self, state, obj_id, need_output=True):
        del state["objects"][obj_id]

    def box_masks(self, state, boxes, frame_idx=None):
        import torch

        masks = np.stack([_rect(tuple(int(v) for v in b)) for b in boxes])
        return torch.from_numpy(np.where(masks, 10.0, -10.0)).float()[:, None]  # (D, 1, H, W) logits


class _Pipeline:
    ontology = ONTO
    detector = ScriptedDetector()


def _frames(n: int):
    for t in range(n):
        f = np.zeros((H, W, 3), np.uint8)
        f[0, 0, 0] = t
        yield f


def test_track_bookkeeping() -> None:
    tracker = GroundedTracker(_Pipeline(), redetect_every=2, max_lost=3, video_predictor=OraclePredictor())
    seen: dict[int, dict[int, str]] = {}
    for t, det in tracker.run(list(_frames(22))):
        assert det.mask.shape == (len(det), H, W)
        seen[t] = {int(i): str(c) for i, c in zip(det.tracker_id, det.data["class_name"])}
    # the cat gets id 1 at frame 0 and keeps it through every re-detection while visible
    assert all(seen[t].get(1) == "cat" for t in range(0, 12))
    # the dog appears at frame 4 (between detection frames 4 and 6): picked up at frame 4 with id 2
    assert all(2 not in seen[t] for t in range(0, 4))
    assert all(seen[t].get(2) == "dog" for t in range(4, 22))
    # the cat leaves at 12: not output, retired after max_lost=3 empty frames
    assert all(1 not in seen[t] for t in range(12, 22))
    assert [tr.tracker_id for tr in tracker.retired][:1] == [1]
    # it is seen again at 18: a new track with a new id (ids are never reused)
    assert all(seen[t].get(3) == "cat" for t in range(18, 22))
    assert set().union(*[set(s) for s in seen.values()]) == {1, 2, 3}


def test_track_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="redetect_every"):
        GroundedTracker(_Pipeline(), redetect_every=0, video_predictor=OraclePredictor())
    with pytest.raises(ValueError, match="max_lost"):
        GroundedTracker(_Pipeline(), max_lost=0, video_predictor=OraclePredictor())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_models) -> GroundedSAM:
    owl, sam = tiny_models
    return GroundedSAM({"a cat": "cat", "a dog": "dog"}, detector=str(owl), segmenter="sam2.1_hiera_tiny",
                       checkpoint=sam, image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0, nms_iou=0.1)


@pytest.mark.slow
def test_track_end_to_end_with_tiny_models(pipeline: GroundedSAM, tmp_path) -> None:
    from grounded_sam.tracking.outputs import write_tracking_outputs
    from grounded_sam.assets.samples import write_synthetic_video

    video = tmp_path / "clip.mp4"
    write_synthetic_video(video, num_frames=5, size=(48, 64))
    frames, ids = [], set()
    for t, det in pipeline.track(video, redetect_every=2):
        frames.append(t)
        assert det.mask.shape[1:] == (48, 64) and det.tracker_id.shape == (len(det),)
        assert len(set(det.tracker_id.tolist())) == len(det)  # one detection per track per frame
        assert set(det.data) >= {"class_name", "caption", "mask_score"}
        ids.update(det.tracker_id.tolist())
    assert frames == list(range(5))
    assert ids and min(ids) >= 1
    summary = write_tracking_outputs(pipeline, video, tmp_path / "out", redetect_every=2)
    assert "5 frames" in summary
    with av.open(str(tmp_path / "out" / "tracked.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in c.decode(video=0)) == 5
    lines = (tmp_path / "out" / "frames.jsonl").read_text().splitlines()
    assert len(lines) == 5
    coco = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert len(coco["images"]) == 5 and all("track_id" in a for a in coco["annotations"])
