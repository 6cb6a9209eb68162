"""DPG-Bench (1,065 dense prompts): VQA over a question graph with DPG's gating.

Items are the official question graph (ELLA's ``dpg_bench.csv``), never shipped: ``--items PATH`` or
the data folder (``$RECA_EVAL_DATA``). Scorer options (``reca-eval run dpg -o KEY=VALUE``): ``vqa`` =
``local`` (``vqa_model_path``, a local Qwen2.5-VL-class folder) or ``openai`` (``vqa_model``, a dated
snapshot; ``vqa_base_url``), see :mod:`reca_eval.scorers.vqa`; in Python also a callable
``(image, question rows) -> answers``. ``mode`` (official | fixed), ``images_per_prompt`` (default 4),
``vqa_cache`` (folder, ``""`` = off).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reca_eval.benchmarks.dpg import layout as layouts_dpg
from reca_eval.benchmarks.dpg import rules as dpg
from reca_eval.benchmarks.dpg.items import load_dpg_items, per_sample_path, questions_frame
from reca_eval.core.spec import Benchmark, BenchmarkSpec, ScoreOutput, from_spec, official_items


def _score_dpg(items: list[dict], image_dir: Path, options: dict[str, Any]) -> ScoreOutput:
    from reca_eval.scorers.vqa import make_vqa

    questions = questions_frame(items)
    per_prompt = int(options.get("images_per_prompt", 4))
    answer, describe = make_vqa(options, calls=len(questions) * per_prompt)
    output = layouts_dpg.score_dpg_folder(
        questions,
        image_dir,
        answer,
        mode=options.get("mode") or "official",
        images_per_prompt=per_prompt,
        progress=options.get("progress", True),
    )
    output.scorer = {**output.scorer, **describe()}
    return output


def build(spec: BenchmarkSpec) -> Benchmark:
    return from_spec(
        spec,
        default_items=lambda: official_items(spec),
        load_items=load_dpg_items,
        score=_score_dpg,
        aggregate=dpg.aggregate,
        prompt_of=lambda item: item["prompt"],
        sample_path=per_sample_path,
    )
