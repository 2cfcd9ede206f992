"""VideoPredictor behaviour the parity tests do not cover: batching, streaming, bounded state, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference import randomize_
from segmenter import VideoPredictor, build_sam
from grounded_sam.assets.samples import SyntheticScene

S = 256
H, W = 96, 128
BATCH_TOL = 1e-3  # batched vs one-at-a-time: batched matrix products round differently (~1e-5)


@pytest.fixture(scope="module")
def predictor() -> VideoPredictor:
    model = build_sam("sam2.1_hiera_tiny", device="cpu", image_size=S)
    with torch.no_grad():
        randomize_(model, seed=0)
        model.sam_mask_decoder.pred_obj_score_head.layers[2].bias += 2.0  # objects present
    return VideoPredictor(model, fill_hole_area=0)


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    return SyntheticScene((H, W), objects=3, seed=2)


@pytest.fixture(scope="module")
def frames(scene) -> list[np.ndarray]:
    return [scene.frame(t) for t in range(40)]


def _run(predictor, state, **kw) -> dict[int, torch.Tensor]:
    return {t: m for t, _, m in predictor.propagate_in_video(state, **kw)}


@pytest.mark.slow
def test_batched_objects_equal_one_at_a_time(predictor, scene, frames) -> None:
    """Three objects with two memory layouts (one prompted later) tracked together give each
    object's single-object result; memory attention runs once per layout and frame."""
    video = frames[:8]
    prompts = [(1, 0, scene.boxes(0)[0]), (2, 0, scene.boxes(0)[1]), (3, 3, scene.boxes(3)[2])]
    state = predictor.init_state(video)
    for obj_id, t, box in prompts:
        predictor.add_new_points_or_box(state, t, obj_id, box=box)
    calls: list[int] = []
    attention = predictor.model.memory_attention
    original = attention.forward
    attention.forward = lambda *a, **k: calls.append(a[2].shape[1]) or original(*a, **k)
    try:
        together = _run(predictor, state)
    finally:
        del attention.forward
    assert sorted(together) == list(range(8))
    # 21 object-frames to track (prompted frames are not), in one call per memory layout: all
    # three objects share calls where their memories line up although their prompts differ
    assert sum(calls) == 21 and len(calls) == 11 and calls.count(3) == 3, str(calls)
    worst = 0.0
    for k, (obj_id, t, box) in enumerate(prompts):
        alone = predictor.init_state(video)
        predictor.add_new_points_or_box(alone, t, obj_id, box=box)
        for f, masks in _run(predictor, alone, start_frame_idx=0).items():
            worst = max(worst, (masks[0] - together[f][k]).abs().max().item())
    assert worst <= BATCH_TOL, worst


@pytest.mark.slow
def test_stream_equals_offline(predictor, scene, frames) -> None:
    """Frame-by-frame tracking, with an object joining mid-stream, gives the offline numbers;
    so does an iterator input. A stream holds at most two frames."""
    video = frames[:18]
    offline = predictor.init_state(video)
    predictor.add_new_points_or_box(offline, 0, "a", box=scene.boxes(0)[0])
    expected = _run(predictor, offline, max_frame_num_to_track=4)
    predictor.add_new_points_or_box(offline, 5, "b", box=scene.boxes(5)[1])
    expected.update(_run(predictor, offline, start_frame_idx=5))

    stream = predictor.init_stream()
    for t, frame in enumerate(video):
        idx = predictor.add_frame(stream, frame)
        if t == 0:
            predictor.add_new_points_or_box(stream, idx, "a", box=scene.boxes(0)[0])
        if t == 5:
            predictor.add_new_points_or_box(stream, idx, "b", box=scene.boxes(5)[1])
        f, ids, masks = predictor.track(stream)
        assert f == t and ids == (["a"] if t < 5 else ["a", "b"])
        assert torch.equal(masks, expected[t][: len(ids)])
        assert len(stream.source.held()) <= 1  # the frame just tracked
    assert stream.num_frames is None

    live = predictor.init_state(iter(video))  # forward-only input of unknown length, same calls
    assert live.num_frames is None
    predictor.add_new_points_or_box(live, 0, "a", box=scene.boxes(0)[0])
    got = _run(predictor, live, max_frame_num_to_track=4)
    predictor.add_new_points_or_box(live, 5, "b", box=scene.boxes(5)[1])
    got.update(_run(predictor, live, start_frame_idx=5))
    assert sorted(got) == list(range(18))
    assert all(torch.equal(got[t], expected[t]) for t in got)


def test_stream_before_prompt_and_frame_checks(predictor, frames) -> None:
    stream = predictor.init_stream()
    with pytest.raises(RuntimeError, match="no new frame"):
        predictor.track(stream)
    f, ids, masks = predictor.track(stream, frames[0])
    assert (f, ids, tuple(masks.shape)) == (0, [], (0, 1, H, W))
    with pytest.raises(ValueError, match="size"):
        predictor.add_frame(stream, np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="out of range"):
        predictor.add_new_points_or_box(stream, 3, 1, box=[0, 0, 10, 10])
    with pytest.raises(ValueError, match="add_frame needs a stream"):
        predictor.add_frame(predictor.init_state(frames[:2]), frames[0])
    with pytest.raises(ValueError, match="stream session"):
        predictor.track(predictor.init_state(frames[:2]))


