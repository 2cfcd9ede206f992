"""Parity of ``segmenter.VideoPredictor`` with Meta's ``SAM2VideoPredictor`` (random weights, fp32).

Both load the same randomised checkpoint (ours through ``build_sam``), run at image_size 256
without hole filling, and see the same preprocessed frames (the reference's frame loader is
monkeypatched to return ours). The reference stores memories in bf16 and, on an fp32 CPU,
crashes when a memory bank has no object pointer (its issues #308/#577); its memory attention
is wrapped to cast the memory to float, which is what its type promotion does otherwise.

Every call's video-resolution logits are compared, and the per-object low-res masks, object
pointers, object scores and bf16 memories that our (bounded) state still holds. Measured
max |diff| values are attached as ``max_abs_diff[...]`` properties.
"""

from __future__ import annotations

import numpy as np
import pytest
import sam2.sam2_video_predictor as ref_video
import torch
from sam2.build_sam import build_sam2_video_predictor

from reference import REFERENCE_CONFIGS, reference_sam2
from segmenter import build_sam
from grounded_sam.assets.samples import SyntheticScene
from segmenter.video.frames import preprocess_video_frame
from segmenter.video.predictor import VideoPredictor

S = 256  # model input size: fast, and the reference supports it via ++model.image_size
H, W = 96, 128  # video size
TOL = 1e-3  # on logits. Measured: 0 for one object; <= 2e-4 for several (batched products round
# differently from one-object ones, and a bf16 memory may then round the other way)
MEM_FLIPS = 0.01  # bf16 memories: a ~1e-6 difference before rounding may flip an element by 1 ulp
SCORE_HEAD_BIAS = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    return SyntheticScene((H, W), objects=3, seed=1)


@pytest.fixture(scope="module")
def frames(scene) -> list[np.ndarray]:
    return [scene.frame(t) for t in range(18)]


def _checkpoint(tmp_path_factory, name: str, score_bias: float) -> str:
    sd = {k: v.clone() for k, v in reference_sam2(name, S).state_dict().items()}
    sd[SCORE_HEAD_BIAS] += score_bias  # > 0: objects present on tracked frames, < 0: absent
    path = tmp_path_factory.mktemp("ckpt") / f"{name}_{score_bias:+}.pt"
    torch.save({"model": sd}, path)
    return str(path)


