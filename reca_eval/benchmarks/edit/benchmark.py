"""The official editing benchmarks: ImgEdit-Bench (single-turn, 737 edits, nine types) and GEdit-Bench
(606 edits x English/Chinese instructions, eleven categories), scored by an LLM judge.

Fetched layout (``reca-eval fetch imgedit`` / ``fetch gedit``) under the data folder:

- ``imgedit/basic_edit.json`` ({key: {id, prompt, edit_type}}), ``imgedit/prompts.json`` (the rubrics),
  ``imgedit/Benchmark/singleturn/<id>`` (source images, from the dataset's Benchmark.tar);
- ``gedit/items.jsonl`` (one row per edit: item_id, key, task_type, instruction_language,
  instruction, intersection_exist, source), ``gedit/source/<item_id>.png`` (the image the judge sees
  as the original), ``gedit/source_raw/<item_id>.png`` (the image a model edits), ``gedit/vie_prompts.py``.

Edited images are ``<item_id>_<k>.png`` (``layouts_edit``). Judge options (``options`` of
``score_images``; plain values, recorded in the run record): ``judge`` = ``"openai"`` (default;
``judge_model``, ``judge_base_url``, ``allow_alias``, ``max_rps``, ``judge_concurrency`` requests at
once, ``judge_azure_deployment`` / ``judge_api_version`` for Azure OpenAI) or ``"local"`` (``judge_model_path``,
``device``, ``min_pixels``, ``max_pixels``); ``judge_cache`` (folder; default
``<data>/judge-cache``, ``""`` turns it off); ``rubrics`` (override the fetched rubric file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reca_eval.benchmarks.edit import layout as layouts_edit
from reca_eval.benchmarks.edit import rules as edit
from reca_eval.core.images import load_rgb, png_bytes
from reca_eval.core.paths import data_dir
from reca_eval.core.records import atomic_write_bytes, atomic_write_text
from reca_eval.core.spec import Benchmark, BenchmarkSpec, ScoreOutput, from_spec
from reca_eval.judges.backend import Judge, move_judge_skips
from reca_eval.judges.cache import ResponseCache
from reca_eval.judges.rubrics import IMGEDIT_TYPES, load_imgedit_rubrics, load_viescore_prompts

GEDIT_CATEGORIES = (
    "background_change",
    "color_alter",
    "material_alter",
    "motion_change",
    "ps_human",
    "style_change",
    "subject-add",
    "subject-remove",
    "subject-replace",
    "text_change",
    "tone_transfer",
)
GEDIT_LANGUAGES = ("en", "cn")
IMGEDIT_SOURCE_DIR = Path("Benchmark") / "singleturn"
IMGEDIT_PIXELS = (1016064, 1354752)  # ImgEdit-Judge's training min/max pixels


def _missing(name: str, path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"{name}: {path} not found. Run `reca-eval fetch {name}` (or place the official files under "
        f"{path.parent}, or set $RECA_EVAL_DATA), or pass --items PATH."
    )


# ---------------------------------------------------------------------------------------------- items


def load_imgedit_items(path: Path) -> list[dict[str, Any]]:
    """ImgEdit's ``basic_edit.json``; source images are looked up under ``<its folder>/Benchmark/singleturn``."""
    path = Path(path)
    if not path.exists():
        raise _missing("imgedit", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of key -> {{id, prompt, edit_type}}")
    root = path.parent / IMGEDIT_SOURCE_DIR
    items = []
    for key, entry in data.items():
        missing = [k for k in ("id", "prompt", "edit_type") if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ValueError(f"{path}: item {key!r} lacks {missing}")
        if entry["edit_type"] not in IMGEDIT_TYPES:
            raise ValueError(f"{path}: item {key!r} has unknown edit_type {entry['edit_type']!r}")
        items.append(
            {
                "item_id": str(key),
                "category": entry["edit_type"],
                "instruction": entry["prompt"],
                "source_id": entry["id"],
                "source_path": str(root / entry["id"]),
                "rubrics_path": str(path.parent / "prompts.json"),
            }
        )
    return items


def load_gedit_items(path: Path, language: str | None = None) -> list[dict[str, Any]]:
    """Our ``gedit/items.jsonl`` (written by :func:`convert_gedit_snapshot`); ``language`` filters en/cn."""
    path = Path(path)
    if not path.exists():
        raise _missing("gedit", path)
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        missing = [
            k
            for k in ("item_id", "task_type", "instruction_language", "instruction", "source")
            if k not in row
        ]
        if missing:
            raise ValueError(f"{path}:{number}: lacks {missing}")
        if row["instruction_language"] not in GEDIT_LANGUAGES:
            raise ValueError(
                f"{path}:{number}: instruction_language {row['instruction_language']!r} not en/cn"
            )
        if language is not None and row["instruction_language"] != language:
            continue
        raw = row.get("source_raw") or row["source"]
        items.append(
            {
                **row,
                "category": row["task_type"],
                "language": row["instruction_language"],
                "source_path": str(path.parent / row["source"]),
                "source_raw_path": str(path.parent / raw),
                "rubrics_path": str(path.parent / "vie_prompts.py"),
            }
        )
    return items


def _image_from_cell(cell: Any):
    """A `datasets` Image cell as stored in arrow/parquet: {"bytes": ..., "path": ...}."""
    import io

    from PIL import Image

    if isinstance(cell, dict) and cell.get("bytes"):
        return Image.open(io.BytesIO(cell["bytes"]))
    raise ValueError(f"image cell without bytes: {str(cell)[:80]}")


def _read_tables(snapshot: Path):
    """Every row of the snapshot's parquet or arrow files (pyarrow reads both)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("converting GEdit-Bench needs pyarrow (pip install pyarrow)") from exc
    files = sorted(snapshot.rglob("*.parquet")) or sorted(snapshot.rglob("*.arrow"))
    if not files:
        raise FileNotFoundError(f"{snapshot}: no .parquet or .arrow files in the GEdit-Bench snapshot")
    for file in files:
        if file.suffix == ".parquet":
            table = pq.read_table(file)
        else:
            with pa.memory_map(str(file)) as source:
                try:
                    table = pa.ipc.open_stream(source).read_all()
                except pa.ArrowInvalid:
                    table = pa.ipc.open_file(source).read_all()
        yield from table.to_pylist()


def convert_gedit_snapshot(snapshot: Path, out_dir: Path) -> int:
    """Write ``items.jsonl`` and source images from a GEdit-Bench dataset snapshot; returns the item count."""
    out_dir = Path(out_dir)
    rows = []
    for n, record in enumerate(_read_tables(Path(snapshot))):
        missing = [
            k
            for k in ("key", "task_type", "instruction", "instruction_language", "input_image")
            if k not in record
        ]
        if missing:
            raise ValueError(f"{snapshot}: row {n} lacks {missing}")
        item_id = f"{record['instruction_language']}-{record['key']}"
        source = f"source/{item_id}.png"
        atomic_write_bytes(
            out_dir / source,
            png_bytes(_image_from_cell(record["input_image"]).convert("RGB")),
            durable=False,
        )
        row = {
            "item_id": item_id,
            "key": str(record["key"]),
            "task_type": record["task_type"],
            "instruction_language": record["instruction_language"],
            "instruction": record["instruction"],
            "intersection_exist": bool(record.get("Intersection_exist", False)),
            "source": source,
        }
        if record.get("input_image_raw"):
            row["source_raw"] = f"source_raw/{item_id}.png"
            raw = _image_from_cell(record["input_image_raw"]).convert("RGB")
            atomic_write_bytes(out_dir / row["source_raw"], png_bytes(raw), durable=False)
        rows.append(row)
    atomic_write_text(
        out_dir / "items.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )
    return len(rows)


# ---------------------------------------------------------------------------------------------- judges


def make_judge(
    options: dict[str, Any], *, local_pixels: tuple[int, int] | None = None, calls: int = 0
) -> Judge:
    """The judge named by ``options`` behind the response cache (``calls``: how many judge calls the
    run makes, for the CPU estimate of a local judge)."""
    kind = options.get("judge", "openai")
    if kind == "openai":
        from reca_eval.judges.openai_client import openai_backend_from_env

        backend = openai_backend_from_env(
            options.get("judge_model"),
            options.get("judge_base_url"),
            allow_alias=bool(options.get("allow_alias", False)),
            max_requests_per_s=float(options.get("max_rps", 2.0)),
            retries=int(options.get("judge_retries", 6)),
            backoff=float(options.get("judge_backoff", 1.0)),
            concurrency=int(options.get("judge_concurrency", 8)),
            azure_deployment=options.get("judge_azure_deployment") or None,
            api_version=options.get("judge_api_version") or None,
        )
    elif kind == "local":
        from reca_eval.judges.local_vlm import load_local_vlm

        if not options.get("judge_model_path"):
            raise ValueError("judge 'local' needs options['judge_model_path'] (a local model folder)")
        from reca_eval.core.devices import LOCAL_VLM_CPU_SECONDS_PER_CALL, scoring_device

        pixels = local_pixels or (None, None)
        device = scoring_device(
            options.get("device"),
            what="local judge",
            count=calls,
            cpu_seconds_each=LOCAL_VLM_CPU_SECONDS_PER_CALL,
            unit="judge call",
        )
        backend = load_local_vlm(
            Path(options["judge_model_path"]),
            device=device,
            min_pixels=options.get("min_pixels", pixels[0]),
            max_pixels=options.get("max_pixels", pixels[1]),
        )
    else:
        raise ValueError(f"unknown judge {kind!r}: use 'openai' or 'local'")
    cache_dir = options.get("judge_cache", str(data_dir() / "judge-cache"))
    return Judge(backend, ResponseCache(Path(cache_dir)) if cache_dir else None)


def _finish(output: ScoreOutput, judge: Judge, rubric_path: str, rubric_sha: str) -> ScoreOutput:
    output = move_judge_skips(output)
    output.scorer = {
        **output.scorer,
        **judge.describe(),
        "backend": f"llm-judge:{judge.backend.name}:{judge.backend.snapshot}",
        "rubric_file": rubric_path,
        "rubric_sha256": rubric_sha,
    }
    return output


def _score_imgedit(items: list[dict], image_dir: Path, options: dict[str, Any]) -> ScoreOutput:
    from reca_eval.benchmarks.edit.imgedit_judge import make_imgedit_scorer

    if not items:
        raise ValueError("imgedit: no items")
    rubrics = load_imgedit_rubrics(Path(options.get("rubrics") or items[0]["rubrics_path"]))
    calls = len(items) * int(options.get("images_per_prompt", 1))
    judge = make_judge(options, local_pixels=IMGEDIT_PIXELS, calls=calls)
    try:
        output = layouts_edit.score_edit_folder(
            items,
            image_dir,
            make_imgedit_scorer(judge, rubrics),
            images_per_prompt=int(options.get("images_per_prompt", 1)),
            progress=options.get("progress", True),
            workers=judge.concurrency,
        )
    finally:
        judge.close()
    return _finish(output, judge, rubrics.source, rubrics.sha256)


def _score_gedit(items: list[dict], image_dir: Path, options: dict[str, Any]) -> ScoreOutput:
    from reca_eval.benchmarks.edit.gedit_judge import make_gedit_scorer

    if not items:
        raise ValueError("gedit: no items")
    prompts = load_viescore_prompts(Path(options.get("rubrics") or items[0]["rubrics_path"]))
    # Two judge calls per image: semantic consistency, perceptual quality.
    judge = make_judge(options, calls=2 * len(items) * int(options.get("images_per_prompt", 1)))
    scorer = make_gedit_scorer(judge, prompts, images_first=judge.backend.name == "local-vlm")
    try:
        output = layouts_edit.score_edit_folder(
            items,
            image_dir,
            scorer,
            images_per_prompt=int(options.get("images_per_prompt", 1)),
            progress=options.get("progress", True),
            workers=judge.concurrency,
        )
    finally:
        judge.close()
    return _finish(output, judge, prompts.source, prompts.sha256)


def _source_image(item: dict[str, Any]):
    path = Path(item.get("source_raw_path") or item["source_path"])
    image, reason = load_rgb(path)
    if image is None:
        raise FileNotFoundError(f"source image of item {item['item_id']!r}: {path}: {reason}")
    return image


def _sample_path(items: list[dict], index: int, k: int, out_dir: Path) -> Path:
    return layouts_edit.sample_path(out_dir, items[index]["item_id"], k)


def build_imgedit(spec: BenchmarkSpec) -> Benchmark:
    return from_spec(
        spec,
        default_items=lambda: data_dir() / spec.data_items,
        load_items=load_imgedit_items,
        score=_score_imgedit,
        aggregate=edit.aggregate_imgedit,
        prompt_of=lambda item: item["instruction"],
        sample_path=_sample_path,
        source_image_of=_source_image,
    )


def build_gedit(spec: BenchmarkSpec) -> Benchmark:
    """GEdit-Bench; ``settings.language`` (en | cn) keeps one language's instructions, absent: both."""
    language = spec.settings.get("language")
    return from_spec(
        spec,
        default_items=lambda: data_dir() / spec.data_items,
        load_items=lambda path: load_gedit_items(path, language),
        score=_score_gedit,
        aggregate=edit.aggregate_gedit,
        prompt_of=lambda item: item["instruction"],
        sample_path=_sample_path,
        source_image_of=_source_image,
    )
