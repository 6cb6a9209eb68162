"""The official benchmarks: GenEval (short and long prompts) and DPG-Bench.

Their item files are the official ones, never shipped in this repository: they are read from
``--items PATH``, else from the data folder (``$RECA_EVAL_DATA``, default ``~/.cache/reca-eval/data``)
where a user placed (or fetched) them. A missing file is one clear error saying what to put where.

Scorer options (``score_images(options=...)``, or ``reca-eval run NAME -o KEY=VALUE``):

- ``geneval`` / ``geneval-long``: ``detector_weights`` (Mask2Former checkpoint; default
  ``$RECA_EVAL_MASK2FORMER``, then the weights cache), ``clip_weights`` (CLIP weights; default
  ``$RECA_EVAL_CLIP_VITL14``, then the cache), ``device`` (default cpu), ``images_per_prompt``
  (default 4). For smoke tests and small GPUs only: ``detector_arch`` (``swin-s``, the official, or
  ``tiny``: the small random-init architecture of ``build_mask2former(tiny=True)``),
  ``detector_test_scale`` (``LONGER,SHORTER``; official 1333,800) and ``clip_model`` (an open_clip
  model name or a ``.json`` model config; official ``ViT-L-14``). The record's ``scorer`` names the
  arch, test scale, CLIP model and each weight file's name, size and sha256; anything but the
  official set says "NOT the official ..." in ``scorer["backend"]`` and ``official_architecture`` is false.
- ``dpg``: ``vqa`` = ``local`` (``vqa_model_path``, a local Qwen2.5-VL-class folder) or ``openai``
  (``vqa_model``, a dated snapshot; ``vqa_base_url``), see :mod:`reca_eval.scorers.vqa`; in Python
  also a callable ``(image, question rows) -> answers``. ``mode`` (official | fixed),
  ``images_per_prompt`` (default 4), ``vqa_cache`` (folder, ``""`` = off).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from reca_eval import layouts_dpg, layouts_geneval
from reca_eval.benchmarks_shapes import load_dpg_items, per_sample_path, questions_frame
from reca_eval.protocols import dpg, geneval
from reca_eval.registry import Benchmark, ScoreOutput, register

DATA_ENV = "RECA_EVAL_DATA"

OFFICIAL_FILES = {
    "geneval": (
        "geneval/evaluation_metadata.jsonl",
        "https://github.com/djghosh13/geneval/raw/main/prompts/evaluation_metadata.jsonl",
    ),
    "geneval-long": (
        "geneval/evaluation_metadata_long.jsonl",
        "the RecA release's rewritten long GenEval prompts (evaluation_metadata_long.jsonl)",
    ),
    "dpg": (
        "dpg/dpg_bench.csv",
        "https://github.com/TencentQQGYLab/ELLA/raw/main/dpg_bench/dpg_bench.csv",
    ),
}


def data_dir() -> Path:
    override = os.environ.get(DATA_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "reca-eval" / "data"


def official_items(name: str) -> Path:
    relative, source = OFFICIAL_FILES[name]
    path = data_dir() / relative
    if not path.exists():
        raise FileNotFoundError(
            f"{name}: item file {path} not found. Place the official file there (source: {source}), "
            f"set ${DATA_ENV} to the folder holding {relative}, or pass --items PATH."
        )
    return path


# ---------------------------------------------------------------------------------------------- geneval


OFFICIAL_DETECTOR_ARCH = "swin-s"
DETECTOR_ARCHS = ("swin-s", "tiny")
OFFICIAL_CLIP_MODEL = "ViT-L-14"


def _test_scale(value: Any) -> tuple[int, int]:
    """``detector_test_scale`` as (longer-side cap, shorter side): a pair, or the text "1333,800"."""
    parts = value.split(",") if isinstance(value, str) else value
    try:
        longer, shorter = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(
            f"option detector_test_scale must be 'LONGER,SHORTER' (e.g. 1333,800), got {value!r}"
        ) from None
    if not 0 < shorter <= longer:
        raise ValueError(f"option detector_test_scale needs 0 < shorter <= longer, got {value!r}")
    return longer, shorter


def describe_weight_file(path: Path) -> dict[str, Any]:
    """Name, size and sha256 of a weight file: what tells two scorers' weights apart in a record."""
    from reca_eval.records import sha256_file

    path = Path(path)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _geneval_backend(options: dict[str, Any]) -> tuple[Callable, Callable, dict[str, Any]]:
    """The detector + colour classifier, loaded once per run from local weights.

    Defaults are GenEval's own scorer; any other arch, CLIP model or test scale is recorded as
    "NOT the official ..." in the scorer, so a smoke run can never pass for an official number.
    """
    from reca_eval.evaluate import package_versions
    from reca_eval.scorers import clip_colour, mask2former
    from reca_eval.scorers.weights import CLIP_VITL14, MASK2FORMER, resolve_weight_path

    device = str(options.get("device", "cpu"))
    arch = str(options.get("detector_arch", OFFICIAL_DETECTOR_ARCH))
    if arch not in DETECTOR_ARCHS:
        raise ValueError(f"option detector_arch must be one of {DETECTOR_ARCHS}, got {arch!r}")
    test_scale = _test_scale(options.get("detector_test_scale", mask2former.TEST_SCALE))
    clip_model = str(options.get("clip_model", OFFICIAL_CLIP_MODEL))
    detector_path = resolve_weight_path(MASK2FORMER, options.get("detector_weights"))
    clip_path = resolve_weight_path(CLIP_VITL14, options.get("clip_weights"))

    detector = mask2former.load_detector(
        detector_path, device=device, tiny=arch == "tiny", test_scale=test_scale
    )
    classifier = clip_colour.load_colour_classifier(clip_model, pretrained=clip_path, device=device)

    def detect(image: Image.Image):
        return mask2former.detect(detector, image)

    def colour_of_image(image: Image.Image, classname: str, objects):
        return clip_colour.classify_colours(classifier, image, classname, objects)

    detector_official = arch == OFFICIAL_DETECTOR_ARCH and test_scale == tuple(mask2former.TEST_SCALE)
    clip_official = clip_model == OFFICIAL_CLIP_MODEL
    detector_name = f"mask2former-{arch}" + (
        "" if detector_official else f"@{test_scale[0]}x{test_scale[1]} (NOT the official detector)"
    )
    clip_name = f"clip-{Path(clip_model).name}" + (
        "" if clip_official else " (NOT the official colour classifier)"
    )
    scorer = {
        "backend": f"{detector_name}+{clip_name}",
        "official_architecture": detector_official and clip_official,  # weights: see sha256
        "detector": {"arch": arch, "test_scale": list(test_scale), **describe_weight_file(detector_path)},
        "colour_classifier": {"model": clip_model, **describe_weight_file(clip_path)},
        "device": device,
        "versions": package_versions(
            ("mmdet", "mmcv-lite", "mmengine", "open-clip-torch", "torch", "torchvision")
        ),
    }
    return detect, colour_of_image, scorer