@pytest.mark.slow
def test_stream_box_prompts_in_one_batch(predictor, scene, frames) -> None:
    """``box_masks`` decodes a frame's boxes without touching the session; ``add_new_boxes``
    starts several objects at once with the masks ``add_new_points_or_box`` gives one by one,
    and tracking goes on from them as from objects added one by one."""
    boxes = np.stack(scene.boxes(0)).astype(np.float32)
    batched, single = predictor.init_stream(), predictor.init_stream()
    for s in (batched, single):
        predictor.track(s, frames[0])
    preview = predictor.box_masks(batched, boxes)  # the stream's current frame: 0
    assert tuple(preview.shape) == (len(boxes), 1, H, W) and batched.objects == {}

    t, ids, masks = predictor.add_new_boxes(batched, ["a", "b", "c"], boxes)
    for obj_id, box in zip(["a", "b", "c"], boxes):
        _, ids_1, masks_1 = predictor.add_new_points_or_box(single, 0, obj_id, box=box)
    assert (t, ids) == (0, ids_1) and (masks - masks_1).abs().max() <= BATCH_TOL
    assert ((preview > 0) == (masks > 0)).float().mean() > 0.99  # same boxes, same frame, no memory
    for frame in frames[1:4]:
        (_, _, a), (_, _, b) = predictor.track(batched, frame), predictor.track(single, frame)
        assert (a - b).abs().max() <= BATCH_TOL

    with pytest.raises(ValueError, match="already used"):
        predictor.add_new_boxes(batched, ["a"], boxes[:1])
    with pytest.raises(ValueError, match="already used"):
        predictor.add_new_boxes(batched, ["d", "d"], boxes[:2])
    with pytest.raises(ValueError, match="3 boxes for 2 object ids"):
        predictor.add_new_boxes(batched, ["d", "e"], boxes)
    with pytest.raises(ValueError, match="not xyxy"):
        predictor.box_masks(batched, boxes[:, [2, 3, 0, 1]])
    with pytest.raises(ValueError, match="give frame_idx"):
        predictor.box_masks(predictor.init_state(frames[:2]), boxes)
    offline = predictor.init_state(frames[:2])
    assert predictor.add_new_boxes(offline, [1], boxes[:1], frame_idx=1)[0] == 1


@pytest.mark.slow
def test_state_stays_bounded(predictor, scene, frames) -> None:
    """While tracking 40 frames the number of stored entries and bytes stops growing, the
    prompted frame keeps its memory, and nothing is kept beyond the memory windows."""
    state = predictor.init_state(frames, offload_state_to_cpu=True)
    predictor.add_new_points_or_box(state, 0, 1, box=scene.boxes(0)[0])
    predictor.add_new_points_or_box(state, 0, 2, box=scene.boxes(0)[1])
    sizes = []
    for t, _, _ in predictor.propagate_in_video(state):
        entries = [e for o in state.objects.values() for e in (*o.cond.values(), *o.non_cond.values())]
        nbytes = sum(
            x.numel() * x.element_size()
            for e in entries
            for x in (e.maskmem, e.pred_masks, e.obj_ptr, e.object_score_logits)
            if x is not None
        )
        sizes.append((state.num_entries(), state.num_memory_entries(), nbytes))
        assert all(e.maskmem is None or e.maskmem.device.type == "cpu" for e in entries)
    assert len(sizes) == 40
    assert len(set(sizes[31:])) == 1, sizes[31:]  # constant once the windows separate
    num_entries, num_mem, _ = sizes[-1]
    # per object: the prompt; pointers of the 16 last frames and of the 15 after the prompt;
    # memories of the 7 last frames and of the 6 after the prompt
    assert num_entries == 2 * (1 + 16 + 15) and num_mem == 2 * (1 + 7 + 6)
    assert sorted(state.objects[1].non_cond) == [*range(1, 16), *range(24, 40)]
    assert all(e.maskmem is not None for o in state.objects.values() for e in o.cond.values())

    kept = predictor.init_state(frames[:20], keep_outputs=True)
    predictor.add_new_points_or_box(kept, 0, 1, box=scene.boxes(0)[0])
    _run(predictor, kept)
    assert kept.num_memory_entries() == 20  # like the reference: every frame


