"""Models built and run under ``torch.inference_mode()``, ``torch.no_grad()`` or plain mode, in any mix.

Every path that builds a model (``build_sam``, ``segmenter.compat.sam2.build_sam2``,
``segmenter.compat.segment_anything.sam_model_registry``) and every predictor must give the
plain-mode numbers whatever grad mode the caller is in, and a model built or run under
inference mode must stay usable with autograd afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny import SAM_IMAGE_SIZE

CFG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SAM2_ARGS = {"device": "cpu", "hydra_overrides_extra": [f"++model.image_size={SAM_IMAGE_SIZE}"]}
SAM1_SIZE = 128
BOX = np.array([12, 10, 90, 70])
LOOSE = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}  # keep every mask

MODES: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    "plain": contextlib.nullcontext,
    "inference_mode": torch.inference_mode,
    "no_grad": torch.no_grad,
}
# (grad mode the model is built in, grad mode it is run in); compared with ("plain", "plain")
CASES = [("inference_mode", "inference_mode"), ("plain", "inference_mode"), ("plain", "no_grad"), ("inference_mode", "plain")]
IDS = [f"built-{b}-run-{r}" for b, r in CASES]


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (80, 112, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def sam2_ckpt(tiny_models) -> Path:
    return tiny_models.sam


@pytest.fixture(scope="module")
def sam1_ckpt(tmp_path_factory) -> Path:
    """A bare-state-dict ViT-B ``.pth`` at 128 px, as ``sam_model_registry`` reads it."""
    from segmenter import build_sam

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam1") / "sam_vit_b_01ec64.pth"
    torch.save(build_sam("sam_vit_b", device="cpu", image_size=SAM1_SIZE).state_dict(), path)
    return path


def _records(records: list[dict]) -> list[tuple]:
    return [(r["segmentation"].tobytes(), r["bbox"], r["predicted_iou"], r["stability_score"]) for r in records]


def _build_compat_sam2(ckpt: Path):
    from segmenter.compat.sam2 import build_sam2

    return build_sam2(CFG, ckpt, **SAM2_ARGS)


def _run_compat_sam2(sam2, image: np.ndarray) -> dict:
    from segmenter.compat.sam2 import SAM2AutomaticMaskGenerator, SAM2ImagePredictor

    out = {"sample": _records(SAM2AutomaticMaskGenerator(sam2, points_per_side=4).generate(image))}
    out["amg"] = _records(SAM2AutomaticMaskGenerator(sam2, **LOOSE).generate(image))
    predictor = SAM2ImagePredictor(sam2)
    predictor.set_image(image)
    out["predict"] = predictor.predict(box=BOX, multimask_output=False)
    return out


def _build_compat_segment_anything(ckpt: Path):
    from segmenter.compat.segment_anything import sam_model_registry

    return sam_model_registry["vit_b"](checkpoint=ckpt)


def _run_compat_segment_anything(sam, image: np.ndarray) -> dict:
    from segmenter.compat.segment_anything import SamAutomaticMaskGenerator, SamPredictor

    out = {"amg": _records(SamAutomaticMaskGenerator(sam, **LOOSE).generate(image))}
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    out["predict"] = predictor.predict(box=BOX, multimask_output=True)
    return out


def _build_sam2(ckpt: Path):
    from segmenter import build_sam

    return build_sam("sam2.1_hiera_tiny", checkpoint=ckpt, device="cpu", image_size=SAM_IMAGE_SIZE)


def _run_native(model, image: np.ndarray) -> dict:
    from segmenter import AutomaticMaskGenerator, ImagePredictor, VideoPredictor

    out = {"amg": _records(AutomaticMaskGenerator(model, **LOOSE).generate(image))}
    predictor = ImagePredictor(model)
    predictor.set_image(image)
    out["predict"] = predictor.predict(box=BOX, multimask_output=False)
    video = VideoPredictor(model)
    state = video.init_state([image, np.roll(image, 5, axis=1), np.roll(image, 10, axis=1)])
    video.add_new_points_or_box(state, 0, 1, box=BOX)
    out["video"] = [logits.numpy() for _, _, logits in video.propagate_in_video(state)]
    stream = video.init_stream()
    video.track(stream, image)
    out["stream"] = video.add_new_boxes(stream, [1, 2], np.stack([BOX, BOX // 2]))[2].numpy()
    return out


def _build_sam1(ckpt: Path):
    from segmenter import build_sam

    return build_sam("sam_vit_b", checkpoint=ckpt, device="cpu", image_size=SAM1_SIZE)


def _run_sam1_native(model, image: np.ndarray) -> dict:
    from segmenter import ImagePredictor

    predictor = ImagePredictor(model)
    predictor.set_image(image)
    return {"predict": predictor.predict(box=BOX)}


RUNS = {  # what -> (builder, runner, checkpoint fixture); the imports happen in each phase's mode
    "compat.sam2": (_build_compat_sam2, _run_compat_sam2, "sam2_ckpt"),
    "compat.segment_anything": (_build_compat_segment_anything, _run_compat_segment_anything, "sam1_ckpt"),
    "build_sam": (_build_sam2, _run_native, "sam2_ckpt"),
    "build_sam-sam1": (_build_sam1, _run_sam1_native, "sam1_ckpt"),
}


def _run(what: str, request, image: np.ndarray, build: str, run: str) -> dict:
    """Build under the ``build`` grad mode, then run under ``run``."""
    builder, runner, ckpt = RUNS[what]
    with MODES[build]():
        model = builder(request.getfixturevalue(ckpt))
    with MODES[run]():
        return runner(model, image)


def _assert_equal(a, b, where: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    else:
        assert a == b, where


class _Plain(dict):
    """Plain-mode outputs, computed on first use."""

    def __init__(self, request, image: np.ndarray) -> None:
        super().__init__()
        self.request, self.image = request, image

    def __missing__(self, what: str) -> dict:
        self[what] = _run(what, self.request, self.image, "plain", "plain")
        return self[what]


@pytest.fixture(scope="module")
def plain(request, image) -> _Plain:
    return _Plain(request, image)


@pytest.mark.parametrize("what", [pytest.param(w, marks=pytest.mark.slow) if w != "compat.sam2" and w != "build_sam" else w for w in RUNS])
@pytest.mark.parametrize(
    ("build", "run"),
    [pytest.param(*c, id=i, marks=[] if c == CASES[0] else pytest.mark.slow) for c, i in zip(CASES, IDS)],
)
def test_outputs_equal_plain_mode(what: str, build: str, run: str, request, image, plain) -> None:
    _assert_equal(_run(what, request, image, build, run), plain[what], what)


def test_plain_outputs_are_not_empty(plain) -> None:
    for what in ("compat.sam2", "compat.segment_anything", "build_sam"):
        assert plain[what]["amg"], what
    assert plain["build_sam"]["predict"][0].any()


def test_the_issue_sample_inside_inference_mode(sam2_ckpt, image, plain) -> None:
    """The sample of the issue verbatim (bar the test's size and device), imports included."""
    with torch.inference_mode():
        from segmenter.compat.sam2 import SAM2AutomaticMaskGenerator, build_sam2

        sam2 = build_sam2(CFG, sam2_ckpt, **SAM2_ARGS)
        masks = SAM2AutomaticMaskGenerator(sam2, points_per_side=4).generate(image)
    assert _records(masks) == plain["compat.sam2"]["sample"]


@pytest.mark.parametrize("build", ["inference_mode", "no_grad"])
def test_autograd_works_after_inference(build: str, sam2_ckpt, image) -> None:
    """Built (and run) outside autograd, then trained: parameters and caches are ordinary tensors."""
    from segmenter import ImagePredictor, build_sam

    with MODES[build]():
        model = build_sam("sam2.1_hiera_tiny", checkpoint=sam2_ckpt, device="cpu", image_size=SAM_IMAGE_SIZE)
        ImagePredictor(model).set_image(image)
    assert not any(p.is_inference() for p in model.parameters())
    x = torch.randn(1, 3, SAM_IMAGE_SIZE, SAM_IMAGE_SIZE)
    feats = model.encode_images(x)
    low, iou = model.decode_masks(feats.image_embed, boxes=torch.tensor([[10.0, 10.0, 200.0, 150.0]]),
                                  high_res_feats=feats.high_res_feats)
    (low.mean() + iou.mean()).backward()
    trunk = model.image_encoder.trunk
    assert trunk.pos_embed.grad is not None and trunk.pos_embed.grad.abs().sum() > 0
