"""GenEval's colour classifier: zero-shot CLIP ViT-L/14 (OpenAI weights) over ten colour names.

As in GenEval's evaluate_images.py: per object class, a zero-shot classifier over the ten colours
from three templates (clip_benchmark's recipe: normalise each template's text embedding, average,
normalise again); each detection is cut out by compositing the image over a #999 background through
its mask and cropping to its box, and gets the colour of highest cosine similarity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


@dataclass
class ColourClassifier:
    """A CLIP model with its eval transform and tokenizer, plus the per-class text classifiers built so far."""

    model: torch.nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[[list[str]], torch.Tensor]
    device: torch.device
    text_classifiers: dict[str, torch.Tensor] = field(default_factory=dict)  # class name -> (D, 10)


def colour_classifier_from_model(
    model: torch.nn.Module,
    preprocess: Callable[[Image.Image], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    device: str | torch.device = "cpu",
) -> ColourClassifier:
    """Wrap any open_clip-style model (``encode_image`` / ``encode_text``) as a colour classifier."""
    device = torch.device(device)
    return ColourClassifier(
        model=model.to(device).eval(), preprocess=preprocess, tokenizer=tokenizer, device=device
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
) -> ColourClassifier:
    """GenEval's colour classifier from OpenAI CLIP weights on local disk.

    ``pretrained``: a local weight file (open_clip ``.safetensors``/``.bin``, or OpenAI's TorchScript
    ``ViT-L-14.pt``); None looks at ``$RECA_EVAL_CLIP_VITL14``, then the reca-eval weights cache.
    ``model_name``: an open_clip model name or a ``.json`` model config (:func:`resolve_model_name`).
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
    return colour_classifier_from_model(model, preprocess, open_clip.get_tokenizer(model_name), device)


def text_classifier(clf: ColourClassifier, classname: str) -> torch.Tensor:
    """The (D, 10) zero-shot weights of the ten colours for objects of ``classname``, cached per class."""
    if classname not in clf.text_classifiers:
        columns = []
        with torch.no_grad():
            for colour in COLOURS:
                texts = [t.format(c=colour, obj=classname) for t in COLOUR_TEMPLATES]
                embeddings = clf.model.encode_text(clf.tokenizer(texts).to(clf.device))
                mean = F.normalize(embeddings.float(), dim=-1).mean(dim=0)
                columns.append(mean / mean.norm())
        clf.text_classifiers[classname] = torch.stack(columns, dim=1)
    return clf.text_classifiers[classname]


def classify_colours(
    clf: ColourClassifier, image: Image.Image, classname: str, detections: Sequence[Detection]
) -> list[str]:
    """The colour of each detection (one of :data:`COLOURS`), in the order given."""
    if not detections:
        return []
    weights = text_classifier(clf, classname)
    colours: list[str] = []
    with torch.no_grad():
        for start in range(0, len(detections), BATCH_SIZE):
            batch = detections[start : start + BATCH_SIZE]
            pixels = torch.stack(
                [clf.preprocess(crop_for_colour(image, d, CROP_BACKGROUND)) for d in batch]
            ).to(clf.device)
            features = F.normalize(clf.model.encode_image(pixels).float(), dim=-1)
            colours.extend(COLOURS[i] for i in (features @ weights).argmax(dim=1).tolist())
    return colours
