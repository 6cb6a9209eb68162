"""The trainer's bad inputs and faults: a NaN learning rate, a truncated weights file, a disk that fills
while a checkpoint is saved. Each a clear error naming the key or file, and nothing lost."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from reca_eval.core.paths import PACKAGE_DIR, RECIPES_DIR  # noqa: E402
from reca_eval.training.recipe import RecipeError, load_recipe  # noqa: E402


@pytest.mark.parametrize(
    "override", ["train.lr=.nan", "train.lr=inf", "train.weight_decay=nan", "data.sources.0.ratio=nan"]
)
def test_non_finite_recipe_numbers_are_refused_naming_the_key(override):
    key = override.split("=")[0]
    try:
        load_recipe(RECIPES_DIR / "sft.yaml", [override])
    except RecipeError as exc:
        assert key in str(exc)
    except (KeyError, ValueError) as exc:  # a key this recipe does not have: named as well
        assert key.split(".")[-1] in str(exc)
    else:
        pytest.fail(f"{override} accepted")


def test_truncated_safetensors_is_refused_naming_the_file(tmp_path):
    from reca_eval.models.loading import load_unified_model

    base = PACKAGE_DIR / "assets" / "shapeworld-base"
    ckpt = tmp_path / "ckpt"
    shutil.copytree(base, ckpt)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    with pytest.raises(ValueError, match="model.safetensors: not a complete safetensors file"):
        load_unified_model(ckpt)


def test_a_disk_full_during_a_checkpoint_keeps_the_previous_one_loadable(tmp_path, monkeypatch):
    from accelerate import Accelerator

    from reca_eval.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(3, 2))
    first = save_checkpoint(accelerator, tmp_path, 1, {"step": 1}, keep_last=2)
    saved = {k: v.clone() for k, v in model.state_dict().items()}

    real_save = accelerator.save_state

    def full_disk(output_dir, **kwargs):
        real_save(output_dir, **kwargs)  # part of it written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(output_dir) / "optimizer.bin"))

    monkeypatch.setattr(accelerator, "save_state", full_disk)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(OSError, match="checkpoint of step 2 not saved") as caught:
        save_checkpoint(accelerator, tmp_path, 2, {"step": 2}, keep_last=2)
    assert caught.value.filename and "step-00000002" in caught.value.filename
    assert latest_checkpoint(tmp_path) == first
    assert not list(tmp_path.glob(".tmp-*"))  # no half-written folder left
    monkeypatch.undo()
    assert load_checkpoint(accelerator, first) == {"step": 1}
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
