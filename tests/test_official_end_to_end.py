"""GenEval and DPG-Bench end to end: items -> images in the official layout -> real scorer code with tiny
random models (or a loopback chat server) -> a complete result record, through the library and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from reca_eval.benchmarks.geneval.rules import TAGS
from reca_eval.cli import app
from reca_eval.core.records import read_run, sha256_file
from reca_eval.evaluation.score import score_images
from reca_eval.registry import get
from tests.chat_server import chat_server, image_count, prompt_text

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
GENEVAL_METADATA = BENCHMARKS / "geneval" / "evaluation_metadata.jsonl"
runner = CliRunner(env={"COLUMNS": "220"})


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny models here run 3-5x faster on one thread than on two busy cores."""
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_image(seed: int, size: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _run_cli(args: list[str]) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _options_args(options: dict[str, object]) -> list[str]:
    return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]


# ---------------------------------------------------------------------------------------------- geneval

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
IMAGE_SIZE = 64
# The biased tiny detector gives every class but these ~0 probability and confident masks, so their
# detections pass GenEval's 0.3 threshold: the bench item passes, and the colour rule (CLIP) runs on
# the fire hydrant of the "colors" item.
FAVOURED_CLASSES = ("bench", "fire hydrant")


@pytest.fixture(scope="module")
def geneval_setup(tmp_path_factory):
    """Six real GenEval items (the first of each tag), tiny weight files, random images in the layout."""
    if not GENEVAL_METADATA.exists():
        pytest.skip(f"official GenEval metadata not found at {GENEVAL_METADATA}")
    torch = pytest.importorskip("torch")
    pytest.importorskip("mmdet", reason="needs the geneval extra (mmdet 3.3 + mmcv-lite)")
    open_clip = pytest.importorskip("open_clip", reason="needs the geneval extra (open-clip-torch)")
    from reca_eval.scorers import mask2former as m2f

    root = tmp_path_factory.mktemp("geneval")
    first_of_tag: dict[str, str] = {}
    for line in GENEVAL_METADATA.read_text().splitlines():
        if line.strip():
            first_of_tag.setdefault(json.loads(line)["tag"], line)
    assert set(first_of_tag) == set(TAGS)
    items_path = root / "metadata.jsonl"
    items_path.write_text("".join(first_of_tag[tag] + "\n" for tag in TAGS))
    assert json.loads(first_of_tag["single_object"])["include"][0]["class"] == FAVOURED_CLASSES[0]
    assert json.loads(first_of_tag["colors"])["include"][0]["class"] == FAVOURED_CLASSES[1]

    torch.manual_seed(0)
    detector = m2f.build_mask2former(tiny=True)
    with torch.no_grad():
        for name in FAVOURED_CLASSES:
            detector.panoptic_head.cls_embed.bias[m2f.COCO_CLASSES.index(name)] += 10.0
        detector.panoptic_head.mask_embed[-1].weight *= 50.0  # mask score ~1 where the mask is on
        detector.panoptic_head.mask_embed[-1].bias *= 50.0
    detector_weights = root / "tiny_mask2former.pth"
    torch.save({"state_dict": detector.state_dict()}, detector_weights)

    clip_config = root / "reca-e2e-tiny-clip.json"
    clip_config.write_text(json.dumps(TINY_CLIP))
    clip_weights = root / "tiny_clip.bin"
    torch.save(open_clip.CLIP(**TINY_CLIP).state_dict(), clip_weights)

    bench = get("geneval")
    items = bench.load_items(items_path)
    image_dir = root / "images"
    bench.write_images(items, {i: [_random_image(i, IMAGE_SIZE)] for i in range(len(items))}, image_dir)
    options = {
        "detector_arch": "tiny",
        "detector_weights": str(detector_weights),
        "detector_test_scale": f"{IMAGE_SIZE},{IMAGE_SIZE}",  # no upscaling to 800 px: seconds, not minutes
        "clip_model": str(clip_config),
        "clip_weights": str(clip_weights),
        "images_per_prompt": 1,
        "progress": False,
    }
    return {"items": items_path, "images": image_dir, "options": options, "root": root}


