"""The code samples of the official READMEs, quoted verbatim, and the few changes the tests make.

Sources: facebookresearch/sam2 README.md, facebookresearch/segment-anything README.md (and its
notebooks/predictor_example.ipynb), autodistill/autodistill-grounded-sam-2 README.md. Each
change a test makes goes through :func:`adapt`, which insists that it applies; the changes are
the ones the compatibility issue allows: import lines, checkpoint paths / hub ids, the device
(``"cuda"`` -> ``"cpu"``), a small ``image_size`` and the READMEs' ``<placeholders>``.
"""

from __future__ import annotations

S2 = 256  # SAM 2 input size used by the tests
CFG = "configs/sam2.1/sam2.1_hiera_t.yaml"  # the tiny config: the tests' checkpoints are SAM 2.1-T

# facebookresearch/sam2 README.md, "Image prediction"
SAM2_IMAGE = '''import torch
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

checkpoint = "./checkpoints/sam2.1_hiera_large.pt"
model_cfg = "configs/sam2.1/sam2.1_hiera_l.yaml"
predictor = SAM2ImagePredictor(build_sam2(model_cfg, checkpoint))

with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
    predictor.set_image(<your_image>)
    masks, _, _ = predictor.predict(<input_prompts>)
'''
# facebookresearch/sam2 README.md, "Video prediction" (its stray ":" after the call is dropped below)
SAM2_VIDEO = '''import torch
from sam2.build_sam import build_sam2_video_predictor

checkpoint = "./checkpoints/sam2.1_hiera_large.pt"
model_cfg = "configs/sam2.1/sam2.1_hiera_l.yaml"
predictor = build_sam2_video_predictor(model_cfg, checkpoint)

with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
    state = predictor.init_state(<your_video>)

    # add new prompts and instantly get the output on the same frame
    frame_idx, object_ids, masks = predictor.add_new_points_or_box(state, <your_prompts>):

    # propagate the prompts to get masklets throughout the video
    for frame_idx, object_ids, masks in predictor.propagate_in_video(state):
        ...
'''
# facebookresearch/sam2 README.md, "Load from Hugging Face" (image, then video)
SAM2_IMAGE_HF = '''import torch
from sam2.sam2_image_predictor import SAM2ImagePredictor

predictor = SAM2ImagePredictor.from_pretrained("facebook/sam2-hiera-large")

with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
    predictor.set_image(<your_image>)
    masks, _, _ = predictor.predict(<input_prompts>)
'''
SAM2_VIDEO_HF = '''import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor

predictor = SAM2VideoPredictor.from_pretrained("facebook/sam2-hiera-large")

with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
    state = predictor.init_state(<your_video>)

    # add new prompts and instantly get the output on the same frame
    frame_idx, object_ids, masks = predictor.add_new_points_or_box(state, <your_prompts>):

    # propagate the prompts to get masklets throughout the video
    for frame_idx, object_ids, masks in predictor.propagate_in_video(state):
        ...
'''
# facebookresearch/segment-anything README.md, "Getting Started" (prompts, then whole image)
SA_PREDICT = '''from segment_anything import SamPredictor, sam_model_registry
sam = sam_model_registry["<model_type>"](checkpoint="<path/to/checkpoint>")
predictor = SamPredictor(sam)
predictor.set_image(<your_image>)
masks, _, _ = predictor.predict(<input_prompts>)
'''
SA_AMG = '''from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
sam = sam_model_registry["<model_type>"](checkpoint="<path/to/checkpoint>")
mask_generator = SamAutomaticMaskGenerator(sam)
masks = mask_generator.generate(<your_image>)
'''
# facebookresearch/segment-anything notebooks/predictor_example.ipynb, "Batched prompt inputs"
SA_BATCHED = '''input_boxes = torch.tensor([
    [75, 275, 1725, 850],
    [425, 600, 700, 875],
    [1375, 550, 1650, 800],
    [1240, 675, 1400, 750],
], device=predictor.device)
transformed_boxes = predictor.transform.apply_boxes_torch(input_boxes, image.shape[:2])
masks, _, _ = predictor.predict_torch(
    point_coords=None,
    point_labels=None,
    boxes=transformed_boxes,
    multimask_output=False,
)
'''
# autodistill/autodistill-grounded-sam-2 README.md, "Quickstart"
AUTODISTILL = '''from autodistill_grounded_sam_2 import GroundedSAM2
from autodistill.detection import CaptionOntology
from autodistill.utils import plot
import cv2

# define an ontology to map class names to our Grounded SAM 2 prompt
# the ontology dictionary has the format {caption: class}
# where caption is the prompt sent to the base model, and class is the label that will
# be saved for that caption in the generated annotations
# then, load the model
base_model = GroundedSAM2(
    ontology=CaptionOntology(
        {
            "person": "person",
            "shipping container": "shipping container",
        }
    )
)

# run inference on a single image
results = base_model.predict("logistics.jpeg")

plot(
    image=cv2.imread("logistics.jpeg"),
    classes=base_model.ontology.classes(),
    detections=results
)
# label all images in a folder called `context_images`
base_model.label("./context_images", extension=".jpeg")
'''


