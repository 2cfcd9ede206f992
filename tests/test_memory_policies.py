"""Memory policies, rule by rule, on scripted candidates (no network): the Kalman filter and
SAMURAI's choice against SAMURAI's own code, the quality gate, the distractor memory's rules,
and a look-alike crossing the target where SAM 2's policy switches and samurai/distractor do not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import samurai_reference
from reference import REFERENCE_CONFIGS
from segmenter.video.memory_bank import FrameEntry, FrameStats, ObjectMemory
from segmenter.video.policies import (
    Candidates, DistractorConfig, DistractorPolicy, FifoPolicy, MemoryContext, QualityPolicy, SamuraiPolicy, make_policy,
)  # fmt: skip
from segmenter.video.policies.distractor import DistractorState, alternative_box_ious, should_add
from segmenter.video.policies.kalman import KalmanBoxFilter

CTX = MemoryContext(num_maskmem=7, max_obj_ptrs=16, signed_ptr_pos=True)
S, LOW = 128, 32  # model input size, low-res mask size


def _entry(mask: np.ndarray | None = None, stats: FrameStats | None = None) -> FrameEntry:
    pred = torch.zeros(1, 1, LOW, LOW) if mask is None else torch.from_numpy(np.where(mask, 10.0, -10.0)).float()[None, None]
    return FrameEntry(torch.zeros(1, 8), torch.ones(1, 1), pred, torch.zeros(4, 2, dtype=torch.bfloat16), stats)


def _rect(x: int, y: int, w: int = 8, h: int = 8, size: int = LOW) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = True
    return m


def _candidates(masks: list[np.ndarray], ious: list[float], score: float = 5.0) -> Candidates:
    low = torch.from_numpy(np.stack([np.where(m, 10.0, -10.0) for m in masks])).float()[None]  # (1, M, h, w)
    high = F.interpolate(low, (S, S), mode="bilinear", align_corners=False)
    return Candidates(low, high, torch.tensor([ious]), torch.tensor([[score]]))


def _cat(cands: list[Candidates]) -> Candidates:
    return Candidates(*(torch.cat([getattr(c, f) for c in cands]) for f in ("low", "high", "ious", "scores")))


# ---------------------------------------------------------------- Kalman filter and SAMURAI's choice
def test_kalman_filter_matches_samurai_batched() -> None:
    ref_kf = samurai_reference.load_kalman().KalmanFilter()
    ours = KalmanBoxFilter()
    rng = np.random.default_rng(0)
    meas = rng.uniform(5, 60, size=(12, 3, 4))  # frames x objects x (x, y, a, h)
    mean, cov = ours.initiate(torch.from_numpy(meas[0]))
    refs = [ref_kf.initiate(meas[0, i]) for i in range(3)]
    for t in range(1, 12):
        mean, cov = ours.predict(mean, cov)
        refs = [ref_kf.predict(m, c) for m, c in refs]
        if t % 3:  # some frames only predict
            mean, cov = ours.update(mean, cov, torch.from_numpy(meas[t]))
            refs = [ref_kf.update(m, c, meas[t, i]) for i, (m, c) in enumerate(refs)]
        for i, (m, c) in enumerate(refs):
            np.testing.assert_allclose(mean[i].numpy(), m, rtol=1e-10, atol=1e-9)
            np.testing.assert_allclose(cov[i].numpy(), c, rtol=1e-10, atol=1e-9)


def _script(obj: int, t: int) -> tuple[list[np.ndarray], list[float]]:
    """Object ``obj`` moves right; a look-alike crosses it; frame 3 is a bad (low-IoU) frame."""
    x = 2 + t + 3 * obj
    target, other = _rect(x, 6 + 5 * obj), _rect(36 - t, 9 + 5 * obj)
    ious = [0.9 - 0.01 * obj, 0.55, 0.7]
    if t == 3:
        ious = [0.25, 0.2, 0.1]  # resets the stable run
    if abs(x - (36 - t)) <= 4:
        ious[2] = 0.93  # the look-alike looks better while crossing
    return [target, target | other, other], ious


@pytest.fixture(scope="module")
def samurai_model():
    pred = samurai_reference.samurai_predictor(REFERENCE_CONFIGS["sam2.1_hiera_tiny"], None, S, samurai_mode=True,
                                               kf_score_weight=0.25, stable_frames_threshold=5)  # fmt: skip
    return pred.eval()


def test_samurai_choice_matches_samurai_code(samurai_model) -> None:
    """SAMURAI's ``_forward_sam_heads`` (its mask decoder scripted) vs our batched choice."""
    ref, n_frames, n_obj = samurai_model, 26, 3
    ours = SamuraiPolicy(make_policy("samurai", stable_frames_threshold=5).config)
    objs = [ObjectMemory(i) for i in range(n_obj)]
    ref_rows = []
    for i in range(n_obj):  # SAMURAI keeps its filter on the model: one object at a time, reset between
        ref.kf_mean = ref.kf_covariance = None
        ref.stable_frames = 0
        rows = []
        for t in range(n_frames):
            cand = _candidates(*_script(i, t))
            ref.sam_mask_decoder.forward = lambda *a, c=cand, **k: (c.low, c.ious, torch.zeros(1, 3, 256), c.scores)
            emb = ref.sam_image_embedding_size
            with torch.inference_mode():
                out = ref._forward_sam_heads(torch.zeros(1, 256, emb, emb), multimask_output=True)
            chosen = int(next(m for m in range(3) if torch.equal(out[3][0, 0], cand.low[0, m])))
            rows.append((chosen, out[-2].item(), None if out[-1] is None else out[-1].item(), ref.stable_frames))
        ref_rows.append((rows, ref.kf_mean.copy(), ref.kf_covariance.copy()))
    not_argmax = 0
    for t in range(n_frames):
        cand = _cat([_candidates(*_script(i, t)) for i in range(n_obj)])
        best = ours.choose(objs, cand, t)
        for i in range(n_obj):
            chosen, _, kf, stable = ref_rows[i][0][t]
            state = objs[i].policy_state
            assert (int(best[i]), state.stable) == (chosen, stable), f"object {i} frame {t}"
            assert (state.kf_iou is None) == (kf is None) and (kf is None or abs(state.kf_iou - kf) < 1e-6)
            not_argmax += chosen != int(cand.ious[i].argmax())
    for i in range(n_obj):
        np.testing.assert_allclose(objs[i].policy_state.mean.numpy(), ref_rows[i][1], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(objs[i].policy_state.cov.numpy(), ref_rows[i][2], rtol=1e-9, atol=1e-9)
    assert not_argmax >= 3  # the motion cue overruled the predicted IoU while the look-alike crossed
    assert any(r[0][3][3] == 0 for r in ref_rows)  # the bad frame reset the stable run


def test_samurai_presence_threshold() -> None:
    assert make_policy("samurai").present_threshold == -1.0
    assert make_policy("samurai", min_obj_score_logits=0.5).present_threshold == 0.5
    assert FifoPolicy().present_threshold == 0.0


# ---------------------------------------------------------------- quality gate
def test_quality_memory_walk() -> None:
    """The 6 most recent usable frames, t - 1 always, frames right after the prompt skipped."""
    policy = QualityPolicy()
    obj = ObjectMemory(1)
    obj.cond[0] = _entry()
    usable = {1: True, 2: True, 3: False, 4: True, 5: True, 6: False, 7: True, 8: True, 9: True, 10: False, 11: False}
    for t, ok in usable.items():
        obj.non_cond[t] = _entry(stats=FrameStats(iou=0.9 if ok else 0.2, score=1.0))
        obj.non_cond[t].stats.usable = policy._usable(obj.non_cond[t].stats)
        obj.tracked.mark(t, False)
    sel = policy.select(obj, 12, False, None, CTX)
    frames = {id(e): t for t, e in obj.non_cond.items()}
    picked = [(slot, frames[id(e)]) for slot, e in sel.memories[1:]]
    # t - 1 = 11 (unusable) takes the newest slot; then 9, 8, 7, 5, 4 (2 and 1 fall off; 1 is never a candidate)
    assert picked == [(5, 4), (4, 5), (3, 7), (2, 8), (1, 9), (0, 11)]
    assert policy.retain(obj, 11, False, CTX) == {9, 8, 7, 5, 4, 2}
    # usable needs IoU, score and (when present) the Kalman IoU above their thresholds
    assert not policy._usable(FrameStats(iou=0.9, score=-0.1))
    assert not policy._usable(FrameStats(iou=0.9, score=1.0, kf_iou=0.0))
    assert policy._usable(FrameStats(iou=0.51, score=0.01, kf_iou=0.01))


# ---------------------------------------------------------------- distractor rules
def _visible(obj: ObjectMemory, frames: dict[int, int]) -> None:
    for t, area in frames.items():
        obj.non_cond[t] = _entry(stats=FrameStats(iou=0.9, score=1.0, area=area))
        obj.tracked.mark(t, False)


def test_distractor_recent_memory_skips_empty_frames_on_a_stride() -> None:
    policy = DistractorPolicy(DistractorConfig(stride=5))
    obj = ObjectMemory(1)
    obj.cond[0] = _entry()
    _visible(obj, {t: (0 if t in (23, 22, 15, 14, 13, 12, 11, 10) else 40) for t in range(1, 24)})
    assert policy._ram(obj, 24, False, 6, {0}) == [21, 20, 5]  # 23, 22 empty; 15 and 10 empty -> 5
    assert policy._ram(obj, 20, False, 6, {0}) == [19, 5]  # 15 and 10 empty
    sel = policy.select(obj, 24, False, None, CTX)
    frames = {id(e): t for t, e in obj.non_cond.items()}
    assert [(s, frames[id(e)]) for s, e in sel.memories[1:]] == [(2, 5), (1, 20), (0, 21)]  # oldest first
    # pointers only from frames where the object is visible
    assert [off for off, _ in sel.pointers[1:]] == [3, 4, 5, 6, 7, 8, 15]
    # reverse tracking mirrors the grid
    rev = ObjectMemory(2)
    rev.cond[40] = _entry()
    _visible(rev, {t: 40 for t in range(25, 40)})
    assert policy._ram(rev, 24, True, 6, {40}) == [25, 30, 35]


def test_distractor_introspection_rule() -> None:
    cfg = DistractorConfig()
    target, near = _rect(4, 4), _rect(13, 4)  # a look-alike beside the target
    assert alternative_box_ious(target, [target | near, target]) == pytest.approx([64 / 136])
    assert alternative_box_ious(target, [target]) == []  # nothing outside the chosen mask
    state = DistractorState()
    for step, area in enumerate([64, 0, 60, 66, 64], start=1):
        state.steps = step
        if area:
            state.areas.append((step, area))
    alt = [0.47]
    assert should_add(cfg, state, 10, iou=0.9, area=64, alt_ious=alt)
    assert not should_add(cfg, state, 10, iou=0.8, area=64, alt_ious=alt)  # IoU must exceed 0.8
    assert not should_add(cfg, state, 10, iou=0.9, area=90, alt_ious=alt)  # area 1.4x the median
    assert not should_add(cfg, state, 10, iou=0.9, area=0, alt_ious=alt)  # absent
    assert not should_add(cfg, state, 10, iou=0.9, area=64, alt_ious=[0.75])  # alternatives agree
    assert not should_add(cfg, state, 10, iou=0.9, area=64, alt_ious=[])
    state.last_added = 5
    assert not should_add(cfg, state, 10, iou=0.9, area=64, alt_ious=alt)  # only 5 frames since
    assert should_add(cfg, state, 11, iou=0.9, area=64, alt_ious=alt)


# ---------------------------------------------------------------- a look-alike crossing the target
N_FRAMES, GRID = 34, 64


def _scene(t: int) -> tuple[np.ndarray, np.ndarray]:
    return _rect(1 + t, 20, size=GRID), _rect(49 - t, 26, size=GRID)  # target moves right, look-alike left


def _identity(mask: np.ndarray, t: int) -> str:
    target, other = _scene(t)
    return "T" if (mask & target).sum() >= (mask & other).sum() else "L"


def _run_crossing(policy) -> list[str]:
    """A toy tracker driven through the policy interface.

    The 'network': candidates are the target, target + look-alike and the look-alike; the one the
    memory's majority looks like gets IoU 0.9, the other 0.8; while the two are within 4 pixels,
    the look-alike gets 0.95 (it looks more typical there).
    """
    obj = ObjectMemory(1)
    obj.cond[0] = FrameEntry(torch.zeros(1, 8), torch.ones(1, 1), torch.from_numpy(np.where(_scene(0)[0], 10.0, -10.0)).float()[None, None], torch.zeros(1))
    frame_of = {id(obj.cond[0]): 0}
    picks = []
    for t in range(1, N_FRAMES):
        sel = policy.select(obj, t, False, None, CTX)
        votes = [_identity(e.pred_masks[0, 0].numpy() > 0, frame_of[id(e)]) for _, e in sel.memories]
        majority = "T" if votes.count("T") >= votes.count("L") else "L"
        target, other = _scene(t)
        ious = [0.9, 0.5, 0.8] if majority == "T" else [0.8, 0.5, 0.9]
        if abs((1 + t) - (49 - t)) <= 4:
            ious[2] = 0.95
        low = torch.from_numpy(np.stack([np.where(m, 10.0, -10.0) for m in (target, target | other, other)])).float()[None]
        cand = Candidates(low, F.interpolate(low, (4 * GRID,) * 2, mode="bilinear", align_corners=False),
                          torch.tensor([ious]), torch.tensor([[5.0]]))  # fmt: skip
        best = policy.choose([obj], cand, t)
        entry = FrameEntry(torch.zeros(1, 8), torch.ones(1, 1) * 5, low[:, int(best[0])][:, None], torch.zeros(1))
        obj.non_cond[t] = entry
        frame_of[id(entry)] = t
        obj.tracked.mark(t, False)
        policy.commit([obj], [entry], t, False, cand, best)
        picks.append(_identity(entry.pred_masks[0, 0].numpy() > 0, t))
    return picks


def test_look_alike_crossing() -> None:
    fifo, samurai, distractor = (_run_crossing(make_policy(n)) for n in ("fifo", "samurai", "distractor"))
    crossing = [t for t in range(1, N_FRAMES) if abs((1 + t) - (49 - t)) <= 4]  # frames 22-26
    after = range(crossing[-1] + 1, N_FRAMES)
    assert [fifo[t - 1] for t in after] == ["L"] * len(after)  # SAM 2 switched for good
    assert samurai == ["T"] * (N_FRAMES - 1)  # the motion cue never let go
    assert [distractor[t - 1] for t in crossing] == ["L"] * len(crossing)  # fooled while crossing...
    assert [distractor[t - 1] for t in after] == ["T"] * len(after)  # ...and back: its DRM holds the target


def test_make_policy_errors() -> None:
    with pytest.raises(ValueError, match="unknown memory policy 'lru'.*fifo, quality, samurai, distractor"):
        make_policy("lru")
    with pytest.raises(ValueError, match="unknown option"):
        make_policy("samurai", kf_weight=0.2)
    with pytest.raises(ValueError, match="kf_score_weight"):
        make_policy("samurai", kf_score_weight=2.0)
    with pytest.raises(ValueError, match="stride"):
        make_policy("distractor", stride=0)
