"""The cross-modal alignment diagnostic: probes, planted signals, the tiny model and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from reca_eval.cli import app  # noqa: E402
from reca_eval.diagnostics.alignment import (  # noqa: E402
    ATTRIBUTES,
    diagnose_alignment,
    diagnose_from_states,
    held_out_scenes,
    scene_labels,
    transfer,
)
from reca_eval.models.janus.adapter import JanusAdapter  # noqa: E402
from reca_eval.models.janus.tiny import build_tiny_janus  # noqa: E402
from reca_eval.shapeworld.palette import BACKGROUNDS, COLOURS, SHAPES  # noqa: E402

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _planted_states(
    scenes, offset_image: int, noise: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One-hot codes of colour, shape and background: text at dims 0.., image at dims ``offset_image``..
    (offset 0 = the same coordinates in both modalities), plus gaussian noise."""
    rng = np.random.default_rng(seed)
    width = len(COLOURS) + len(SHAPES) + len(BACKGROUNDS)
    text = rng.normal(0, noise, (len(scenes), 2 * width))
    image = rng.normal(0, noise, (len(scenes), 2 * width))
    for i, scene in enumerate(scenes):
        obj = scene.objects[0]
        hot = [
            list(COLOURS).index(obj.colour),
            len(COLOURS) + SHAPES.index(obj.shape),
            len(COLOURS) + len(SHAPES) + list(BACKGROUNDS).index(scene.background),
        ]
        for h in hot:
            text[i, h] += 3.0
            image[i, offset_image + h] += 3.0
    return text, image


def test_transfer_is_the_share_of_above_chance_accuracy():
    assert transfer(within=0.9, cross=0.9, chance=0.3) == pytest.approx(1.0)
    assert transfer(within=0.9, cross=0.6, chance=0.3) == pytest.approx(0.5)
    assert transfer(within=0.9, cross=0.1, chance=0.3) == 0.0
    assert transfer(within=0.3, cross=0.3, chance=0.3) == 0.0


def test_labels_only_name_what_an_image_shows():
    scenes = held_out_scenes(40)
    assert scenes == held_out_scenes(40)  # reproducible
    singles = [s for s in scenes if len(s.objects) == 1]
    assert len(singles) >= 20  # every other scene has one object
    for s in scenes:
        labels = scene_labels(s)
        assert labels["count"] == str(len(s.objects)) and labels["background"] == s.background
        assert (labels["colour"] is None) == (len(s.objects) != 1)


def test_planted_private_codes_give_within_above_cross():
    scenes = held_out_scenes(240)
    width = len(COLOURS) + len(SHAPES) + len(BACKGROUNDS)
    text, image = _planted_states(scenes, offset_image=width)  # each modality on its own coordinates
    report = diagnose_from_states(text, image, scenes)
    by_name = {p.attribute: p for p in report.probes}
    for name in ("colour", "shape", "background"):
        p = by_name[name]
        assert p.within_text > 0.9 and p.within_image > 0.9, p
        assert p.cross < p.within - 0.4, p
    assert not report.ready
    assert "no" in report.verdict()


def test_planted_shared_codes_transfer_and_read_ready():
    scenes = held_out_scenes(240)
    text, image = _planted_states(scenes, offset_image=0)
    report = diagnose_from_states(text, image, scenes)
    by_name = {p.attribute: p for p in report.probes}
    for name in ("colour", "shape", "background"):
        assert by_name[name].cross > 0.9, by_name[name]
    # count, size and style carry no planted signal: near chance within and across
    assert by_name["count"].within < 0.6
    s = report.summary()
    assert 0.0 <= s["chance"] < s["cross"] <= 1.0


def test_tiny_model_report_is_well_formed():
    model, processor = build_tiny_janus(seed=2)
    report = diagnose_alignment(JanusAdapter(model, processor), scenes=48)
    assert {p.attribute for p in report.probes} | {n.split(":")[0] for n in report.notes} == set(ATTRIBUTES)
    for p in report.probes:
        for value in (p.chance, p.within_text, p.within_image, p.text_to_image, p.image_to_text):
            assert 0.0 <= value <= 1.0
        assert p.n_train > 0 and p.n_test > 0
    data = report.to_json()
    assert data["scenes"] == 48 and data["verdict"].startswith("ready for RecA?")
    with pytest.raises(ValueError, match="scenes must be"):
        diagnose_alignment(JanusAdapter(model, processor), scenes=10)


def test_diagnostic_refuses_models_without_condition_states():
    with pytest.raises(TypeError, match="condition_hidden_states"):
        diagnose_alignment(object(), scenes=24)  # type: ignore[arg-type]


def test_cli_prints_json_and_a_verdict(tmp_path):
    model, processor = build_tiny_janus(seed=4)
    ckpt = tmp_path / "tiny"
    JanusAdapter(model, processor).save_pretrained(ckpt)
    result = runner.invoke(app, ["diagnose", "alignment", "--ckpt", str(ckpt), "--scenes", "32", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["scenes"] == 32 and isinstance(data["ready"], bool)
    assert {"within", "cross", "chance", "transfer"} <= set(data["summary"])
    assert all(0.0 <= p["cross"] <= 1.0 for p in data["probes"])
    assert "ready for RecA?" in result.stderr

    missing = runner.invoke(app, ["diagnose", "alignment", "--ckpt", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "does not exist" in missing.output