def _check_geneval_record(record: dict, setup: dict) -> None:
    assert set(record["scores"]) == {*TAGS, "overall"}
    assert all(0.0 <= v <= 1.0 for v in record["scores"].values())
    assert record["images_scored"] == len(TAGS) and record["images_skipped"] == 0
    scorer = record["scorer"]
    assert "mask2former-tiny" in scorer["backend"] and "NOT the official detector" in scorer["backend"]
    assert "NOT the official colour classifier" in scorer["backend"]
    assert scorer["official_architecture"] is False
    detector_weights = Path(setup["options"]["detector_weights"])
    assert scorer["detector"] == {
        "arch": "tiny",
        "test_scale": [IMAGE_SIZE, IMAGE_SIZE],
        "file": detector_weights.name,
        "bytes": detector_weights.stat().st_size,
        "sha256": sha256_file(detector_weights),
    }
    assert scorer["colour_classifier"]["sha256"] == sha256_file(Path(setup["options"]["clip_weights"]))
    assert scorer["protocol"] == "geneval" and scorer["threshold"] == 0.3


def test_geneval_end_to_end_library_and_cli_agree(geneval_setup, tmp_path):
    outcome = score_images(
        "geneval",
        geneval_setup["images"],
        items_path=geneval_setup["items"],
        options=geneval_setup["options"],
        results_dir=tmp_path / "lib",
    )
    record = outcome.record.to_json()
    _check_geneval_record(record, geneval_setup)
    stored, rows = read_run(outcome.run_dir)
    assert stored.to_json() == json.loads(json.dumps(record))
    by_tag = rows.set_index("category")
    # The biased detector sees benches and fire hydrants only: the bench item passes, the sports ball
    # is missing, and the hydrant was found and its colour judged (right or wrong: CLIP is random).
    assert by_tag.loc["single_object", "score"] == 1.0 and by_tag.loc["single_object", "reason"] == ""
    assert by_tag.loc["two_object", "reason"] == "expected sports ball>=1, found 0"
    colour_reason = str(by_tag.loc["colors", "reason"])
    assert colour_reason == "" or colour_reason.startswith(
        "expected blue fire hydrant>=1, found 0 blue; and 1 "
    )
    assert record["scores"]["single_object"] == 1.0
    assert record["scores"]["overall"] == pytest.approx(np.mean([record["scores"][t] for t in TAGS]))

    cli = _run_cli(
        [
            "run",
            "geneval",
            "--images",
            str(geneval_setup["images"]),
            "--items",
            str(geneval_setup["items"]),
            "--results",
            str(tmp_path / "cli"),
            *_options_args(geneval_setup["options"]),
        ]
    )
    _check_geneval_record(cli, geneval_setup)
    assert cli["scores"] == record["scores"]
    _, cli_rows = read_run(tmp_path / "cli" / "runs" / cli["run_id"])
    pd.testing.assert_frame_equal(cli_rows, rows)


def test_geneval_detector_batches_score_as_the_one_image_loop(geneval_setup, tmp_path):
    """``-o detector_batch=N`` detects N images per forward pass: the same rows as GenEval's one-image
    loop (the tiny detector's images share one size), and the record says the batch."""
    runs = {
        batch: score_images(
            "geneval",
            geneval_setup["images"],
            items_path=geneval_setup["items"],
            options={**geneval_setup["options"], "detector_batch": batch},
            results_dir=tmp_path / str(batch),
        )
        for batch in (1, 4)
    }
    assert [runs[b].record.scorer["detector_batch"] for b in (1, 4)] == [1, 4]
    assert len(runs[4].rows) % 4 != 0 and len(runs[4].rows) > 4  # a full batch, then a part of one
    pd.testing.assert_frame_equal(runs[4].rows, runs[1].rows)
    assert runs[4].record.scores == runs[1].record.scores


def test_geneval_bad_backend_options_are_clear_errors(geneval_setup, tmp_path):
    for bad, message in (
        ({"detector_arch": "swin-xl"}, "detector_arch must be one of"),
        ({"detector_test_scale": "800"}, "detector_test_scale must be"),
        ({"clip_model": "No-Such-CLIP"}, "unknown open_clip model 'No-Such-CLIP'"),
        ({"detector_weights": str(tmp_path / "absent.pth")}, "absent.pth"),
        ({"detector_batch": "0"}, r"detector_batch takes int in \[1, 256\]; default 1; got '0'"),
        ({"detector_batch": "2.5"}, r"detector_batch takes int in \[1, 256\]; default 1; got '2.5'"),
    ):
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            score_images(
                "geneval",
                geneval_setup["images"],
                items_path=geneval_setup["items"],
                options={**geneval_setup["options"], **bad},
                results_dir=tmp_path,
            )


