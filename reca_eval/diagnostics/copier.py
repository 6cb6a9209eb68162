"""The copier: an instruction-blind editor that returns the source image through a model's own
generation tokenizer (``generation_targets`` -> ``decode_images``), whatever the instruction says.

A model that only learned to reconstruct its input scores what this editor scores; what it loses in
the round trip (an object smeared away, an outline filled in) can pass for a removal or a restyle on a
per-output success count. On shapes-edit's headline (counterfactual twins share a source, so they get the
same image) it scores 0 by construction; its ``single/*`` and ImgEdit-style figures show how much a
lossy copy earns per output. Computed for any checkpoint by ``reca-eval diagnose copier --ckpt``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from reca_eval.diagnostics.tokenizer_ceiling import round_trip_folder
from reca_eval.evaluation import score as evaluate

BENCHMARK = "shapes-edit"


def copier_label(name: str) -> str:
    """Row name of the copier through ``name`` (a tokenizer or checkpoint name)."""
    return f"copier through {name}"


def score_copier(
    model,
    *,
    label: str,
    results_dir: Path,
    items_path: Path | None = None,
    model_id: str | None = None,
    options: dict[str, Any] | None = None,
    memo: dict[bytes, bytes] | None = None,
    run_dir: Path | None = None,
) -> evaluate.RunOutcome:
    """Score the copier of ``model`` on shapes-edit (one run record; its images in ``<run>/images``):
    every item's source image (the identity editor's output) after one tokenizer round trip, scored at
    the round trip's resolution. ``memo``: see :func:`round_trip_folder`."""
    from reca_eval.evaluation.references import write_reference_editor_folder

    run_dir = Path(run_dir) if run_dir else evaluate.new_run_dir(Path(results_dir), BENCHMARK, label)
    images = run_dir / "images"
    with tempfile.TemporaryDirectory(prefix="reca-eval-copier-") as tmp:
        write_reference_editor_folder("identity", Path(tmp), items_path=items_path)
        if round_trip_folder(model, Path(tmp), images, memo=memo) == 0:
            raise ValueError(f"{items_path or BENCHMARK}: no edit item to copy")
    with Image.open(next(images.glob("*.png"))) as im:
        resolution = im.size[0]
    return evaluate.score_images(
        BENCHMARK,
        images,
        items_path=items_path,
        label=label,
        model_id=model_id,
        options={"resolution": resolution, "progress": False, **(options or {})},
        results_dir=Path(results_dir),
        run_dir=run_dir,
    )


def checkpoint_copier(
    ckpt: Path, *, label: str = "", results_dir: Path, items_path: Path | None = None
) -> evaluate.RunOutcome:
    """Load a checkpoint folder and score its copier on shapes-edit (labelled ``label`` or
    ``"copier through <folder>"``), then refresh the leaderboard files."""
    from reca_eval.models.loading import load_unified_model
    from reca_eval.results.leaderboard import write_leaderboard

    ckpt = Path(ckpt)
    model = load_unified_model(ckpt)
    outcome = score_copier(
        model,
        label=label or copier_label(ckpt.resolve().name),
        results_dir=Path(results_dir),
        items_path=items_path,
        model_id=str(ckpt.resolve()),
    )
    write_leaderboard(Path(results_dir))
    return outcome