def _pair(tmp_path_factory, name: str, score_bias: float = 2.0) -> tuple:
    path = _checkpoint(tmp_path_factory, name, score_bias)
    ref = build_sam2_video_predictor(
        REFERENCE_CONFIGS[name], path, device="cpu", hydra_overrides_extra=[f"++model.image_size={S}"]
    )
    ref.fill_hole_area = 0  # set after the build: the builder's postprocessing overrides would win
    forward = ref.memory_attention.forward

    def float_memory(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        return forward(
            curr=curr, memory=memory.float(), curr_pos=curr_pos, memory_pos=memory_pos.float(),
            num_obj_ptr_tokens=num_obj_ptr_tokens,
        )  # fmt: skip

    ref.memory_attention.forward = float_memory
    ours = VideoPredictor(build_sam(name, checkpoint=path, device="cpu", image_size=S), fill_hole_area=0)
    return ref, ours


@pytest.fixture(scope="module")
def pair21(tmp_path_factory):
    return _pair(tmp_path_factory, "sam2.1_hiera_tiny")


@pytest.fixture(scope="module")
def pair20(tmp_path_factory):
    return _pair(tmp_path_factory, "sam2_hiera_tiny")


@pytest.fixture
def start(monkeypatch, frames):
    """start(pair, num_frames, **kw) -> (ref_state, our_state) on the same frames."""

    def _start(pair, num_frames: int, **kw):
        ref, ours = pair
        video = frames[:num_frames]
        images = torch.stack([preprocess_video_frame(f, S) for f in video])
        monkeypatch.setattr(ref_video, "load_video_frames", lambda **_: (images, H, W))
        return ref.init_state("injected"), ours.init_state(video, **kw)

    return _start


class Checker:
    def __init__(self, request) -> None:
        self.request = request
        self.worst: dict[str, float] = {}

    def __call__(self, what: str, ref_out, our_out, tol: float = TOL) -> None:
        (rf, rids, rm), (of, oids, om) = ref_out, our_out
        assert (rf, list(rids)) == (of, list(oids)), f"{what}: frame/ids differ"
        self.tensor(what, rm, om, tol)

    def tensor(self, what: str, ref: torch.Tensor, ours: torch.Tensor, tol: float = TOL) -> float:
        assert ref.shape == ours.shape, f"{what}: shapes {tuple(ref.shape)} vs {tuple(ours.shape)}"
        diff = (ref.float() - ours.float()).abs().max().item() if ref.numel() else 0.0
        key = what.split(" ")[0]
        self.worst[key] = max(self.worst.get(key, 0.0), diff)
        assert diff <= tol, f"{what}: max |diff| {diff:.3g} > {tol}"
        return diff

    def bf16(self, what: str, ref: torch.Tensor, ours: torch.Tensor) -> None:
        """Equal bf16 values, but for a few elements one rounding step (or TOL near 0) apart."""
        assert ref.dtype == ours.dtype == torch.bfloat16, f"{what}: memories must be stored in bf16"
        diff = (ref.float() - ours.float()).abs()
        ulp = ref.float().abs() * 2.0**-7 + TOL  # one bf16 step at each value, plus the logits tolerance
        flips = (diff > 0).float().mean().item()
        self.worst["maskmem_ulp_flips"] = max(self.worst.get("maskmem_ulp_flips", 0.0), flips)
        self.worst["maskmem"] = max(self.worst.get("maskmem", 0.0), diff.max().item())
        bad = diff > ulp
        assert not bad.any(), f"{what}: bf16 memory differs by more than one ulp: {ref[bad][:5].tolist()} vs {ours[bad][:5].tolist()}"
        assert flips <= MEM_FLIPS, f"{what}: {flips:.2%} of the bf16 memory differs"

    def stream(self, what: str, ref_gen, our_gen) -> list[int]:
        ref_all, our_all = list(ref_gen), list(our_gen)
        assert [r[0] for r in ref_all] == [o[0] for o in our_all], f"{what}: frame order differs"
        for r, o in zip(ref_all, our_all):
            self(f"{what} frame {r[0]}", r, o)
        return [r[0] for r in ref_all]

    def state(self, ref_state, our_state) -> int:
        """Compare every per-object entry our state still holds with the reference's."""
        checked = 0
        for idx, (obj_id, obj) in enumerate(our_state.objects.items()):
            assert ref_state["obj_idx_to_id"][idx] == obj_id
            ref_out = ref_state["output_dict_per_obj"][idx]
            for kind, ours_d in (("cond", obj.cond), ("non_cond", obj.non_cond)):
                for t, entry in ours_d.items():
                    r = ref_out[f"{kind}_frame_outputs"][t]
                    self.tensor(f"obj_ptr {obj_id}@{t}", r["obj_ptr"], entry.obj_ptr)
                    self.tensor(f"object_score {obj_id}@{t}", r["object_score_logits"], entry.object_score_logits)
                    if entry.pred_masks is not None:
                        self.tensor(f"low_res {obj_id}@{t}", r["pred_masks"], entry.pred_masks)
                    if entry.maskmem is not None:
                        rm = r["maskmem_features"].flatten(2).transpose(1, 2)[0]  # (HW, D) bf16
                        self.bf16(f"maskmem {obj_id}@{t}", rm, entry.maskmem)
                    checked += 1
        return checked

    def report(self) -> None:
        for key, value in self.worst.items():
            self.request.node.user_properties.append((f"max_abs_diff[{key}]", value))


@pytest.fixture
def check(request):
    c = Checker(request)
    yield c
    c.report()


def _center(box: np.ndarray) -> np.ndarray:
    return np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]], dtype=np.float32)


