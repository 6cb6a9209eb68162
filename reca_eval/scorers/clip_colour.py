"""GenEval's colour classifier: zero-shot CLIP ViT-L/14 (OpenAI weights) over ten colour names.

As in GenEval's evaluate_images.py: per object class, a zero-shot classifier over the ten colours
from three templates (clip_benchmark's recipe: normalise each template's text embedding, average,
normalise again); each detection is cut out by compositing the image over a #999 background through
its mask and cropping to its box, and gets the colour of highest logit, 100 x cosine similarity.

Precision: GenEval calls clip-benchmark 1.4.0's ``zero_shot_classifier`` and ``run_classification``
with their default ``amp=True``, i.e. under ``torch.cuda.amp.autocast()`` (float16 on CUDA), both for
the text classifier and for the image features and their logits (the matmul with the classifier runs
in float16 too, so near-equal colours can tie or swap). On CUDA we do the same by default; on CPU
CUDA autocast does nothing, so the official recipe is float32 there, and so is ours. The precision
used is :attr:`ColourClassifier.precision` ("fp16-autocast" or "fp32"), recorded in the run record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from reca_eval.core.detections import Detection, crop_for_colour
from reca_eval.scorers.weights import CLIP_VITL14, resolve_weight_path

COLOURS: tuple[str, ...] = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
)
# ``{c}`` is the colour; ``{obj}`` the detected object's class name.
COLOUR_TEMPLATES: tuple[str, ...] = (
    "a photo of a {c} {obj}",
    "a photo of a {c}-colored {obj}",
    "a photo of a {c} object",
)
CROP_BACKGROUND = "#999"
BATCH_SIZE = 16
LOGIT_SCALE = 100.0  # clip-benchmark's logits; it matters under float16, where it moves the rounding
PRECISIONS = ("fp16-autocast", "fp32")


@dataclass
class ColourClassifier:
    """A CLIP model with its eval transform and tokenizer, plus the per-class text classifiers built so far."""

    model: torch.nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[[list[str]], torch.Tensor]
    device: torch.device
    precision: str = "fp32"  # one of PRECISIONS; see the module docstring
    text_classifiers: dict[str, torch.Tensor] = field(default_factory=dict)  # class name -> (D, 10)


def official_precision(device: str | torch.device) -> str:
    """What clip-benchmark 1.4.0's ``amp=True`` amounts to on ``device``: CUDA autocast is fp16, else fp32."""
    return "fp16-autocast" if torch.device(device).type == "cuda" else "fp32"


def autocast_settings(clf: ColourClassifier) -> dict | None:
    """Keyword arguments of ``torch.autocast`` for ``clf``'s precision, or None for plain float32.

    ``torch.cuda.amp.autocast()`` (what clip-benchmark 1.4.0 enters) is ``torch.autocast("cuda")``
    with its defaults: float16, weight-cast cache on.
    """
    if clf.precision == "fp32":
        return None
    if clf.precision == "fp16-autocast":
        return {"device_type": "cuda", "dtype": torch.float16, "enabled": True, "cache_enabled": True}
    raise ValueError(f"unknown colour classifier precision {clf.precision!r} (one of {PRECISIONS})")


@contextlib.contextmanager
def _precision(clf: ColourClassifier) -> Iterator[None]:
    settings = autocast_settings(clf)
    with torch.no_grad(), torch.autocast(**settings) if settings else contextlib.nullcontext():
        yield


