"""Tracking memory does not grow with video length (issue: peak RSS 300 vs 50 frames within 20%).

The video is 720p so that holding decoded frames (2.7 MB each) would break the bound, while the
model runs at a small input size to keep the test fast.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import resource, sys, torch
torch.set_num_threads(1)
from segmenter import VideoPredictor, build_sam
torch.manual_seed(0)
model = build_sam("sam2.1_hiera_tiny", device="cpu", image_size=128)
with torch.no_grad():
    model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(2.0)
vp = VideoPredictor(model)
state = vp.init_state(sys.argv[1])
vp.add_new_points_or_box(state, 0, 1, box=[200, 150, 700, 600])
vp.add_new_points_or_box(state, 0, 2, points=[[1000, 300]], labels=[1])
n = 0
for t, ids, masks in vp.propagate_in_video(state, max_frame_num_to_track=int(sys.argv[2]) - 1):
    assert masks.shape == (2, 1, 720, 1280)
    n += 1
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, n)
"""


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    from grounded_sam.assets.samples import write_synthetic_video

    path = tmp_path_factory.mktemp("video") / "long.mp4"
    write_synthetic_video(path, num_frames=300, size=(720, 1280), objects=2)
    return path


def _peak_rss_kb(video: Path, frames: int) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(video), str(frames)], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=600).stdout.split()
    assert int(out[1]) == frames
    return int(out[0])


@pytest.mark.slow
def test_peak_rss_does_not_grow_with_length(video: Path) -> None:
    short, long = _peak_rss_kb(video, 50), _peak_rss_kb(video, 300)
    print(f"peak RSS: 50 frames {short / 1024:.0f} MB, 300 frames {long / 1024:.0f} MB ({long / short:.3f}x)")
    assert long <= 1.2 * short
