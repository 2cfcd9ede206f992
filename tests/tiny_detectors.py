"""Tiny random detector models of the six transformers families, with processors (no network)."""

from __future__ import annotations


import torch
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    BartTokenizer,
    BertTokenizer,
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTokenizer,
    DetrImageProcessor,
    Florence2Config,
    Florence2ForConditionalGeneration,
    Florence2Processor,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessor,
    GroundingDinoProcessor,
    MMGroundingDinoConfig,
    MMGroundingDinoForObjectDetection,
    OmDetTurboConfig,
    OmDetTurboForObjectDetection,
    OmDetTurboProcessor,
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2ImageProcessor,
    Owlv2Processor,
    OwlViTConfig,
    OwlViTForObjectDetection,
    OwlViTImageProcessor,
    OwlViTProcessor,
    Sam3Config,
    Sam3DETRDecoderConfig,
    Sam3DETREncoderConfig,
    Sam3GeometryEncoderConfig,
    Sam3ImageProcessor,
    Sam3MaskDecoderConfig,
    Sam3Model,
    Sam3Processor,
    Sam3ViTConfig,
    Sam3VisionConfig,
    SwinConfig,
)


WORDS = ("a", "cat", "dog", "remote", "control", "red", "the", "person", "car")


def bert_tokenizer() -> BertTokenizer:
    vocab = [f"[unused{i}]" for i in range(1030)]
    # Grounding DINO hard-codes the bert-base ids of [CLS] [SEP] . ? as phrase separators
    vocab[0], vocab[100], vocab[101], vocab[102], vocab[103] = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
    vocab[1012], vocab[1029] = ".", "?"
    for i, w in enumerate(WORDS):
        vocab[200 + i] = w
    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})


def clip_tokenizer(max_len: int) -> CLIPTokenizer:
    chars = sorted(ByteLevel.alphabet())  # character-level byte BPE: any text encodes
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_len)


def bart_tokenizer() -> BartTokenizer:
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for c in sorted(ByteLevel.alphabet()):
        vocab[c] = len(vocab)
    tok = BartTokenizer(vocab=vocab, merges=[], image_token="<image>")
    tok.add_tokens(
        ["<od>", "</od>", "<ocr>", "</ocr>", "<poly>", "</poly>", "<sep>"]
        + [f"<loc_{i}>" for i in range(1000)]
    )
    return tok


def tiny_grounding_dino(mm: bool):
    tok = bert_tokenizer()
    proc = GroundingDinoProcessor(
        GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 128}), tok
    )
    config_cls, model_cls = (
        (MMGroundingDinoConfig, MMGroundingDinoForObjectDetection)
        if mm
        else (GroundingDinoConfig, GroundingDinoForObjectDetection)
    )
    cfg = config_cls(
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=10,
        num_feature_levels=4,
        encoder_n_points=2,
        decoder_n_points=2,
        use_timm_backbone=False,
        backbone=None,
        use_pretrained_backbone=False,
        backbone_config=SwinConfig(
            window_size=7,
            embed_dim=8,
            depths=[1] * 4,
            num_heads=[1] * 4,
            image_size=128,
            out_indices=[2, 3, 4],
        ),
        max_text_len=32,
        text_config={
            "model_type": "bert",
            "vocab_size": len(tok),
            "hidden_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 8,
            "max_position_embeddings": 32,
        },
    )
    return model_cls(cfg).eval(), proc


