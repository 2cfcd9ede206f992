"""The bundled promptable segmentation models (SAM 2 / SAM 2.1, SAM 1) and their predictors.

Models come from one builder (:func:`build_model`, behind :func:`build_sam`, :func:`from_pretrained`
and the drop-in builders of :mod:`segmenter.compat`); the predictors are typed against one model
interface, :class:`SegmentationModel`, that both families implement.
"""

from segmenter.amg.generator import AutomaticMaskGenerator
from segmenter.build import build_model, build_sam, from_pretrained, load_weights
from segmenter.config import SAM1Config, SAM2Config, list_model_configs, load_model_config
from segmenter.image.predictor import ImagePredictor
from segmenter.modeling.interface import SegmentationModel
from segmenter.modeling.sam1 import SAM1Model
from segmenter.modeling.sam2 import ImageEmbeddings, SAM2Model
from segmenter.video.predictor import VideoPredictor

__all__ = [
    "build_sam",
    "build_model",
    "from_pretrained",
    "load_weights",
    "ImagePredictor",
    "VideoPredictor",
    "AutomaticMaskGenerator",
    "SegmentationModel",
    "SAM2Model",
    "SAM2Config",
    "SAM1Model",
    "SAM1Config",
    "ImageEmbeddings",
    "load_model_config",
    "list_model_configs",
]