def test_options_hole_filling_non_overlap_and_offload(predictor, scene, frames, monkeypatch) -> None:
    import segmenter.video.predictor as vp

    fill_calls: list[int] = []
    fill = vp.fill_holes
    monkeypatch.setattr(vp, "fill_holes", lambda m, area: fill_calls.append(area) or fill(m, area))
    video = frames[:4]
    options = VideoPredictor(predictor.model, non_overlap_masks=True)  # fill_hole_area=8 by default
    plain, state = predictor.init_state(video), options.init_state(video, offload_state_to_cpu=True)
    for p, s in ((predictor, plain), (options, state)):
        p.add_new_points_or_box(s, 0, 1, box=scene.boxes(0)[0])
        p.add_new_points_or_box(s, 0, 2, box=scene.boxes(0)[1])
    for obj_id in (1, 2):  # hole filling only sets small background regions to 0.1
        a, b = plain.objects[obj_id].temp_cond[0].pred_masks, state.objects[obj_id].temp_cond[0].pred_masks
        assert b.device.type == "cpu" and (b[a != b] == 0.1).all()
    out = _run(options, state)
    assert fill_calls == [8] * (2 + 3)  # each prompt, then each tracked frame (both objects at once)
    for masks in out.values():
        assert ((masks > 0).sum(dim=0) <= 1).all()  # no pixel belongs to two objects
        losers = masks.argmax(0, keepdim=True) != torch.arange(2)[:, None, None, None]
        assert (masks[losers] <= -10).all()  # every other object is pushed below -10


def test_prompt_editing(predictor, scene, frames) -> None:
    state = predictor.init_state(frames[:3])
    f, ids, masks = predictor.add_new_points_or_box(state, 1, "x", points=[[30, 40]], labels=[1])
    assert (f, ids, tuple(masks.shape)) == (1, ["x"], (1, 1, H, W))
    f, ids, masks = predictor.add_new_mask(state, 1, "y", scene.masks(1)[1])
    assert ids == ["x", "y"] and masks.shape == (2, 1, H, W)
    f, ids, masks = predictor.clear_all_prompts_in_frame(state, 1, "x")
    assert (masks[0] == -1024).all()  # x has no output on frame 1 any more
    with pytest.raises(RuntimeError, match="object id 'x'"):
        _run(predictor, state)
    ids, updated = predictor.remove_object(state, "x")
    assert ids == ["y"] and updated == []  # x had no prompt left
    assert sorted(_run(predictor, state)) == [1, 2]
    ids, updated = predictor.remove_object(state, "y")
    assert ids == [] and updated == []
    with pytest.raises(RuntimeError, match="No input points"):
        _run(predictor, state)
    predictor.add_new_points_or_box(state, 0, 5, box=scene.boxes(0)[0])
    predictor.reset_state(state)
    assert state.obj_ids == [] and state.num_entries() == 0


def test_bad_input(predictor, frames, tmp_path) -> None:
    state = predictor.init_state(frames[:3])
    box = [10, 10, 50, 50]
    with pytest.raises(ValueError, match="unknown object id 7"):
        predictor.clear_all_prompts_in_frame(state, 0, 7)
    with pytest.raises(ValueError, match="does not exist"):
        predictor.remove_object(state, 7, strict=True)
    assert predictor.remove_object(state, 7) == ([], [])
    for bad in (3, -1):
        with pytest.raises(ValueError, match="out of range"):
            predictor.add_new_points_or_box(state, bad, 1, box=box)
    with pytest.raises(ValueError, match="must be an int"):
        predictor.add_new_points_or_box(state, 1.0, 1, box=box)
    with pytest.raises(ValueError, match="outside the image"):
        predictor.add_new_points_or_box(state, 0, 1, box=[200, 200, 300, 300])
    with pytest.raises(ValueError, match="clear_old_points"):
        predictor.add_new_points_or_box(state, 0, 1, box=box, clear_old_points=False)
    with pytest.raises(ValueError, match="point_labels"):
        predictor.add_new_points_or_box(state, 0, 1, points=[[1, 2]])
    with pytest.raises(ValueError, match="at least one"):
        predictor.add_new_points_or_box(state, 0, 1)
    with pytest.raises(ValueError, match="shape"):
        predictor.add_new_mask(state, 0, 1, np.ones((10, 10), bool))
    assert state.obj_ids == []  # nothing half-created by the failed calls
    with pytest.raises(RuntimeError, match="No input points"):
        next(predictor.propagate_in_video(state))
    predictor.add_new_points_or_box(state, 0, 1, box=box)
    with pytest.raises(ValueError, match="out of range"):
        next(predictor.propagate_in_video(state, start_frame_idx=5))
    with pytest.raises(ValueError, match="max_frame_num_to_track"):
        next(predictor.propagate_in_video(state, max_frame_num_to_track=-1))

    with pytest.raises(ValueError, match="empty"):
        predictor.init_state([])
    with pytest.raises(ValueError, match="no frames"):
        predictor.init_state(iter([]))
    with pytest.raises(FileNotFoundError):
        predictor.init_state(str(tmp_path / "missing.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(ValueError):
        predictor.init_state(str(junk))
    with pytest.raises(ValueError, match="memory"):
        VideoPredictor(type("M", (), {"eval": lambda self: self, "with_memory": False})())