def _score_geneval(items: list[dict], image_dir: Path, options: dict[str, Any]) -> ScoreOutput:
    detect, colour_of_image, scorer = _geneval_backend(options)
    output = layouts_geneval.score_geneval_folder(
        items,
        image_dir,
        detect,
        colour_of_image,
        images_per_prompt=int(options.get("images_per_prompt", 4)),
        expected_size=None,  # GenEval accepts any resolution; the detector rescales
        progress=options.get("progress", True),
    )
    output.scorer = {**output.scorer, **scorer}
    return output


for _name, _description in (
    ("geneval", "GenEval (553 prompts, six tasks): Mask2Former detection + CLIP colour, official rules."),
    ("geneval-long", "GenEval with the long rewritten prompts: same items and rules."),
):
    register(
        Benchmark(
            name=_name,
            version="1.0",
            description=_description,
            task="t2i",
            layout="geneval",
            scorer_name="Mask2Former + CLIP",
            extra="geneval",
            images_per_prompt=4,
            resolution=512,
            categories=geneval.TAGS,
            default_items=lambda n=_name: official_items(n),
            load_items=geneval.load_metadata,
            score=_score_geneval,
            aggregate=geneval.aggregate,
            prompt_of=lambda item: item["prompt"],
            sample_path=layouts_geneval.sample_path,
            prepare_layout=layouts_geneval.prepare_geneval_folder,
        )
    )

# -------------------------------------------------------------------------------------------------- dpg


def _score_dpg(items: list[dict], image_dir: Path, options: dict[str, Any]) -> ScoreOutput:
    from reca_eval.scorers.vqa import make_vqa

    answer, describe = make_vqa(options)
    output = layouts_dpg.score_dpg_folder(
        questions_frame(items),
        image_dir,
        answer,
        mode=options.get("mode") or "official",
        images_per_prompt=int(options.get("images_per_prompt", 4)),
        progress=options.get("progress", True),
    )
    output.scorer = {**output.scorer, **describe()}
    return output


register(
    Benchmark(
        name="dpg",
        version="1.0",
        description="DPG-Bench (1,065 dense prompts): VQA over a question graph with DPG's gating.",
        task="t2i",
        layout="dpg",
        scorer_name="VQA (pluggable)",
        extra="models",
        images_per_prompt=4,
        resolution=512,
        categories=("entity", "attribute", "relation", "global", "other"),
        default_items=lambda: official_items("dpg"),
        load_items=load_dpg_items,
        score=_score_dpg,
        aggregate=dpg.aggregate,
        prompt_of=lambda item: item["prompt"],
        sample_path=per_sample_path,
    )
)