# -------------------------------------------------------------------------------------------------- dpg

DPG_HEADER = (
    "item_id,text,keywords,proposition_id,dependency,category_broad,category_detailed,tuple,"
    "question_natural_language"
)
# The loopback VQA says yes exactly when a question mentions the planted word "cat".
# a1, in file order: 4 (cat on table: yes, but parent 2 is no -> gated 0), 1 (cat: yes),
#     2 (table: no), 3 (black cat: yes, parent 1 yes -> 1). Fixed: mean(0,1,0,1) = 0.5.
#     Official mode drops the first CSV row (4): mean(1,0,1) = 2/3.
# b2: 1 (dog: no), 2 (dog chasing a cat: yes, parent 1 no -> gated 0). Image score 0 in both modes.
DPG_ROWS = (
    'a1,a black cat on a table,cat,4,"1,2",relation,spatial,"relation - spatial (cat, table, on)",Is the cat on the table?',
    "a1,a black cat on a table,cat,1,0,entity,whole,entity - whole (cat),Is there a cat?",
    "a1,a black cat on a table,table,2,0,entity,whole,entity - whole (table),Is there a table?",
    'a1,a black cat on a table,black,3,1,attribute,color,"attribute - color (cat, black)",Is the cat black?',
    "b2,a dog chasing a cat,dog,1,0,entity,whole,entity - whole (dog),Is there a dog?",
    'b2,a dog chasing a cat,chasing,2,1,relation,action,"relation - action (dog, cat, chasing)",Is the dog chasing a cat?',
)
EXPECTED = {
    "fixed": {"overall": 25.0, "entity": 100 / 3, "attribute": 100.0, "relation": 100.0, "questions": 6},
    "official": {
        "overall": 100 / 3,
        "entity": 100 / 3,
        "attribute": 100.0,
        "relation": 100.0,
        "questions": 5,
    },
}
SNAPSHOT = "gpt-4o-2024-08-06"


@pytest.fixture(scope="module")
def dpg_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpg")
    items_path = root / "dpg_bench.csv"
    items_path.write_text("\n".join([DPG_HEADER, *DPG_ROWS]) + "\n")
    bench = get("dpg")
    items = bench.load_items(items_path)
    image_dir = root / "images"
    bench.write_images(items, {i: [_random_image(10 + i, 32)] for i in range(len(items))}, image_dir)
    return {"items": items_path, "images": image_dir}


def _planted_word_vqa(payload: dict) -> str:
    return "Yes, it is." if "cat" in prompt_text(payload) else "No."


def test_dpg_with_openai_vqa_gives_the_gated_score_through_cli_and_library(dpg_setup, tmp_path):
    with chat_server(_planted_word_vqa) as (server, url):
        options = {
            "vqa": "openai",
            "vqa_model": SNAPSHOT,
            "vqa_base_url": url,
            "vqa_cache": str(tmp_path / "cache"),
            "max_rps": 0,
            "images_per_prompt": 1,
        }
        cli = _run_cli(
            [
                "run",
                "dpg",
                "--images",
                str(dpg_setup["images"]),
                "--items",
                str(dpg_setup["items"]),
                "--results",
                str(tmp_path),
                "--mode",
                "fixed",
                *_options_args(options),
            ]
        )
        official = score_images(
            "dpg",
            dpg_setup["images"],
            items_path=dpg_setup["items"],
            options={**options, "mode": "official", "progress": False},
            results_dir=tmp_path,
        ).record.to_json()
    for record, mode in ((cli, "fixed"), (official, "official")):
        expected = EXPECTED[mode]
        assert record["scores"]["overall"] == pytest.approx(expected["overall"])
        for category in ("entity", "attribute", "relation"):
            assert record["scores"][category] == pytest.approx(expected[category])
        assert record["images_scored"] == 2 and record["images_skipped"] == 0
        assert record["options"]["mode"] == mode and record["scorer"]["mode"] == mode
        assert record["scorer"]["vqa_backend"] == "openai" and record["scorer"]["vqa_model"] == SNAPSHOT
        assert record["scorer"]["backend"] == f"vqa:openai-chat:{SNAPSHOT}"
    # Fixed mode asked all six questions; official mode's five were all in the cache by then.
    assert len(server.requests) == EXPECTED["fixed"]["questions"]
    assert cli["scorer"]["judge_requests"] == 6 and official["scorer"]["judge_cache_hits"] == 5
    sent = server.requests[0]
    assert sent["model"] == SNAPSHOT and image_count(sent) == 1
    assert prompt_text(sent) == "Is the cat on the table? Answer yes or no."
    _, rows = read_run(tmp_path / "runs" / cli["run_id"])
    assert sorted(set(rows["answer"])) == ["no", "yes"]  # "Yes, it is." and "No." reduced to one word


