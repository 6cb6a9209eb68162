"""The official benchmarks: GenEval (short and long prompts) and DPG-Bench.

Their item files are the official ones, never shipped in this repository: they are read from
``--items PATH``, else from the data folder (``$RECA_EVAL_DATA``, default ``~/.cache/reca-eval/data``)
where a user placed (or fetched) them. A missing file is one clear error saying what to put where.
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


def _geneval_backend(options: dict[str, Any]) -> tuple[Callable, Callable, dict[str, Any]]:
    """The official detector + colour classifier, loaded once per run from local weights."""
    from reca_eval.evaluate import package_versions
    from reca_eval.scorers import clip_colour, mask2former

    device = options.get("device", "cpu")
    detector = mask2former.load_detector(options.get("detector_weights"), device=device)
    classifier = clip_colour.load_colour_classifier(pretrained=options.get("clip_weights"), device=device)

    def detect(image: Image.Image):
        return mask2former.detect(detector, image)

    def colour_of_image(image: Image.Image, classname: str, objects):
        return clip_colour.classify_colours(classifier, image, classname, objects)

    scorer = {
        "backend": "mask2former-swin-s+clip-vit-l-14",
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
    output.scorer = scorer
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
    answer = options.get("vqa")
    if answer is None:
        raise ValueError(
            "dpg needs a VQA backend: pass options['vqa'] = a callable (image, question rows) -> answers "
            "(the official script uses mPLUG-large; any local transformers VQA model can stand in)"
        )
    output = layouts_dpg.score_dpg_folder(
        questions_frame(items),
        image_dir,
        answer,
        mode=options.get("mode") or "official",
        images_per_prompt=int(options.get("images_per_prompt", 4)),
        progress=options.get("progress", True),
    )
    output.scorer = {"backend": getattr(answer, "name", "custom-vqa"), **output.scorer}
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
