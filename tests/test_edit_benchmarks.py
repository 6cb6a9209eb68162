"""ImgEdit and GEdit end to end: a tiny fake dataset in the fetched layout, a loopback chat-completions
judge whose scores depend on the request, and `evaluate.score_images` producing the record."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from reca_eval import registry
from reca_eval.evaluation import score as evaluate
from reca_eval.judges.rubrics import IMGEDIT_TYPES
from tests.chat_server import chat_server, image_count, prompt_text

SNAPSHOT = "judge-2025-04-14"


def _image(seed: int, size=(40, 30)) -> Image.Image:
    return Image.fromarray(
        np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    )


def _options(url: str, tmp_path) -> dict:
    return {
        "judge": "openai",
        "judge_model": SNAPSHOT,
        "judge_base_url": url,
        "max_rps": 0,
        "judge_backoff": 0.01,
        "judge_cache": str(tmp_path / "cache"),
        "progress": False,
    }


def _imgedit_dataset(root):
    """basic_edit.json + prompts.json + Benchmark/singleturn/<id>: two types, unequal counts."""
    edits = {
        "1": {"id": "animal/a.jpg", "prompt": "SCORE 5 add a hat", "edit_type": "add"},
        "2": {"id": "animal/b.jpg", "prompt": "SCORE 3 add a scarf", "edit_type": "add"},
        "3": {"id": "style/c.jpg", "prompt": "SCORE 1 make it ukiyo-e", "edit_type": "style"},
        "4": {"id": "style/d.jpg", "prompt": "GARBAGE make it pop art", "edit_type": "style"},
    }
    (root / "imgedit").mkdir(parents=True)
    (root / "imgedit/basic_edit.json").write_text(json.dumps(edits))
    rubrics = {t: f"Rubric for {t}. editing instruction is : <edit_prompt>." for t in IMGEDIT_TYPES}
    (root / "imgedit/prompts.json").write_text(json.dumps(rubrics))
    for n, entry in enumerate(edits.values()):
        path = root / "imgedit/Benchmark/singleturn" / entry["id"]
        path.parent.mkdir(parents=True, exist_ok=True)
        _image(n).save(path)
    return root / "imgedit/basic_edit.json"


def _imgedit_reply(payload):
    text = prompt_text(payload)
    assert image_count(payload) == 2  # source and edited
    if "GARBAGE" in text:
        return "I am unable to rate these."
    s = int(re.search(r"SCORE (\d)", text).group(1))
    return f"Brief reasoning: ok.\nPrompt Compliance: {s}\nVisual Naturalness: {s}\nPhysical & Detail Integrity: {s}"


def test_imgedit_end_to_end(tmp_path):
    items = _imgedit_dataset(tmp_path / "data")
    images = tmp_path / "edited"
    images.mkdir()
    for key in ("1", "2", "3", "4"):
        _image(10 + int(key)).save(images / f"{key}_0.png")
    with chat_server(_imgedit_reply) as (server, url):
        outcome = evaluate.score_images(
            "imgedit",
            images,
            items_path=items,
            options=_options(url, tmp_path),
            results_dir=tmp_path / "results",
        )
        first_requests = len(server.requests)
        again = evaluate.score_images(
            "imgedit",
            images,
            items_path=items,
            options=_options(url, tmp_path),
            results_dir=tmp_path / "results",
        )
    record = outcome.record
    assert record.scores["add"] == pytest.approx(4.0)
    assert record.scores["style"] == pytest.approx(1.0)
    assert record.scores["overall_micro"] == pytest.approx((5 + 3 + 1) / 3)
    assert record.scores["overall_macro"] == pytest.approx(2.5)
    assert record.scores["overall"] == record.scores["overall_macro"]
    # The garbage reply is a counted skip with its reason, not a score of 0.
    assert record.images_scored == 3 and record.images_skipped == 1
    assert "unparseable judge reply" in record.skips[0].reason and record.skips[0].path.endswith("4_0.png")
    assert record.scorer["judge_model"] == SNAPSHOT
    assert record.scorer["judge_models_reported"] == ["judge-model-2025-01-01"]
    assert record.scorer["judge_unparseable"] == 1
    assert len(record.scorer["rubric_sha256"]) == 64
    # Re-run: every reply from the cache, the server sees nothing new, same scores.
    assert first_requests == 4 and len(server.requests) == 4
    assert again.record.scores == record.scores and again.record.scorer["judge_cache_hits"] == 4


VIE_PROMPTS = '''
_context_no_delimit = """You are a professional digital artist."""
_prompts_0shot_two_image_edit_rule = """RULES: two images."""
_prompts_0shot_tie_rule_SC = """SC rule. Editing instruction: <instruction>
"""
_prompts_0shot_rule_PQ = """RULES: PQ naturalness and artifacts."""
'''


def _gedit_dataset(root):
    rows = []
    plan = [
        ("en", "color_alter", "SC 8 PQ 2"),
        ("en", "color_alter", "SC 4 PQ 9"),
        ("en", "subject-add", "SC 9 PQ 9"),
        ("cn", "color_alter", "SC 1 PQ 4"),
        ("cn", "subject-add", "SC 6 PQ 6"),
    ]
    (root / "gedit/source").mkdir(parents=True)
    for n, (language, task, instruction) in enumerate(plan):
        item_id = f"{language}-k{n}"
        _image(n, size=(48, 36)).save(root / "gedit/source" / f"{item_id}.png")
        rows.append(
            {
                "item_id": item_id,
                "key": f"k{n}",
                "task_type": task,
                "instruction_language": language,
                "instruction": instruction,
                "intersection_exist": True,
                "source": f"source/{item_id}.png",
            }
        )
    (root / "gedit/items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "gedit/vie_prompts.py").write_text(VIE_PROMPTS)
    return root / "gedit/items.jsonl", rows


def _gedit_reply(payload):
    text = prompt_text(payload)
    if "Editing instruction:" in text:
        assert image_count(payload) == 2
        sc = int(re.search(r"SC (\d+)", text).group(1))
        return json.dumps({"score": [sc, 10], "reasoning": "sc"})
    assert image_count(payload) == 1 and "PQ naturalness" in text
    return "no idea"  # PQ depends on the image only; answered by the item below via a side table


def test_gedit_end_to_end_with_languages(tmp_path):
    items, rows = _gedit_dataset(tmp_path / "data")
    images = tmp_path / "edited"
    images.mkdir()
    pq_by_image = {}
    for n, row in enumerate(rows):
        edited = _image(100 + n, size=(24, 18))  # another size: the judge sees it resized to the source's
        edited.save(images / f"{row['item_id']}_0.png")
        pq_by_image[n] = int(re.search(r"PQ (\d+)", row["instruction"]).group(1))
    # PQ requests carry only the edited image; map it back by the image bytes' hash.
    import base64
    import hashlib
    import io

    def image_key(b64: str) -> str:
        return hashlib.sha256(np.asarray(Image.open(io.BytesIO(base64.b64decode(b64)))).tobytes()).hexdigest()

    by_hash = {}
    for n, row in enumerate(rows):
        source = Image.open(tmp_path / "data/gedit" / row["source"])
        resized = Image.open(images / f"{row['item_id']}_0.png").convert("RGB").resize(source.size)
        by_hash[hashlib.sha256(np.asarray(resized).tobytes()).hexdigest()] = pq_by_image[n]

    def reply(payload):
        text = prompt_text(payload)
        if "Editing instruction:" in text:
            return _gedit_reply(payload)
        url = [p for p in payload["messages"][0]["content"] if p["type"] == "image_url"][0]["image_url"][
            "url"
        ]
        pq = by_hash[image_key(url.split(",", 1)[1])]
        return f'||V^=^V||\n{{"score": [{pq}, {pq + 1}], "reasoning": "pq"}}\n||V^=^V||'

    with chat_server(reply) as (server, url):
        outcome = evaluate.score_images(
            "gedit",
            images,
            items_path=items,
            options=_options(url, tmp_path),
            results_dir=tmp_path / "results",
        )
        en_only = evaluate.score_images(
            "gedit-en",
            images,
            items_path=items,
            options=_options(url, tmp_path),
            results_dir=tmp_path / "results",
        )
    scores = outcome.record.scores
    o = lambda sc, pq: math.sqrt(sc * pq)  # noqa: E731
    # English: color_alter mean of O(8,2), O(4,9); subject-add O(9,9); overall = mean over categories.
    en_color = (o(8, 2) + o(4, 9)) / 2
    assert scores["en/color_alter"] == pytest.approx(en_color)
    assert scores["en/overall"] == pytest.approx((en_color + 9.0) / 2)
    assert scores["en/SC"] == pytest.approx(((8 + 4) / 2 + 9) / 2)
    assert scores["en/PQ"] == pytest.approx(((2 + 9) / 2 + 9) / 2)
    assert scores["cn/overall"] == pytest.approx((o(1, 4) + 6.0) / 2)
    assert {"SC", "PQ", "overall"} <= set(scores)
    assert outcome.record.images_scored == 5 and outcome.record.images_skipped == 0
    # gedit-en scores the English items only (the Chinese files are unexpected there, counted as skips).
    assert en_only.record.scores["overall"] == pytest.approx(scores["en/overall"])
    assert en_only.record.images_scored == 3
    assert outcome.record.scorer["judge_backend"] == "openai-chat"
    assert len(server.requests) == 10  # gedit-en re-used the cache for every English request


def test_missing_fetched_files_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RECA_EVAL_DATA", str(tmp_path / "empty"))
    bench = registry.get("imgedit")
    with pytest.raises(FileNotFoundError, match="reca-eval fetch imgedit"):
        bench.load_items(bench.default_items())


def test_alias_judge_is_refused_before_scoring(tmp_path):
    items = _imgedit_dataset(tmp_path / "data")
    images = tmp_path / "edited"
    images.mkdir()
    options = {**_options("http://127.0.0.1:9/v1", tmp_path), "judge_model": "gpt-4o"}
    from reca_eval.judges.backend import JudgeError

    with pytest.raises(JudgeError, match="floating alias"):
        evaluate.score_images(
            "imgedit", images, items_path=items, options=options, results_dir=tmp_path / "r"
        )


def test_gedit_snapshot_conversion(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import io

    import pyarrow.parquet as pq

    def cell(seed):
        buffer = io.BytesIO()
        _image(seed).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    table = pa.Table.from_pylist(
        [
            {
                "task_type": "color_alter",
                "key": "abc",
                "instruction": "make it red",
                "instruction_language": "en",
                "input_image": cell(1),
                "input_image_raw": cell(2),
                "Intersection_exist": True,
            },
            {
                "task_type": "color_alter",
                "key": "abc",
                "instruction": "变红",
                "instruction_language": "cn",
                "input_image": cell(1),
                "input_image_raw": cell(2),
                "Intersection_exist": False,
            },
        ]
    )
    (tmp_path / "gedit/hf/data").mkdir(parents=True)
    pq.write_table(table, tmp_path / "gedit/hf/data/train-00000-of-00001.parquet")
    from reca_eval.benchmarks.edit.benchmark import convert_gedit_snapshot, load_gedit_items

    assert convert_gedit_snapshot(tmp_path / "gedit/hf", tmp_path / "gedit") == 2
    items = load_gedit_items(tmp_path / "gedit/items.jsonl")
    assert [i["item_id"] for i in items] == ["en-abc", "cn-abc"]
    assert Image.open(items[0]["source_raw_path"]).size == (40, 30)