def adapt(sample: str, changes: dict[str, str]) -> str:
    """The sample with each listed change made; every one must apply (nothing else changes)."""
    for old, new in changes.items():
        assert old in sample, f"{old!r} is not in the sample"
        sample = sample.replace(old, new)
    return sample


def run(code: str, **names) -> dict:
    scope = {"__name__": "__readme__", **names}
    exec(compile(code, "<README sample>", "exec"), scope)
    return scope


OURS_SAM2 = {
    "from sam2.build_sam import": "from segmenter.compat.sam2 import",
    "from sam2.sam2_image_predictor import": "from segmenter.compat.sam2 import",
    "from sam2.sam2_video_predictor import": "from segmenter.compat.sam2 import",
}
SIZE_ARGS = f'device="cpu", hydra_overrides_extra=["++model.image_size={S2}"]'


def sam2_changes(sample: str, ckpt, imports: dict[str, str]) -> dict[str, str]:
    changes = {k: v for k, v in imports.items() if k in sample}
    changes |= {'"cuda"': '"cpu"', '"configs/sam2.1/sam2.1_hiera_l.yaml"': f'"{CFG}"'}
    changes |= {'"./checkpoints/sam2.1_hiera_large.pt"': repr(str(ckpt))}
    changes |= {"(model_cfg, checkpoint)": f"(model_cfg, checkpoint, {SIZE_ARGS})"}
    changes |= {'"facebook/sam2-hiera-large"': f'"facebook/sam2.1-hiera-tiny", {SIZE_ARGS}'}
    changes |= {"<your_image>": "image", "<input_prompts>": "**prompts", "<your_video>": "video"}
    changes |= {"<your_prompts>):": "**prompts)"}  # the README's stray ":" dropped
    changes |= {"        ...": "        results.append((frame_idx, object_ids, masks))"}
    return {k: v for k, v in changes.items() if k in sample}


SA_IMPORTS = {"from segment_anything import": "from segmenter.compat.segment_anything import"}


def sa_changes(sample: str, path) -> dict[str, str]:
    changes = {'"<model_type>"': '"vit_b"', '"<path/to/checkpoint>"': repr(str(path)), "<your_image>": "image",
               "<input_prompts>": "**prompts"}
    return {k: v for k, v in changes.items() if k in sample}


AUTODISTILL_IMPORTS = {
    "from autodistill_grounded_sam_2 import GroundedSAM2": "from grounded_sam import GroundedSAM2",
    "from autodistill.detection import CaptionOntology": "from grounded_sam import CaptionOntology",
    "from autodistill.utils import plot": "from grounded_sam import plot",
}
