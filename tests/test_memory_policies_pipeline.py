"""``GroundedSAM.track(..., memory=...)``, ``GroundedTracker(memory=...)`` and ``track --memory``."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from grounded_sam import GroundedSAM
from grounded_sam.cli import app
from grounded_sam.assets.samples import SyntheticScene
from grounded_sam.tracking.sam2 import GroundedTracker
from segmenter.video.policies import SamuraiPolicy
from tiny import SAM_IMAGE_SIZE


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_models) -> GroundedSAM:
    owl, sam = tiny_models
    return GroundedSAM({"a cat": "cat"}, detector=str(owl), segmenter="sam2.1_hiera_tiny", checkpoint=sam,
                       image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.0, nms_iou=0.1)  # fmt: skip


def test_track_with_samurai_memory(pipeline) -> None:
    frames = [SyntheticScene((64, 80), objects=1, seed=0).frame(t) for t in range(4)]
    tracker = pipeline.make_tracker("sam2", redetect_every=10, memory="samurai")
    assert isinstance(tracker.predictor.memory, SamuraiPolicy)
    out = list(pipeline.track(frames, redetect_every=10, memory="samurai"))
    assert [t for t, _ in out] == [0, 1, 2, 3] and len(out[0][1]) > 0
    assert all(d.tracker_id is not None for _, d in out)


def test_memory_errors(pipeline) -> None:
    with pytest.raises(ValueError, match="unknown memory policy 'lifo'"):
        list(pipeline.track([SyntheticScene((64, 80), objects=1).frame(0)], memory="lifo"))
    with pytest.raises(ValueError, match="memory policies apply to tracker='sam2'"):
        pipeline.make_tracker("sam3", memory="samurai")
    with pytest.raises(ValueError, match="give memory= to the video_predictor"):
        GroundedTracker(pipeline, video_predictor=object(), memory="quality")


def test_cli_track_memory_option(tmp_path, monkeypatch) -> None:
    runner = CliRunner()
    help_text = runner.invoke(app, ["track", "--help"], terminal_width=200).output
    assert "--memory" in help_text and "samurai" in help_text and "distractor" in help_text and "fifo" in help_text
    seen = {}

    def fake_write(gs, video, out, **kw):  # the option reaches the tracker's options
        seen.update(kw)
        return "done"

    monkeypatch.setattr("grounded_sam.tracking.outputs.write_tracking_outputs", fake_write)
    monkeypatch.setattr("grounded_sam.cli.commands.build_pipeline", lambda *a, **k: None)
    video = tmp_path / "clip"
    video.mkdir()
    result = runner.invoke(app, ["track", str(video), "--prompt", "cat", "--memory", "distractor", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert seen["memory"] == "distractor"


def test_compat_accepts_samurai_config_keys() -> None:
    from segmenter.compat.sam2 import build_sam2_video_predictor

    small = ["++model.image_size=128"]
    pred = build_sam2_video_predictor("configs/samurai/sam2.1_hiera_t.yaml", device="cpu", hydra_overrides_extra=small)
    assert isinstance(pred.memory, SamuraiPolicy) and pred.memory.config.kf_score_weight == 0.25  # its yaml's values
    keys = ["++model.samurai_mode=true", "++model.stable_frames_threshold=10", "++model.stable_ious_threshold=0.4",
            "++model.min_obj_score_logits=-2", "++model.kf_score_weight=0.3", "++model.memory_bank_iou_threshold=0.6",
            "++model.memory_bank_obj_score_threshold=0.1", "++model.memory_bank_kf_score_threshold=0.2"]  # fmt: skip
    cfg = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", device="cpu",
                                     hydra_overrides_extra=small + keys).memory.config  # fmt: skip
    assert (cfg.stable_frames_threshold, cfg.stable_ious_threshold, cfg.min_obj_score_logits, cfg.kf_score_weight,
            cfg.iou_threshold, cfg.obj_score_threshold, cfg.kf_score_threshold) == (10, 0.4, -2.0, 0.3, 0.6, 0.1, 0.2)
    assert type(build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", device="cpu",
                                           hydra_overrides_extra=small).memory).__name__ == "FifoPolicy"  # fmt: skip
    with pytest.raises(ValueError, match="take effect with \\+\\+model.samurai_mode=true"):
        build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", device="cpu",
                                   hydra_overrides_extra=["++model.kf_score_weight=0.3"])  # fmt: skip
    with pytest.raises(ValueError, match="bad value"):
        build_sam2_video_predictor("configs/samurai/sam2.1_hiera_t.yaml", device="cpu",
                                   hydra_overrides_extra=["++model.stable_frames_threshold=0"])  # fmt: skip
