"""GenEval's object detector: mmdet 3.3's Mask2Former Swin-S (COCO instance segmentation) on mmcv-lite.

The model config is written here in code (equal to mmdet's
``mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py`` for everything inference uses), so nothing is
downloaded; ``tiny=True`` builds the same architecture class small enough for tests. ``detect`` runs
mmdet's own test pipeline at the official test resolution (shorter side 800, longer at most 1333) and
returns every raw detection per class name: thresholds, per-class caps and NMS are the GenEval
protocol's job, not the detector's.

GenEval published an mmdet-2.x checkpoint; ``convert_mmdet2_state_dict`` renames its keys to mmdet 3.x
(an mmdet-3.x checkpoint passes through unchanged). Checkpoints are read with torch's weights-only
unpickler (no pickled code runs; mmdet metadata objects load as inert data) or as ``.safetensors``
(``convert_to_safetensors`` writes one from a checkpoint).
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from reca_eval.core.detections import Detection
from reca_eval.scorers.mmcv_shim import force_pytorch_deformable_attention
from reca_eval.scorers.weights import MASK2FORMER, resolve_weight_path

# GenEval's object_names.txt: the 80 COCO classes in COCO order, with GenEval's wording
# ("computer mouse", "tv remote", "computer keyboard"), indexed by the detector's label.
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# The official test resolution: mmdet's Resize to scale (1333, 800) with the aspect ratio kept.
TEST_SCALE = (1333, 800)

# mmdet 2.x named the sub-layers of its generic transformer layers by position in operation_order;
# 3.x names them by role. Each rule: (module prefix, 2.x name, 3.x name). The pixel decoder's encoder
# layers run (self_attn, norm, ffn, norm); the transformer decoder's (cross_attn, norm, self_attn,
# norm, ffn, norm), so there attentions.0 is the cross-attention. Norm indices agree in both versions.
_PIXEL_ENCODER = r"panoptic_head\.pixel_decoder\.encoder\.layers\.\d+"
_DECODER = r"panoptic_head\.transformer_decoder\.layers\.\d+"
MMDET2_TO_3_RENAMES: tuple[tuple[str, str, str], ...] = (
    (_PIXEL_ENCODER, "attentions.0", "self_attn"),
    (_DECODER, "attentions.0", "cross_attn"),
    (_DECODER, "attentions.1", "self_attn"),
    (rf"(?:{_PIXEL_ENCODER}|{_DECODER})", "ffns.0", "ffn"),
)


def _rename_keys(state_dict: dict[str, Any], rules: list[tuple[re.Pattern[str], str]]) -> dict[str, Any]:
    renamed: dict[str, Any] = {}
    for key, value in state_dict.items():
        new_key = key
        for pattern, replacement in rules:
            new_key, hits = pattern.subn(replacement, new_key, count=1)
            if hits:
                break
        if new_key in renamed:
            raise ValueError(f"state-dict key conversion maps two keys onto {new_key!r} (second: {key!r})")
        renamed[new_key] = value
    return renamed


def convert_mmdet2_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Rename an mmdet-2.x Mask2Former state dict's keys to mmdet 3.x. Keys already in 3.x naming pass."""
    rules = [
        (re.compile(rf"^({prefix})\.{re.escape(old)}\."), rf"\1.{new}.")
        for prefix, old, new in MMDET2_TO_3_RENAMES
    ]
    return _rename_keys(state_dict, rules)