def test_dpg_with_a_tiny_local_vlm_records_every_answer(dpg_setup, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from reca_eval.judges.local_vlm import local_snapshot_id
    from tests.test_judges import _tiny_qwen_vl

    model, processor = _tiny_qwen_vl()
    model_dir = tmp_path / "tiny-vqa"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    outcome = score_images(
        "dpg",
        dpg_setup["images"],
        items_path=dpg_setup["items"],
        options={
            "vqa": "local",
            "vqa_model_path": str(model_dir),
            "device": "cpu",
            "dtype": "float32",
            "max_new_tokens": 3,
            "vqa_cache": "",
            "images_per_prompt": 1,
            "mode": "official",
            "progress": False,
        },
        results_dir=tmp_path,
    )
    record = outcome.record
    assert {"overall", "entity", "attribute", "relation"} <= set(record.scores)
    assert 0.0 <= record.scores["overall"] <= 100.0
    assert record.images_scored == 2 and record.images_skipped == 0
    assert record.options["mode"] == "official"
    assert record.scorer["vqa_backend"] == "local"
    assert record.scorer["vqa_model"] == local_snapshot_id(model_dir)
    assert record.scorer["judge_requests"] == EXPECTED["official"]["questions"]
    rows = outcome.rows
    assert len(rows) == EXPECTED["official"]["questions"]
    assert rows["answer"].map(lambda a: isinstance(a, str) and " " not in a).all()
    assert set(rows["mode"]) == {"official"}


def test_dpg_without_a_vqa_backend_lists_the_choices(dpg_setup, tmp_path):
    with pytest.raises(ValueError, match=r"vqa=local.*vqa=openai"):
        score_images("dpg", dpg_setup["images"], items_path=dpg_setup["items"], results_dir=tmp_path)
    result = runner.invoke(
        app,
        ["run", "dpg", "--images", str(dpg_setup["images"]), "--items", str(dpg_setup["items"]),
         "--results", str(tmp_path), "-o", "vqa=mplug"],
    )  # fmt: skip
    # The declared choices refuse it before scoring (exit 2), naming what the option takes.
    assert result.exit_code == 2 and "'mplug'" in result.output and "local | openai" in result.output


def test_dpg_accepts_a_callable_vqa_in_python(dpg_setup):
    def planted_word(image: Image.Image, questions: list[dict]) -> list[str]:
        return ["yes" if "cat" in q["question_natural_language"] else "no" for q in questions]

    planted_word.name = "planted-word"
    bench = get("dpg")
    output = bench.score(
        bench.load_items(dpg_setup["items"]),
        dpg_setup["images"],
        {"vqa": planted_word, "mode": "fixed", "images_per_prompt": 1, "progress": False},
    )
    assert bench.aggregate(output.rows, None)["overall"] == pytest.approx(EXPECTED["fixed"]["overall"])
    assert output.scorer["backend"] == "planted-word" and output.scorer["mode"] == "fixed"


@pytest.mark.parametrize(
    ("reply", "answer"),
    [("Yes", "yes"), ("  NO.\n", "no"), ("**Yes**, there is.", "yes"), ("", ""), (None, "<refused>")],
)
def test_vqa_replies_reduce_to_their_first_word(reply, answer):
    from reca_eval.scorers.vqa import normalise_answer

    assert normalise_answer(reply) == answer