@pytest.mark.slow
def test_three_objects_added_late_correction_and_reverse(pair21, start, check, scene) -> None:
    """SAM 2.1: box + point objects over 18 frames (memory window and pointer cap), then a
    mask object added after tracking, a correction click, and reverse propagation."""
    ref, ours = pair21
    rs, os_ = start(pair21, 18)
    boxes = scene.boxes(0)
    check("box", ref.add_new_points_or_box(rs, 0, 1, box=boxes[0]), ours.add_new_points_or_box(os_, 0, 1, box=boxes[0]))
    pt = _center(boxes[1])
    check("point", ref.add_new_points_or_box(rs, 0, 2, pt, [1]), ours.add_new_points_or_box(os_, 0, 2, pt, [1]))
    frames_done = check.stream("forward", ref.propagate_in_video(rs), ours.propagate_in_video(os_))
    assert frames_done == list(range(18))
    assert check.state(rs, os_) > 10

    mask = scene.masks(14)[2]
    check("late object", ref.add_new_mask(rs, 14, "late", mask), ours.add_new_mask(os_, 14, "late", mask))
    click = _center(scene.boxes(17)[0])
    check(
        "correction",
        ref.add_new_points_or_box(rs, 17, 1, click, [0], clear_old_points=False),
        ours.add_new_points_or_box(os_, 17, 1, click, [0], clear_old_points=False),
    )
    frames_done = check.stream(
        "reverse",
        ref.propagate_in_video(rs, start_frame_idx=17, max_frame_num_to_track=4, reverse=True),
        ours.propagate_in_video(os_, start_frame_idx=17, max_frame_num_to_track=4, reverse=True),
    )
    assert frames_done == list(range(17, 12, -1))
    assert check.state(rs, os_) > 10
    # the bounded state holds a fixed window, not the 18 frames x 3 objects the reference keeps
    assert os_.num_memory_entries() < sum(
        len(o["non_cond_frame_outputs"]) + len(o["cond_frame_outputs"]) for o in rs["output_dict_per_obj"].values()
    )


@pytest.mark.slow
def test_sam20_refined_points_reverse_and_retrack(pair20, start, check, scene) -> None:
    """SAM 2.0: two clicks on a frame in the middle, forward, reverse (reads the forward
    memories near the prompt), a correction near the prompt, tracking again, then edits."""
    ref, ours = pair20
    rs, os_ = start(pair20, 10)
    box = scene.boxes(4)[1]
    p1, p2 = _center(box), np.array([[box[0] + 1, box[1] + 1]], dtype=np.float32)
    check("click", ref.add_new_points_or_box(rs, 4, 7, p1, [1]), ours.add_new_points_or_box(os_, 4, 7, p1, [1]))
    check(
        "refine",  # previous logits fed as mask input, two points -> single mask
        ref.add_new_points_or_box(rs, 4, 7, p2, [0], clear_old_points=False),
        ours.add_new_points_or_box(os_, 4, 7, p2, [0], clear_old_points=False),
    )
    assert check.stream("forward", ref.propagate_in_video(rs), ours.propagate_in_video(os_)) == list(range(4, 10))
    assert check.stream(
        "reverse", ref.propagate_in_video(rs, reverse=True), ours.propagate_in_video(os_, reverse=True)
    ) == list(range(4, -1, -1))
    corr = _center(scene.boxes(7)[1])
    check("correction", ref.add_new_points_or_box(rs, 7, 7, corr, [1]), ours.add_new_points_or_box(os_, 7, 7, corr, [1]))
    check("box2", ref.add_new_points_or_box(rs, 7, 8, box=scene.boxes(7)[0]), ours.add_new_points_or_box(os_, 7, 8, box=scene.boxes(7)[0]))
    assert check.stream("retrack", ref.propagate_in_video(rs), ours.propagate_in_video(os_)) == list(range(4, 10))
    assert check.state(rs, os_) > 5

    check("clear", ref.clear_all_prompts_in_frame(rs, 7, 8), ours.clear_all_prompts_in_frame(os_, 7, 8))
    (r_ids, r_upd), (o_ids, o_upd) = ref.remove_object(rs, 7), ours.remove_object(os_, 7)
    assert list(r_ids) == list(o_ids) == [8]
    assert [t for t, _ in r_upd] == [t for t, _ in o_upd] and len(o_upd) == 2  # frames 4 and 7
    for (t, r), (_, o) in zip(r_upd, o_upd):
        check.tensor(f"remove frame {t}", r, o)