def convert_mmdet3_to_mmdet2_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`convert_mmdet2_state_dict` (for tests: makes 2.x-format checkpoints)."""
    rules = [
        (re.compile(rf"^({prefix})\.{re.escape(new)}\."), rf"\1.{old}.")
        for prefix, old, new in MMDET2_TO_3_RENAMES
    ]
    return _rename_keys(state_dict, rules)


def mask2former_config(num_classes: int = 80, tiny: bool = False) -> dict[str, Any]:
    """The mmdet 3.3 model config of GenEval's detector (``tiny``: same classes of modules, small sizes)."""
    if tiny:
        embed_dims, depths, num_heads = 32, [1, 1, 1, 1], [1, 2, 4, 8]
        feat_channels, encoder_layers, decoder_layers, num_queries = 32, 1, 3, 10
        ffn_encoder, ffn_decoder = 64, 64
    else:  # Swin-S, as in mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py
        embed_dims, depths, num_heads = 96, [2, 2, 18, 2], [3, 6, 12, 24]
        feat_channels, encoder_layers, decoder_layers, num_queries = 256, 6, 9, 100
        ffn_encoder, ffn_decoder = 1024, 2048
    in_channels = [embed_dims * 2**i for i in range(4)]
    attn = dict(embed_dims=feat_channels, num_heads=8, dropout=0.0, batch_first=True)
    return dict(
        type="Mask2Former",
        data_preprocessor=dict(
            type="DetDataPreprocessor",
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=32,
            pad_mask=True,
            mask_pad_value=0,
            pad_seg=False,
        ),
        backbone=dict(
            type="SwinTransformer",
            embed_dims=embed_dims,
            depths=depths,
            num_heads=num_heads,
            window_size=7,
            mlp_ratio=4,
            qkv_bias=True,
            qk_scale=None,
            drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=0.3,
            patch_norm=True,
            out_indices=(0, 1, 2, 3),
            with_cp=False,
            convert_weights=True,
            frozen_stages=-1,
            init_cfg=None,
        ),
        panoptic_head=dict(
            type="Mask2FormerHead",
            in_channels=in_channels,
            strides=[4, 8, 16, 32],
            feat_channels=feat_channels,
            out_channels=feat_channels,
            num_things_classes=num_classes,
            num_stuff_classes=0,
            num_queries=num_queries,
            num_transformer_feat_level=3,
            pixel_decoder=dict(
                type="MSDeformAttnPixelDecoder",
                num_outs=3,
                norm_cfg=dict(type="GN", num_groups=32),
                act_cfg=dict(type="ReLU"),
                encoder=dict(
                    num_layers=encoder_layers,
                    layer_cfg=dict(
                        self_attn_cfg=dict(
                            embed_dims=feat_channels,
                            num_heads=8,
                            num_levels=3,
                            num_points=4,
                            dropout=0.0,
                            batch_first=True,
                        ),
                        ffn_cfg=dict(
                            embed_dims=feat_channels,
                            feedforward_channels=ffn_encoder,
                            num_fcs=2,
                            ffn_drop=0.0,
                            act_cfg=dict(type="ReLU", inplace=True),
                        ),
                    ),
                ),
                positional_encoding=dict(num_feats=feat_channels // 2, normalize=True),
            ),
            enforce_decoder_input_project=False,
            positional_encoding=dict(num_feats=feat_channels // 2, normalize=True),
            transformer_decoder=dict(
                return_intermediate=True,
                num_layers=decoder_layers,
                layer_cfg=dict(
                    self_attn_cfg=dict(attn),
                    cross_attn_cfg=dict(attn),
                    ffn_cfg=dict(
                        embed_dims=feat_channels,
                        feedforward_channels=ffn_decoder,
                        num_fcs=2,
                        ffn_drop=0.0,
                        act_cfg=dict(type="ReLU", inplace=True),
                    ),
                ),
                init_cfg=None,
            ),
            # Losses are built by the head's constructor even for inference.
            loss_cls=dict(
                type="CrossEntropyLoss",
                use_sigmoid=False,
                loss_weight=2.0,
                reduction="mean",
                class_weight=[1.0] * num_classes + [0.1],
            ),
            loss_mask=dict(type="CrossEntropyLoss", use_sigmoid=True, reduction="mean", loss_weight=5.0),
            loss_dice=dict(
                type="DiceLoss",
                use_sigmoid=True,
                activate=True,
                reduction="mean",
                naive_dice=True,
                eps=1.0,
                loss_weight=5.0,
            ),
        ),
        panoptic_fusion_head=dict(
            type="MaskFormerFusionHead",
            num_things_classes=num_classes,
            num_stuff_classes=0,
            loss_panoptic=None,
            init_cfg=None,
        ),
        train_cfg=dict(
            num_points=12544,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            assigner=dict(
                type="HungarianAssigner",
                match_costs=[
                    dict(type="ClassificationCost", weight=2.0),
                    dict(type="CrossEntropyLossCost", weight=5.0, use_sigmoid=True),
                    dict(type="DiceCost", weight=5.0, pred_act=True, eps=1.0),
                ],
            ),
            sampler=dict(type="MaskPseudoSampler"),
        ),
        test_cfg=dict(
            panoptic_on=False,
            semantic_on=False,
            instance_on=True,
            max_per_image=100,
            iou_thr=0.8,
            filter_low_score=True,
        ),
        init_cfg=None,
    )


def test_pipeline_config(test_scale: tuple[int, int] = TEST_SCALE) -> list[dict[str, Any]]:
    """mmdet's test pipeline for an in-memory BGR image: load, resize (keeping the aspect ratio), pack."""
    return [
        dict(type="mmdet.LoadImageFromNDArray", to_float32=True),
        dict(type="mmdet.Resize", scale=tuple(test_scale), keep_ratio=True),
        dict(type="mmdet.PackDetInputs", meta_keys=("img_id", "ori_shape", "img_shape", "scale_factor")),
    ]


@contextlib.contextmanager
def _quiet_mmengine():
    # init_weights logs one INFO paragraph per parameter; keep warnings and errors.
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def build_mask2former(
    num_classes: int = 80, tiny: bool = False, test_scale: tuple[int, int] = TEST_SCALE
) -> torch.nn.Module:
    """Mask2Former (random weights) in eval mode on CPU, ready for :func:`detect`.

    ``test_scale`` is (longer-side cap, shorter side); keep the official one except in fast tests.
    """
    force_pytorch_deformable_attention()
    from mmcv.transforms import Compose
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    # mmdet's constructors call ConfigDict methods (.deepcopy) on their sub-configs.
    model_cfg = ConfigDict(mask2former_config(num_classes=num_classes, tiny=tiny))
    model = MODELS.build(model_cfg)
    model.cfg = ConfigDict(model=model_cfg)  # mmdet.apis reads model.cfg
    with _quiet_mmengine():
        model.init_weights()
    classes = (
        COCO_CLASSES if num_classes == len(COCO_CLASSES) else tuple(f"class_{i}" for i in range(num_classes))
    )
    model.dataset_meta = {"classes": classes}
    model.test_pipeline = Compose(test_pipeline_config(test_scale))
    return model.eval()


# Modules whose classes official mmdet checkpoints pickle as metadata beside the weights (mmengine's
# message hub HistoryBuffer, mmcv/mmengine ConfigDict, ...). Their globals are bound to an inert
# stand-in, so no code of theirs runs; any other global (os.system, builtins.eval, ...) is refused.
METADATA_MODULES = ("mmengine.", "mmcv.", "mmdet.")
# numpy's array and scalar reconstruction (arrays and scalars in the metadata): data, not code.
_MULTIARRAY = (np._core if hasattr(np, "_core") else np.core).multiarray  # numpy 2 / numpy 1
_NUMPY_GLOBALS = {
    "numpy.core.multiarray._reconstruct": _MULTIARRAY._reconstruct,
    "numpy._core.multiarray._reconstruct": _MULTIARRAY._reconstruct,
    "numpy.core.multiarray.scalar": _MULTIARRAY.scalar,
    "numpy._core.multiarray.scalar": _MULTIARRAY.scalar,
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
}


class PickledMetadata(dict):
    """What a pickled mmengine/mmcv metadata object becomes: its arguments and state kept as data."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _allowed_globals(names: list[str]) -> list[Any]:
    allowed: list[Any] = []
    for name in names:
        if name in _NUMPY_GLOBALS:
            allowed.append((_NUMPY_GLOBALS[name], name))
        elif name.startswith("numpy.dtypes.") and name.endswith("DType"):
            allowed.append((getattr(np.dtypes, name.rsplit(".", 1)[1]), name))
        elif name.startswith(METADATA_MODULES):
            allowed.append((PickledMetadata, name))
    if "numpy.dtype" in names and hasattr(np, "dtypes"):
        # a pickled dtype is rebuilt through its concrete class (Int64DType, ...), which must be allowed too
        allowed += [
            (c, f"numpy.dtypes.{c.__name__}") for c in vars(np.dtypes).values() if isinstance(c, type)
        ]
    return allowed


def _read_checkpoint_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    # A .safetensors file holds tensors only; a .pth file is read with torch's weights-only unpickler:
    # tensors, containers and numpy data load, mmdet metadata objects become inert PickledMetadata,
    # and a pickle that names any other global (code it would run) is refused before anything runs.
    if checkpoint.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(checkpoint, device="cpu")
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{checkpoint}: unreadable safetensors file ({exc})") from exc
    else:
        names: list[str] = []
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(checkpoint)
            with torch.serialization.safe_globals(_allowed_globals(names)):
                raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            refused = [n for n in names if not _allowed_globals([n])]
            raise ValueError(
                f"{checkpoint}: refused: the pickle names {refused or 'globals'} that a weights-only load "
                "does not run (only tensors, containers, numpy data and mmdet metadata are read). Use the "
                "official checkpoint, or a .safetensors file of its state_dict"
            ) from exc
        except (RuntimeError, EOFError, ValueError, OSError) as exc:
            raise ValueError(f"{checkpoint}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    state_dict = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(
            f"{checkpoint}: not an mmdet checkpoint (expected a dict with a 'state_dict' of tensors)"
        )
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def convert_to_safetensors(checkpoint: Path | str, out: Path | str) -> Path:
    """Write a checkpoint's state_dict (read as :func:`load_checkpoint_into` reads it, keys renamed to
    mmdet 3.x) as a .safetensors file, which later loads with no unpickling at all."""
    from safetensors.torch import save

    from reca_eval.core.records import atomic_write_bytes

    checkpoint, out = Path(checkpoint), Path(out)
    state_dict = convert_mmdet2_state_dict(_read_checkpoint_state_dict(checkpoint))
    atomic_write_bytes(out, save({k: v.contiguous() for k, v in state_dict.items()}))
    return out


def load_checkpoint_into(model: torch.nn.Module, checkpoint: Path | str) -> torch.nn.Module:
    """Strictly load an mmdet-2.x or 3.x Mask2Former checkpoint file into ``model`` (keys renamed as needed)."""
    checkpoint = Path(checkpoint)
    state_dict = convert_mmdet2_state_dict(_read_checkpoint_state_dict(checkpoint))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{checkpoint}: does not fit this Mask2Former ({exc})") from exc
    return model


def load_detector(
    checkpoint: Path | str | None = None,
    device: str | torch.device = "cpu",
    *,
    tiny: bool = False,
    test_scale: tuple[int, int] = TEST_SCALE,
) -> torch.nn.Module:
    """GenEval's Mask2Former Swin-S with its COCO weights, strictly loaded, in eval mode on ``device``.

    ``checkpoint`` None: ``$RECA_EVAL_MASK2FORMER``, else ``~/.cache/reca-eval/weights/<name>``; a
    missing file raises :class:`~reca_eval.scorers.weights.MissingWeightsError` saying where to get it.
    Accepts mmdet-2.x (GenEval's original release) and mmdet-3.x checkpoints (``.pth``, read without
    running pickled code) and their ``.safetensors`` conversions. ``tiny`` and a
    non-default ``test_scale`` are for smoke tests only: they are not GenEval's detector.
    """
    path = resolve_weight_path(MASK2FORMER, checkpoint)
    model = build_mask2former(num_classes=len(COCO_CLASSES), tiny=tiny, test_scale=test_scale)
    return load_checkpoint_into(model, path).to(device).eval()


def detect(model: torch.nn.Module, image: Image.Image) -> dict[str, list[Detection]]:
    """Every detection of ``model`` on ``image``, per class name (all classes present, most lists empty).

    Within a class, detections come in descending score order. Boxes are (x1, y1, x2, y2) in the
    input image's pixels; masks are boolean (H, W) at the input image's size. Nothing is thresholded.
    This is GenEval's loop: one image through mmdet's ``inference_detector``.
    """
    from mmdet.apis import inference_detector

    result = inference_detector(model, _bgr(image), test_pipeline=model.test_pipeline)
    return _detections(model, result)


def detect_many(model: torch.nn.Module, images: list[Image.Image]) -> list[dict[str, list[Detection]]]:
    """:func:`detect` of every image, their forward passes in one batch (mmdet's ``test_step`` on the
    images the same test pipeline prepared; GenEval's images share one size, so nothing is padded and
    each image's result is the one it gets alone, up to the order of floating-point sums)."""
    if not images:
        return []
    prepared = [model.test_pipeline({"img": _bgr(image), "img_id": 0}) for image in images]
    batch = {"inputs": [p["inputs"] for p in prepared], "data_samples": [p["data_samples"] for p in prepared]}
    with torch.no_grad():
        results = model.test_step(batch)
    return [_detections(model, result) for result in results]


def _bgr(image: Image.Image) -> np.ndarray:
    # mmdet works in BGR, as its file loader (cv2) would read the PNG.
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _detections(model: torch.nn.Module, result) -> dict[str, list[Detection]]:
    instances = result.pred_instances
    classes = model.dataset_meta["classes"]
    boxes = instances.bboxes.detach().cpu().numpy().astype(float)
    scores = instances.scores.detach().cpu().numpy().astype(float)
    labels = instances.labels.detach().cpu().numpy()
    masks = instances.masks.detach().cpu().numpy().astype(bool) if "masks" in instances else None
    detections: dict[str, list[Detection]] = {name: [] for name in classes}
    for i in np.argsort(-scores, kind="stable"):
        detections[classes[labels[i]]].append(
            Detection(
                box=tuple(float(v) for v in boxes[i]),
                score=float(scores[i]),
                mask=None if masks is None else masks[i],
            )
        )
    return detections
