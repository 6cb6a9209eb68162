"""shapes-edit's counterfactual pairs: twins on one source that no single image satisfies, a headline that
instruction-blind editors cannot win, and instruction sensitivity per edit type."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from reca_eval import registry
from reca_eval.benchmarks.edit.rules import aggregate_shapes_edit
from reca_eval.benchmarks.shapes.build import TWIN_CHECK_RESOLUTIONS
from reca_eval.evaluation.references import REFERENCE_EDITORS, reference_editor_output
from reca_eval.experiments.runner import subset_items
from reca_eval.scorers.shapes import score_edit
from reca_eval.shapeworld.edits import EDIT_TYPES, reference
from reca_eval.shapeworld.palette import BACKGROUNDS, COLOURS
from reca_eval.shapeworld.render import render_scene
from reca_eval.shapeworld.scene import scene_from_json

BENCH = registry.get("shapes-edit")
ITEMS = BENCH.load_items(BENCH.default_items())


def _score(items, outputs, tmp_path):
    """Write ``outputs[i]`` as item i's edit, score, aggregate."""
    BENCH.write_images(items, {i: [image] for i, image in enumerate(outputs)}, tmp_path)
    scored = BENCH.score(items, tmp_path, {"progress": False})
    assert not scored.skips
    return scored.rows, BENCH.aggregate(scored.rows, None)


def follow(item: dict) -> Image.Image:
    """A hand-made editor that reads the instruction: it does removals, recolourings and background
    changes, and returns the source unchanged for every other instruction."""
    source = scene_from_json(item["source_scene"])
    text = item["instruction"].rstrip(".")
    tone = text.removeprefix("Change the background to ")
    if tone in BACKGROUNDS:
        return render_scene(dataclasses.replace(source, background=tone))
    for index, obj in enumerate(source.objects):
        ref = reference(obj, source)
        objects = list(source.objects)
        if text == f"Remove {ref}":
            del objects[index]
        elif text.startswith(f"Make {ref} ") and text.rsplit(" ", 1)[1] in COLOURS:
            objects[index] = dataclasses.replace(obj, colour=text.rsplit(" ", 1)[1])
        else:
            continue
        return render_scene(dataclasses.replace(source, objects=objects))
    return render_scene(source)


def test_every_source_comes_with_two_instructions_that_no_one_image_satisfies():
    assert BENCH.version == "1.2"
    pairs: dict[str, list[dict]] = {}
    for item in ITEMS:
        pairs.setdefault(item["pair_id"], []).append(item)
    assert len(pairs) == len(ITEMS) // 2 and all(len(p) == 2 for p in pairs.values())
    assert Counter(p[0]["edit_type"] for p in pairs.values()) == {t: 10 for t in EDIT_TYPES}
    for a, b in pairs.values():
        assert (a["twin_id"], b["twin_id"]) == (b["item_id"], a["item_id"])
        assert a["edit_type"] == b["edit_type"] and a["source_scene"] == b["source_scene"]
        assert a["instruction"] != b["instruction"] and a["target_scene"] != b["target_scene"]
        assert a["twin_target_scene"] == b["target_scene"]
        for res in TWIN_CHECK_RESOLUTIONS:
            for own, other in ((a, b), (b, a)):
                image = render_scene(own["target_scene"], res)
                assert score_edit(own["source_scene"], own["target_scene"], image)["success"] == 1
                assert score_edit(own["source_scene"], other["target_scene"], image)["success"] == 0


def test_exact_references_score_the_maximum_and_follow_every_pair(tmp_path):
    _, scores = _score(ITEMS, [render_scene(i["target_scene"]) for i in ITEMS], tmp_path)
    assert scores["overall"] == 10.0 and scores["single/overall"] == 10.0
    assert scores["imgedit_macro"] == 5.0
    assert scores["pairs/followed"] == 1.0 and scores["pairs/both_success"] == 1.0
    assert scores["pairs/same_image"] == 0.0 and scores["pairs/unpaired"] == 0.0
    assert scores["single/success"] == 1.0 and scores["preservation"] == 1.0
    assert all(scores[t] == 10.0 and scores[f"pairs/followed/{t}"] == 1.0 for t in EDIT_TYPES)


@pytest.mark.parametrize("editor", REFERENCE_EDITORS)
def test_instruction_blind_editors_sit_at_the_floor_of_the_headline(editor, tmp_path):
    _, scores = _score(ITEMS, [reference_editor_output(i, editor) for i in ITEMS], tmp_path)
    assert scores["overall"] == 0.0 and scores["SC"] == 0.0 and scores["imgedit_macro"] == 1.0
    assert scores["pairs/followed"] == 0.0 and scores["pairs/same_image"] == 1.0
    assert all(scores[t] == 0.0 for t in EDIT_TYPES)
    # identity copies everything the edits leave alone; blank copies only the background
    assert (editor != "identity" or scores["preservation"] == 1.0) and (
        editor != "blank" or scores["preservation"] < 0.5
    )


def test_drop_one_wins_removals_per_output_but_not_the_headline(tmp_path):
    # The per-output figure is what an instruction-blind editor can win: drop-one passes a removal whenever
    # it drops the named object. The headline asks the twin to drop another one.
    _, scores = _score(ITEMS, [reference_editor_output(i, "drop-one") for i in ITEMS], tmp_path)
    assert scores["single/remove"] > 0 and scores["remove"] == 0.0
    assert scores["pairs/both_success/remove"] == 0.0  # both twins share its one output
    same = reference_editor_output(ITEMS[0], "drop-one", seed=3).tobytes()
    assert reference_editor_output(ITEMS[1], "drop-one", seed=3).tobytes() == same  # twins: one source