def colour_classifier_from_model(
    model: torch.nn.Module,
    preprocess: Callable[[Image.Image], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    device: str | torch.device = "cpu",
    precision: str | None = None,
) -> ColourClassifier:
    """Wrap any open_clip-style model (``encode_image`` / ``encode_text``) as a colour classifier.

    ``precision`` None is the official one for ``device`` (:func:`official_precision`).
    """
    device = torch.device(device)
    precision = official_precision(device) if precision is None else precision
    if precision not in PRECISIONS:
        raise ValueError(f"colour classifier precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16-autocast" and device.type != "cuda":
        raise ValueError(f"precision fp16-autocast is CUDA autocast; device is {device}")
    return ColourClassifier(
        model=model.to(device).eval(),
        preprocess=preprocess,
        tokenizer=tokenizer,
        device=device,
        precision=precision,
    )


def _uses_quick_gelu(model_name: str) -> bool:
    import open_clip

    # OpenAI trained CLIP with QuickGELU; open_clip's plain "ViT-L-14" config uses nn.GELU and only
    # its "openai" tag records the difference, which a local weight file does not carry.
    tag = open_clip.get_pretrained_cfg(model_name, "openai") or {}
    return bool(tag.get("quick_gelu", False))


def resolve_model_name(name_or_config: str | Path) -> str:
    """An open_clip model name; a path to a ``.json`` model config is registered under its file stem.

    The config route lets a smoke test (or a user with another CLIP) name a model open_clip does not
    ship, from the command line, without code.
    """
    import open_clip

    text = str(name_or_config)
    if text.endswith(".json"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"open_clip model config {path} not found")
        open_clip.add_model_config(path)
        return path.stem
    if open_clip.get_model_config(text) is None:
        raise ValueError(
            f"unknown open_clip model {text!r}: give a model name open_clip knows (GenEval's is 'ViT-L-14') "
            "or the path of a .json model config"
        )
    return text


def load_colour_classifier(
    model_name: str = "ViT-L-14",
    pretrained: Path | str | None = None,
    device: str | torch.device = "cpu",
    precision: str | None = None,
) -> ColourClassifier:
    """GenEval's colour classifier from OpenAI CLIP weights on local disk.

    ``pretrained``: a local weight file (open_clip ``.safetensors``/``.bin``, or OpenAI's TorchScript
    ``ViT-L-14.pt``); None looks at ``$RECA_EVAL_CLIP_VITL14``, then the reca-eval weights cache.
    ``model_name``: an open_clip model name or a ``.json`` model config (:func:`resolve_model_name`).
    ``precision``: None = the official one on ``device`` (fp16 autocast on CUDA, fp32 on CPU).
    """
    import open_clip

    model_name = resolve_model_name(model_name)
    path = resolve_weight_path(CLIP_VITL14, pretrained)
    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name,
        pretrained=str(path),
        device=device,
        force_quick_gelu=_uses_quick_gelu(model_name),
        # OpenAI's TorchScript archive cannot be read with weights_only; safetensors/bin files can.
        weights_only=path.suffix != ".pt",
    )
    return colour_classifier_from_model(
        model, preprocess, open_clip.get_tokenizer(model_name), device, precision
    )


def text_classifier(clf: ColourClassifier, classname: str) -> torch.Tensor:
    """The (D, 10) zero-shot weights of the ten colours for objects of ``classname``, cached per class.

    Per colour: the three templates' text embeddings, each normalised, averaged, normalised again,
    at ``clf.precision`` (under fp16 autocast the normalisation's norm runs in float32, so the
    weights come out float32, as clip-benchmark's do).
    """
    if classname not in clf.text_classifiers:
        columns = []
        with _precision(clf):
            for colour in COLOURS:
                texts = [t.format(c=colour, obj=classname) for t in COLOUR_TEMPLATES]
                embeddings = clf.model.encode_text(clf.tokenizer(texts).to(clf.device))
                mean = F.normalize(embeddings, dim=-1).mean(dim=0)
                columns.append(mean / mean.norm())
            clf.text_classifiers[classname] = torch.stack(columns, dim=1)
    return clf.text_classifiers[classname]


def colour_logits(clf: ColourClassifier, pixels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """100 x cosine similarity of each crop with each colour, as float32 (computed at ``clf.precision``)."""
    with _precision(clf):
        features = F.normalize(clf.model.encode_image(pixels.to(clf.device)), dim=-1)
        logits = LOGIT_SCALE * features @ weights
    return logits.float()


def classify_colours(
    clf: ColourClassifier, image: Image.Image, classname: str, detections: Sequence[Detection]
) -> list[str]:
    """The colour of each detection (one of :data:`COLOURS`), in the order given.

    The first of equal logits wins (``argmax``), in batches of 16 crops as the official loader has.
    """
    if not detections:
        return []
    weights = text_classifier(clf, classname)
    colours: list[str] = []
    for start in range(0, len(detections), BATCH_SIZE):
        batch = detections[start : start + BATCH_SIZE]
        pixels = torch.stack([clf.preprocess(crop_for_colour(image, d, CROP_BACKGROUND)) for d in batch])
        colours.extend(COLOURS[i] for i in colour_logits(clf, pixels, weights).argmax(dim=1).tolist())
    return colours
