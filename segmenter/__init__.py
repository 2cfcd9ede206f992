"""The bundled promptable segmentation models (SAM 2 / SAM 2.1, SAM 1) and their predictors."""

from segmenter.amg.generator import AutomaticMaskGenerator
from segmenter.build import build_sam, from_pretrained, load_weights
from segmenter.config import SAM1Config, SAM2Config, list_model_configs, load_model_config
from segmenter.image.predictor import ImagePredictor
from segmenter.modeling.sam1 import SAM1Model
from segmenter.modeling.sam2 import ImageEmbeddings, SAM2Model
from segmenter.video.predictor import VideoPredictor

__all__ = [
    "build_sam",
    "from_pretrained",
    "load_weights",
    "ImagePredictor",
    "VideoPredictor",
    "AutomaticMaskGenerator",
    "SAM2Model",
    "SAM2Config",
    "SAM1Model",
    "SAM1Config",
    "ImageEmbeddings",
    "load_model_config",
    "list_model_configs",
]
