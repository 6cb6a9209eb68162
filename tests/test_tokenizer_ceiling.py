"""The tokenizer ceiling: exact references through a model's generation tokenizer, then scored."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("transformers")

from reca_eval.cli import app  # noqa: E402
from reca_eval.diagnostics.tokenizer_ceiling import round_trip_folder, tokenizer_ceiling  # noqa: E402
from reca_eval.experiments.runner import subset_items  # noqa: E402
from reca_eval.models.janus.shapeworld import shipped_base_path  # noqa: E402
from reca_eval.models.loading import load_unified_model  # noqa: E402


class IdentityTokenizer:
    """A 'model' whose tokenizer is lossless: the ceiling must be exactly the references' score."""

    def preprocess(self, images):
        return torch.stack([torch.from_numpy(np.array(im.convert("RGB"))) for im in images])

    def generation_targets(self, pixels):
        return pixels

    def decode_images(self, targets):
        return [Image.fromarray(t.numpy()) for t in targets]


class DarkeningTokenizer(IdentityTokenizer):
    """Loses the image: every pixel comes back black."""

    def generation_targets(self, pixels):
        return torch.zeros_like(pixels)


@pytest.mark.parametrize("name", ["shapes-geneval", "shapes-dpg", "shapes-edit"])
def test_lossless_tokenizer_reaches_the_reference_score_and_a_lossy_one_does_not(tmp_path, name):
    items = subset_items(name, 6, tmp_path)
    full = {"shapes-geneval": 1.0, "shapes-dpg": 100.0, "shapes-edit": 10.0}[name]
    exact = tokenizer_ceiling(
        IdentityTokenizer(), name, label="identity", results_dir=tmp_path, items_path=items
    )
    assert exact.record.scores["overall"] == pytest.approx(full)
    assert exact.record.label == "identity" and exact.record.images_skipped == 0
    dark = tokenizer_ceiling(DarkeningTokenizer(), name, label="dark", results_dir=tmp_path, items_path=items)
    assert dark.record.scores["overall"] < 0.5 * full


def test_round_trip_keeps_the_layout_and_applies_the_model(tmp_path):
    from reca_eval.evaluation.references import write_reference_folder

    items = subset_items("shapes-geneval", 3, tmp_path)
    src, dst = tmp_path / "refs", tmp_path / "trip"
    write_reference_folder("shapes-geneval", src, items_path=items)
    model = load_unified_model(shipped_base_path())
    count = round_trip_folder(model, src, dst, batch_size=2)
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    assert sorted(p.relative_to(dst) for p in dst.rglob("*") if p.is_file()) == files
    assert count == sum(p.suffix == ".png" for p in files) > 0
    for rel in files:  # metadata copied byte for byte
        if rel.suffix != ".png":
            assert (dst / rel).read_bytes() == (src / rel).read_bytes()
    first = next(p for p in files if p.suffix == ".png")
    with Image.open(src / first) as im:
        want = model.decode_images(model.generation_targets(model.preprocess([im.convert("RGB")])))[0]
    with Image.open(dst / first) as got:
        assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(want))


def test_cli_ceiling_names_a_missing_checkpoint(tmp_path):
    result = CliRunner().invoke(app, ["diagnose", "ceiling", "--ckpt", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "nope" in result.output
