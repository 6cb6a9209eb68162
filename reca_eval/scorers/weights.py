"""Where the neural scorers' weight files are: an explicit path, else an env var, else a cache folder.

Nothing is downloaded at run time (the machines this runs on have no network); a missing file is one
clear error that names the path looked at, the env var that overrides it and where to get the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR_ENV = "RECA_EVAL_WEIGHTS_DIR"


@dataclass(frozen=True)
class WeightFile:
    """One weight file a scorer needs: its default file name, the env var naming it, how to fetch it."""

    name: str  # file name under the cache folder
    env_var: str
    how_to_get: str


MASK2FORMER = WeightFile(
    name="mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth",
    env_var="RECA_EVAL_MASK2FORMER",
    how_to_get=(
        "GenEval's detector checkpoint, as its download script fetches it "
        "(https://github.com/djghosh13/geneval/blob/main/evaluation/download_models.sh):\n"
        "  wget https://download.openmmlab.com/mmdetection/v3.0/mask2former/"
        "mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco/"
        "mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco_20220504_001756-c9d0c4f2.pth -O <path>\n"
        "(the mmdet-2.x release, mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth, "
        "loads too: its keys are renamed on load)"
    ),
)

CLIP_VITL14 = WeightFile(
    name="vit_large_patch14_clip_224.openai.safetensors",
    env_var="RECA_EVAL_CLIP_VITL14",
    how_to_get=(
        "OpenAI's CLIP ViT-L/14 in open_clip format:\n"
        "  wget https://huggingface.co/timm/vit_large_patch14_clip_224.openai/resolve/main/"
        "open_clip_model.safetensors -O <path>\n"
        "(OpenAI's own TorchScript file ViT-L-14.pt, https://openaipublic.azureedge.net/clip/models/"
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt, loads too)"
    ),
)


class MissingWeightsError(FileNotFoundError):
    """A scorer's weight file is not where it was looked for."""


def weights_cache_dir() -> Path:
    """``$RECA_EVAL_WEIGHTS_DIR`` if set, else ``~/.cache/reca-eval/weights``."""
    override = os.environ.get(CACHE_DIR_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "reca-eval" / "weights"


def resolve_weight_path(weight: WeightFile, explicit: Path | str | None = None) -> Path:
    """The path of ``weight``: ``explicit`` if given, else ``$<env_var>``, else the cache folder.

    The first of those that is set decides (a set but wrong path is an error, not a fall-through),
    so a typo never silently picks up some other file.
    """
    if explicit is not None:
        path, source = Path(explicit).expanduser(), "the path passed in"
    elif os.environ.get(weight.env_var):
        path, source = Path(os.environ[weight.env_var]).expanduser(), f"${weight.env_var}"
    else:
        path, source = weights_cache_dir() / weight.name, "the default location"
    if not path.is_file():
        raise MissingWeightsError(
            f"weight file not found: {path} (from {source}).\n"
            f"Put the file there, or point ${weight.env_var} at it, or pass its path explicitly.\n"
            f"Where to get it: {weight.how_to_get.replace('<path>', str(path))}"
        )
    return path