def tiny_owl(v2: bool):
    tok = clip_tokenizer(16)
    size = {"height": 64, "width": 64}
    if v2:
        proc = Owlv2Processor(Owlv2ImageProcessor(size=size), tok)
        config_cls, model_cls = Owlv2Config, Owlv2ForObjectDetection
    else:
        proc = OwlViTProcessor(OwlViTImageProcessor(size=size, crop_size=size), tok)
        config_cls, model_cls = OwlViTConfig, OwlViTForObjectDetection
    cfg = config_cls(
        projection_dim=32,
        text_config={
            "vocab_size": len(tok),
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "intermediate_size": 37,
            "max_position_embeddings": 16,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        vision_config={
            "image_size": 64,
            "patch_size": 8,
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "intermediate_size": 37,
        },
    )
    return model_cls(cfg).eval(), proc


def tiny_omdet():
    tok = clip_tokenizer(77)
    proc = OmDetTurboProcessor(DetrImageProcessor(size={"height": 224, "width": 224}, do_pad=False), tok)
    cfg = OmDetTurboConfig(
        text_config={
            "model_type": "clip_text_model",
            "vocab_size": len(tok),
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 16,
            "max_position_embeddings": 77,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        backbone_config={
            "model_type": "swin",
            "embed_dim": 8,
            "depths": (1,) * 4,
            "num_heads": (1,) * 4,
            "window_size": 7,
            "image_size": 224,
            "out_indices": (2, 3, 4),
        },
        use_timm_backbone=False,
        backbone=None,
        use_pretrained_backbone=False,
        apply_layernorm_after_vision_backbone=False,
        image_size=224,
        encoder_in_channels=(16, 32, 64),
        vision_features_channels=[8, 8, 8],
        num_queries=20,
        encoder_layers=1,
        decoder_num_layers=2,
        encoder_projection_indices=[2],
        encoder_attention_heads=2,
        decoder_num_heads=2,
        decoder_num_points=4,
        num_feature_levels=3,
        encoder_dim_feedforward=32,
        task_encoder_hidden_dim=32,
        decoder_dim_feedforward=32,
        class_embed_dim=16,
        text_projection_in_dim=16,
        text_projection_out_dim=16,
        encoder_hidden_dim=8,
        decoder_hidden_dim=8,
    )
    return OmDetTurboForObjectDetection(cfg).eval(), proc


FLORENCE_POST = {  # every key must be present (real checkpoints ship it in processor_config.json)
    "ocr": {"pattern": r"(.+?)" + r"<loc_(\d+)>" * 8, "area_threshold": 0.0},
    "phrase_grounding": {"banned_grounding_tokens": ["the image"]},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}


def tiny_florence():
    tok = bart_tokenizer()
    ip = CLIPImageProcessor(
        size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}, do_center_crop=False
    )
    ip.image_seq_length = (32 // 4) ** 2 + 1
    proc = Florence2Processor(image_processor=ip, tokenizer=tok, post_processor_config=FLORENCE_POST)
    cfg = Florence2Config(
        image_token_id=tok.image_token_id,
        text_config={
            "model_type": "bart",
            "vocab_size": len(tok),
            "max_position_embeddings": 128,
            "d_model": 16,
            "encoder_layers": 1,
            "decoder_layers": 1,
            "encoder_ffn_dim": 16,
            "decoder_ffn_dim": 16,
            "encoder_attention_heads": 1,
            "decoder_attention_heads": 1,
            "bos_token_id": 0,
            "pad_token_id": 1,
            "eos_token_id": 2,
            "decoder_start_token_id": 2,
            "forced_bos_token_id": 0,
        },
        vision_config={
            "depths": [1],
            "patch_size": [7],
            "patch_stride": [4],
            "patch_padding": [3],
            "patch_prenorm": [False],
            "embed_dim": [16],
            "num_heads": [1],
            "num_groups": [1],
            "window_size": 12,
            "projection_dim": 16,
            "max_position_embeddings": 32 // 4 + 1,
        },
    )
    return Florence2ForConditionalGeneration(cfg).eval(), proc


def tiny_sam3(
    *,
    vit_hidden: int = 64,
    vit_layers: int = 2,
    image_size: int = 224,
    hidden: int = 32,
    num_queries: int = 10,
    presence_bias: float = 4.0,
):
    """SAM 3 image model (``Sam3Model``) and ``Sam3Processor`` at toy size (~0.4M parameters).

    The defaults build in well under a second. ``vit_hidden``/``vit_layers``/``image_size`` grow
    the image side alone (the real model spends most of its time in the ViT). The presence
    head's bias is raised so that the random model is "sure" the concept is present: query
    scores then sit around 0.45, so a threshold near there keeps some detections.
    """
    tok = clip_tokenizer(32)
    tokens = image_size // 14
    proc = Sam3Processor(
        Sam3ImageProcessor(
            size={"height": image_size, "width": image_size},
            mask_size={"height": 4 * tokens, "width": 4 * tokens},
        ),
        tok,
        target_size=image_size,
    )
    vit = Sam3ViTConfig(
        hidden_size=vit_hidden,
        intermediate_size=2 * vit_hidden,
        num_hidden_layers=vit_layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=14,
        window_size=8,
        global_attn_indexes=[vit_layers - 1],
        pretrain_image_size=image_size,
    )
    heads = {"hidden_size": hidden, "num_attention_heads": 2}
    cfg = Sam3Config(
        vision_config=Sam3VisionConfig(
            backbone_config=vit,
            fpn_hidden_size=hidden,
            backbone_feature_sizes=[[4 * tokens] * 2, [2 * tokens] * 2, [tokens] * 2],
        ),
        text_config=CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=32,
            projection_dim=32,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        geometry_encoder_config=Sam3GeometryEncoderConfig(num_layers=1, intermediate_size=64, **heads),
        detr_encoder_config=Sam3DETREncoderConfig(num_layers=1, intermediate_size=64, **heads),
        detr_decoder_config=Sam3DETRDecoderConfig(
            num_layers=2, num_queries=num_queries, intermediate_size=64, **heads
        ),
        mask_decoder_config=Sam3MaskDecoderConfig(**heads),
    )
    model = Sam3Model(cfg).eval()
    with torch.no_grad():  # PyTorch's default init: transformers' std-0.02 one makes every query alike
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                module.reset_parameters()
        model.detr_decoder.presence_head.layer3.bias.fill_(presence_bias)
    return model, proc


BUILDERS = {
    "grounding-dino": lambda: tiny_grounding_dino(mm=False),
    "mm-grounding-dino": lambda: tiny_grounding_dino(mm=True),
    "owlv2": lambda: tiny_owl(v2=True),
    "owlvit": lambda: tiny_owl(v2=False),
    "omdet-turbo": tiny_omdet,
    "florence-2": tiny_florence,
    "sam3": tiny_sam3,
}


def tiny_sam3_video(
    *, size: int = 112, num_maskmem: int = 3, max_pointers: int = 4, max_cond: int = 2, **video: float
):
    """``Sam3VideoModel`` (~4.7M parameters) and its processor at ``size`` px (112: 8x8 ViT tokens).

    The tracker needs ``hidden_size`` > its memory width, which transformers fixes at 64: 128.
    """
    from transformers import (
        Sam3TrackerVideoConfig,
        Sam3TrackerVideoMaskDecoderConfig,
        Sam3TrackerVideoPromptEncoderConfig,
        Sam3VideoConfig,
        Sam3VideoModel,
        Sam3VideoProcessor,
    )
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    det, proc = tiny_sam3(hidden=128, num_queries=5, image_size=size)
    hidden = 128
    tracker = Sam3TrackerVideoConfig(
        vision_config=det.config.vision_config,
        prompt_encoder_config=Sam3TrackerVideoPromptEncoderConfig(hidden_size=hidden, image_size=size, patch_size=14),
        mask_decoder_config=Sam3TrackerVideoMaskDecoderConfig(
            hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
        ),
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=64,
        num_maskmem=num_maskmem,
        max_object_pointers_in_encoder=max_pointers,
        max_cond_frame_num=max_cond,
        image_size=size,
    )
    config = Sam3VideoConfig(
        detector_config=det.config, tracker_config=tracker, low_res_mask_size=4 * (size // 14), **video
    )
    model = Sam3VideoModel(config).eval()
    model.detector_model.load_state_dict(det.state_dict())
    with torch.no_grad():  # PyTorch's default init (transformers' std-0.02 one makes masks empty)
        for module in model.tracker_model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                module.reset_parameters()
        model.tracker_model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(2.0)  # objects are present
    video_processor = Sam2VideoVideoProcessor(size={"height": size, "width": size})
    return model, Sam3VideoProcessor(proc.image_processor, video_processor, proc.tokenizer, target_size=size)