@pytest.mark.slow
def test_keep_outputs_correction_mid_video(pair21, start, check, scene, frames) -> None:
    """keep_outputs=True keeps every frame: a correction in the middle of a long tracked
    stretch reads the memories the bounded state releases (which then warns)."""
    ref, ours = pair21
    rs, os_ = start(pair21, 15, keep_outputs=True)
    bounded = ours.init_state(frames[:15])
    box = scene.boxes(0)[2]
    check("box", ref.add_new_points_or_box(rs, 0, 5, box=box), ours.add_new_points_or_box(os_, 0, 5, box=box))
    ours.add_new_points_or_box(bounded, 0, 5, box=box)
    check.stream("forward", ref.propagate_in_video(rs), ours.propagate_in_video(os_))
    for _ in ours.propagate_in_video(bounded):
        pass
    assert os_.num_memory_entries() == 15 and bounded.num_memory_entries() < 15
    # frame 8 reads the memories of frames 2..7; frame 7 is far from both the prompt and the end
    click = _center(scene.boxes(8)[2])
    check("mid correction", ref.add_new_points_or_box(rs, 8, 5, click, [1]), ours.add_new_points_or_box(os_, 8, 5, click, [1]))
    with pytest.warns(UserWarning, match="released"):
        ours.add_new_points_or_box(bounded, 8, 5, click, [1])
    check.stream(
        "after", ref.propagate_in_video(rs, start_frame_idx=9, max_frame_num_to_track=1),
        ours.propagate_in_video(os_, start_frame_idx=9, max_frame_num_to_track=1),
    )  # fmt: skip
    assert check.state(rs, os_) == 15


def test_masks_and_absent_objects(tmp_path_factory, start, check, scene) -> None:
    """A score head biased negative: objects given by mask are present on their prompted frame
    and predicted absent when tracked (NO_OBJ_SCORE masks, no-object pointer, and in SAM 2.1
    the no-object memory embedding); an empty mask is absent from the start."""
    pair = _pair(tmp_path_factory, "sam2.1_hiera_tiny", score_bias=-4.0)
    ref, ours = pair
    rs, os_ = start(pair, 4)
    mask = scene.masks(0)[0]
    check("mask", ref.add_new_mask(rs, 0, 1, mask), ours.add_new_mask(os_, 0, 1, mask))
    empty = np.zeros((H, W), dtype=bool)
    check("empty", ref.add_new_mask(rs, 0, 2, empty), ours.add_new_mask(os_, 0, 2, empty))
    check.stream("forward", ref.propagate_in_video(rs), ours.propagate_in_video(os_))
    assert check.state(rs, os_) == 8
    scores = torch.cat([e.object_score_logits for o in os_.objects.values() for e in o.non_cond.values()])
    assert (scores < 0).all()  # the absent branch was taken on every tracked frame
    assert os_.objects[1].cond[0].object_score_logits.item() > 0 > os_.objects[2].cond[0].object_score_logits.item()


@pytest.mark.slow
def test_exact_mode_is_meta_bit_for_bit_and_the_default_within_rounding(pair21, start, check, scene, request) -> None:
    """fp32, one object over 10 frames: ``exact=True`` (PyTorch's GEMMs, the compat predictor's
    default) gives Meta's logits bit for bit; the default (oneDNN GEMMs on the CPU) agrees within
    the tolerance and measures how far apart the two GEMM libraries drift."""
    ref, ours = pair21
    exact = VideoPredictor(ours.model, fill_hole_area=0, exact=True)
    box = scene.boxes(0)[0]
    rs, es = start((ref, exact), 10)
    _, os_ = start((ref, ours), 10)
    with torch.inference_mode():
        want = [ref.add_new_points_or_box(rs, 0, 1, box=box), *ref.propagate_in_video(rs)]
        got_exact = [exact.add_new_points_or_box(es, 0, 1, box=box), *exact.propagate_in_video(es)]
        got_fast = [ours.add_new_points_or_box(os_, 0, 1, box=box), *ours.propagate_in_video(os_)]
    assert len(want) == len(got_exact) == len(got_fast) == 11
    for w, e, f in zip(want, got_exact, got_fast):
        assert (w[0], list(w[1])) == (e[0], list(e[1])) == (f[0], list(f[1]))
        assert torch.equal(w[2], e[2]), f"frame {w[0]}: exact mode differs from Meta"
        check(f"default frame {w[0]}", w, f)