class LossyTokenizer:
    """A stand-in generation tokenizer that loses detail: every pixel snapped to a coarse grid of values."""

    def preprocess(self, images):
        return torch.stack([torch.from_numpy(np.array(im.convert("RGB"))) for im in images])

    def generation_targets(self, pixels):
        return (pixels // 96) * 96

    def decode_images(self, targets):
        return [Image.fromarray(t.numpy().astype(np.uint8)) for t in targets]


def test_the_copier_sits_at_the_floor_of_the_headline(tmp_path):
    from reca_eval.diagnostics.copier import score_copier

    items = subset_items("shapes-edit", 36, tmp_path)
    outcome = score_copier(LossyTokenizer(), label="copier", results_dir=tmp_path, items_path=items)
    scores = outcome.record.scores
    assert outcome.record.images_scored == 36 and outcome.record.label == "copier"
    assert scores["overall"] == 0.0 and scores["pairs/same_image"] == 1.0


def test_an_editor_that_follows_instructions_beats_every_reference_editor(tmp_path):
    rows, scores = _score(ITEMS, [follow(i) for i in ITEMS], tmp_path / "follow")
    for edit_type in ("remove", "recolour", "background"):
        assert scores[f"pairs/followed/{edit_type}"] == 1.0 and scores[edit_type] == 10.0
    for edit_type in ("move", "add", "restyle"):  # it returns the source for these
        assert scores[edit_type] == 0.0 and scores[f"pairs/same_image/{edit_type}"] == 1.0
    assert 0 < scores["overall"] < 10
    for editor in REFERENCE_EDITORS:
        blind = BENCH.aggregate(
            _score(ITEMS, [reference_editor_output(i, editor) for i in ITEMS], tmp_path / editor)[0], None
        )
        assert scores["overall"] > blind["overall"] and scores["pairs/followed"] > blind["pairs/followed"]


def test_following_one_twin_only_does_not_count(tmp_path):
    # Item a answered exactly; its twin b given a's answer too: a's output succeeds on its own, but the
    # pair shows no reading of the instruction.
    pair = ITEMS[:2]
    rows, scores = _score(pair, [render_scene(pair[0]["target_scene"])] * 2, tmp_path)
    assert list(rows["success"]) == [1.0, 0.0] and list(rows["followed"]) == [0.0, 0.0]
    assert scores["overall"] == 0.0 and scores["single/overall"] > 0 and scores["pairs/same_image"] == 1.0


def test_an_item_without_its_twin_is_scored_unpaired(tmp_path):
    items_path = tmp_path / "one.jsonl"
    items_path.write_text(BENCH.default_items().read_text().splitlines()[0] + "\n")
    items = BENCH.load_items(items_path)
    assert "twin_target_scene" not in items[0]
    rows, scores = _score(items, [render_scene(items[0]["target_scene"])], tmp_path / "out")
    assert scores["pairs/unpaired"] == 1.0 and scores["overall"] == 0.0 and scores["single/overall"] == 10.0
    assert "pairs/followed" not in scores


def test_item_subsets_keep_whole_pairs(tmp_path):
    path = subset_items("shapes-edit", 10, tmp_path)
    items = BENCH.load_items(path)
    assert len(items) == 10 and all("twin_target_scene" in i for i in items)
    assert len({i["edit_type"] for i in items}) == 5  # evenly spaced pairs, over the types


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a, b: b.update(twin_id="shapes-edit-999"), "name each other"),
        (
            lambda a, b: b.update(
                source_scene={
                    **b["source_scene"],
                    "background": next(t for t in BACKGROUNDS if t != b["source_scene"]["background"]),
                }
            ),
            "same source_scene",
        ),
        (lambda a, b: b.update(target_scene=a["target_scene"]), "different target_scenes"),
    ],
)
def test_broken_twins_are_refused_naming_the_file_and_item(change, message, tmp_path):
    a, b = (json.loads(line) for line in BENCH.default_items().read_text().splitlines()[:2])
    change(a, b)
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(a) + "\n" + json.dumps(b) + "\n")
    with pytest.raises(ValueError, match=message) as err:
        BENCH.load_items(path)
    assert str(path) in str(err.value) and a["item_id"] in str(err.value)


def test_rows_without_pair_columns_aggregate_per_output():
    rows = pd.DataFrame(
        {
            "category": ["remove", "remove"],
            "success": [1.0, 0.0],
            "preservation": [1.0, 1.0],
            "quality": [1.0, 1.0],
        }
    )
    assert BENCH.aggregate(rows, None) == aggregate_shapes_edit(rows, None)


def test_diagnose_copier_scores_a_checkpoints_copier(tmp_path):
    from typer.testing import CliRunner

    from reca_eval.cli import app
    from reca_eval.models.janus.shapeworld import shipped_base_path

    items = subset_items("shapes-edit", 4, tmp_path)
    args = ["diagnose", "copier", "--ckpt", str(shipped_base_path()), "--items", str(items)]
    result = CliRunner().invoke(app, [*args, "--results", str(tmp_path / "results"), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout[result.stdout.index("{") :])
    assert scores["overall"] == 0.0 and scores["pairs/same_image"] == 1.0
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    bad = CliRunner().invoke(
        app, [*args[:4], "--items", str(tmp_path / "bad.jsonl"), "--results", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "bad.jsonl:1" in bad.output
