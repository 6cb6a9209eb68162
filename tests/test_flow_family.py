"""The flow-matching family on ShapeWorld: its arms, a stage trained from a saved flow checkpoint, the
experiment / main-command path with both families, and the shipped flow base."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from rich.console import Console

from reca_eval.experiments.arms import (
    ALL_ARMS,
    BASE,
    RECA,
    RECA_T2I,
    RECA_VQ,
    SFT,
    SFT_HALF,
    SFT_MATCHED,
    SFT_RECA,
    Budget,
    build_arm,
    family_arms,
    qualified_name,
    stage_key,
    step_account,
    t2i_steps_in_mix,
)
from reca_eval.experiments.runner import ExperimentPlan, FamilyPlan, run_experiment, train_arm
from reca_eval.models import family_class
from reca_eval.models.loading import load_unified_model
from reca_eval.results.leaderboard import load_runs
from reca_eval.training.recipe import recipe_from_dict

BUDGET = Budget(sft_steps=30, reca_steps=20, batch_size=8, lr=1e-4)
TINY = Budget(sft_steps=2, reca_steps=2, batch_size=2, warmup_steps=0)
JANUS, FLOW = "janus", "flow"


def objectives(stage) -> list[str]:
    return [s["objective"] for s in stage.recipe["data"]["sources"]]


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # far faster than 2 on a CPU shared with other test processes
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def flow_base(tmp_path_factory) -> Path:
    from reca_eval.models.flow.tiny import build_tiny_flow

    path = tmp_path_factory.mktemp("flow-base") / "tiny-flow"
    build_tiny_flow(seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def janus_base(tmp_path_factory) -> Path:
    from reca_eval.training.builders import tiny_janus

    path = tmp_path_factory.mktemp("janus-base") / "tiny-janus"
    tiny_janus(seed=0).save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------- arms


def test_flow_arms_are_valid_recipes_with_the_vlm_and_vae_frozen_and_no_image_to_text():
    assert RECA_VQ not in family_arms(FLOW) and family_arms(JANUS) == ALL_ARMS
    for name in family_arms(FLOW):
        arm = build_arm(name, BUDGET, seed=0, family=FLOW)
        assert arm.family == FLOW and arm.label == f"flow/{name}"
        for stage in arm.stages:
            recipe = recipe_from_dict(stage.recipe)
            assert recipe.model.freeze == ["vlm", "vae"] == list(family_class(FLOW).frozen_modules)
            assert "i2t" not in objectives(stage)  # FlowAdapter.understanding_loss refuses it
            assert recipe.train.batch_size == BUDGET.batch_size and recipe.train.lr == BUDGET.lr
    with pytest.raises(KeyError, match="RecA-VQ.*flow"):
        build_arm(RECA_VQ, BUDGET, family=FLOW)
    with pytest.raises(KeyError, match="unknown model family 'mar'"):
        build_arm(SFT, BUDGET, family="mar")


def test_flow_reca_is_reconstruction_only_and_keeps_the_mix_shares():
    sft_reca = build_arm(SFT_RECA, BUDGET, seed=0, family=FLOW)
    assert [objectives(s) for s in sft_reca.stages] == [["t2i"], ["recon"]]
    assert sft_reca.steps == build_arm(SFT_MATCHED, BUDGET, family=FLOW).steps == 50
    reca = build_arm(RECA, BUDGET, family=FLOW)
    assert objectives(reca.stages[0]) == ["recon"] and reca.steps == 50
    # RecA+T2I: i2t's share folds into recon, so T2I keeps its share (2 : 1+1); SFT-half matches it exactly
    for seed in (0, 1):
        (mix,) = build_arm(RECA_T2I, BUDGET, seed, family=FLOW).stages
        ratios = [s["ratio"] for s in mix.recipe["data"]["sources"]]
        assert objectives(mix) == ["t2i", "recon"] and ratios == [2.0, 2.0]
        half = build_arm(SFT_HALF, BUDGET, seed, family=FLOW)
        assert (
            half.steps
            == t2i_steps_in_mix(seed, 50, (2.0, 2.0))
            == step_account(build_arm(RECA_T2I, BUDGET, seed, family=FLOW)).t2i_steps
        )


def test_janus_arms_are_unchanged_and_the_families_never_share_a_label():
    for name in ALL_ARMS:
        arm = build_arm(name, BUDGET, seed=0)
        assert arm.family == JANUS and arm.label == name  # Janus records read as before
        assert all(
            s.recipe["model"]["freeze"] == list(family_class(JANUS).frozen_modules) for s in arm.stages
        )
    janus_sft, flow_sft = build_arm(SFT, BUDGET), build_arm(SFT, BUDGET, family=FLOW)
    # the same data streams (paired across families), a different frozen set, so a different stage
    assert janus_sft.stages[0].streams == flow_sft.stages[0].streams
    assert stage_key(janus_sft.stages[0], "b") != stage_key(flow_sft.stages[0], "b")
    labels = {qualified_name(a, f) for f in (JANUS, FLOW) for a in family_arms(f)}
    assert len(labels) == len(family_arms(JANUS)) + len(family_arms(FLOW))
    assert step_account(build_arm(SFT_RECA, BUDGET, family=FLOW)).arm == "flow/SFT+RecA"


# ------------------------------------------------------------------------------------ training


def test_a_flow_stage_trains_from_a_saved_flow_checkpoint_with_the_vlm_frozen(
    flow_base, tmp_path, one_thread
):
    arm = build_arm(SFT_RECA, TINY, seed=0, family=FLOW)
    final, stages = train_arm(arm, flow_base, tmp_path / "train")
    assert [s.name for s in stages] == ["sft", "reca"] and all(len(s.losses) == 2 for s in stages)
    before = load_unified_model(flow_base)
    after = load_unified_model(final)  # the trainer's export loads through the family detector
    assert after.family == FLOW
    for name in ("vlm", "vae"):
        old, new = before.trainable_modules()[name].state_dict(), after.trainable_modules()[name].state_dict()
        assert all(torch.equal(old[k], new[k]) for k in old), f"{name} changed"
    changed = [
        not torch.equal(p, q)
        for p, q in zip(before.transformer.parameters(), after.transformer.parameters(), strict=True)
    ]
    assert any(changed)
    assert not torch.equal(before.queries.weight, after.queries.weight)


# ------------------------------------------------------------------------- experiment + main command


@pytest.fixture(scope="module")
def two_families(janus_base, flow_base, tmp_path_factory, one_thread):
    plan = ExperimentPlan(
        [
            FamilyPlan(janus_base, (BASE, SFT), ("shapes-edit",)),
            FamilyPlan(flow_base, (BASE, SFT, SFT_RECA), ("shapes-edit",), family=FLOW, guidance_scale=2.0),
        ],
        results=tmp_path_factory.mktemp("two-families"),
        budget=TINY,
        items_per_benchmark=2,
        generation_batch_size=8,
        n_boot=20,
    )
    return run_experiment(plan)


def test_both_families_are_scored_with_labels_that_say_the_family(two_families):
    result = two_families
    assert [run.label for run in result.arm_runs] == ["base", "SFT", "flow/base", "flow/SFT", "flow/SFT+RecA"]
    assert [run.family for run in result.arm_runs] == [JANUS, JANUS, FLOW, FLOW, FLOW]
    records = {rec.label: rec for rec, _ in load_runs(result.plan.results)}
    assert set(records) == {run.label for run in result.table_runs()}  # no row collides with another
    for run in result.arm_runs:
        rec = records[run.label]
        assert rec.options["family"] == run.family and rec.images_scored == 2
        assert rec.options["guidance_scale"] == (2.0 if run.family == FLOW else 5.0)
    by_label = {run.label: run for run in result.arm_runs}
    assert by_label["flow/base"].checkpoint == result.plan.families[1].base
    # the flow compare is made within the family
    pairs = [(c.record_a.label, c.record_b.label) for _, c in result.comparisons]
    assert pairs == [("flow/SFT", "flow/SFT+RecA")]  # the Janus side has no SFT+RecA in this plan
    summary = json.loads((result.plan.results / "experiment.json").read_text())
    assert [f["family"] for f in summary["families"]] == [JANUS, FLOW]
    assert {r["label"]: r["family"] for r in summary["arm_runs"]}["flow/SFT+RecA"] == FLOW


def test_the_report_has_the_flow_rows_and_grid(two_families, tmp_path):
    from reca_eval.experiments.report import write_report

    md = write_report(two_families, tmp_path).markdown.read_text()
    for label in ("flow/base", "flow/SFT", "flow/SFT+RecA"):
        assert f"| {label} |" in md
    assert "Family flow:" in md and "shapes-edit: flow/SFT+RecA vs flow/SFT" in md


def test_a_plan_with_an_arm_the_family_lacks_fails_before_training(flow_base, tmp_path):
    plan = ExperimentPlan([FamilyPlan(flow_base, (BASE, RECA_VQ), family=FLOW)], results=tmp_path)
    with pytest.raises(KeyError, match="RecA-VQ"):
        run_experiment(plan)


def test_main_command_runs_the_flow_family_end_to_end_on_two_items(flow_base, tmp_path, one_thread):
    from reca_eval.experiments.main_command import run_main_command

    console = Console(record=True, width=200)
    result, paths = run_main_command(
        console,
        bases={FLOW: flow_base},
        families=(FLOW,),
        results=tmp_path / "demo",
        budget=TINY,
        items_per_benchmark=2,
        generation_batch_size=8,
        threads=1,
        workers=1,  # tests/test_workers.py runs experiments on worker processes
    )
    out = console.export_text()
    assert [run.label for run in result.arm_runs] == [
        "flow/base",
        "flow/SFT",
        "flow/SFT+RecA",
        "flow/SFT-matched",
    ]
    assert all(set(run.scores) == {"shapes-edit"} for run in result.arm_runs)
    assert "flow/SFT+RecA" in out and "flow/SFT" in out and paths.html.exists()
    # the printed compare keeps the categories and headline figures, not every pairs/* figure
    compare = out[out.index("flow/SFT+RecA (B) vs flow/SFT (A)") :]
    assert "│ preservation" in compare and "│ recolour" in compare and "more figures" in compare
    assert "more figures in the report and `reca-eval leaderboard`" in out  # the table, likewise
    # the closing line says where the wall time went, phase by phase
    assert set(result.seconds) >= {"train", "evaluate", "probes", "references", "floors", "total"}
    assert re.search(r"wall time \d+ s \(training \d+ s, generation \+ scoring \d+ s, .*floors", out)
    with pytest.raises(ValueError, match="families"):
        run_main_command(console, families=("mar",))


def test_cli_families_option_rejects_unknown_names():
    from typer.testing import CliRunner

    from reca_eval.cli import app

    out = CliRunner().invoke(app, ["experiment", "--families", "janus,mar"])
    assert out.exit_code == 2 and "mar" in out.output
    out = CliRunner().invoke(app, ["demo", "--families", "flow", "--base", "flow=/nowhere/flow"])
    assert out.exit_code == 2 and "no flow base" in out.output


# ------------------------------------------------------------------------------------ the model


def test_shapeworld_flow_model_knows_every_world_word_and_has_the_documented_sizes():
    from reca_eval.models.flow.shapeworld import NUM_QUERIES, build_shapeworld_flow
    from reca_eval.models.janus.shapeworld import count_unknown_words, world_source

    model = build_shapeworld_flow(seed=0)
    captions = [c for mode in ("dense", "sparse") for _, c in world_source(7, mode, limit=40)]
    assert not count_unknown_words(captions, model.tokenizer)
    images = [im for im, _ in world_source(7, limit=2)]
    px = model.preprocess(images)
    assert model.understanding_embeddings(px).shape == (2, 16, model.hidden_size)
    assert model.generation_targets(px).shape == (2, 8, 8, 8)
    assert model.queries.weight.shape[0] == NUM_QUERIES
    again = build_shapeworld_flow(seed=0)
    assert torch.equal(model.transformer.proj_out.weight, again.transformer.proj_out.weight)


def test_shipped_flow_base_loads_and_generates_a_32px_image(one_thread):
    from reca_eval.models.flow.shapeworld import shipped_flow_base_path
    from reca_eval.models.protocol import Condition, SamplingConfig

    path = shipped_flow_base_path()
    assert (path / "config.json").exists(), f"the flow base is not shipped at {path}"
    model = load_unified_model(path)
    assert model.family == FLOW
    (image,) = model.generate([Condition.text("a red circle")], SamplingConfig(guidance_scale=3.0, seed=0))
    assert image.size == (32, 32)
    summary = json.loads((path / "pretrain_summary.json").read_text())
    assert 0.0 <= summary["autoencoder"]["held_out/exact_scenes"] <= 1.0


# ------------------------------------------------------------------------------------ pre-training


def test_palette_logits_pick_each_rendered_pixels_own_colour():
    import numpy as np

    from reca_eval.models.janus.shapeworld import world_scene
    from reca_eval.shapeworld.parse import palette_indices
    from reca_eval.shapeworld.render import render_array
    from trainers.pretrain_shapeworld_flow import palette_logits, render_pixels

    ids = [5, 6, 7]
    picked = palette_logits(render_pixels(ids), 0.02).argmax(1).numpy()
    for row, i in zip(picked, ids, strict=True):
        nearest, exact = palette_indices(render_array(world_scene(i), 32))
        assert exact.all() and np.array_equal(row, nearest)


def test_pretraining_smoke_run_exports_a_loadable_base_with_its_measurements(tmp_path, one_thread):
    from trainers.pretrain_shapeworld_flow import METRICS_NAME, SUMMARY_NAME, load_config, main

    overrides = [
        f"output_dir={tmp_path / 'run'}",
        f"export_dir={tmp_path / 'export'}",
        "autoencoder.steps=2",
        "autoencoder.pool=32",
        "autoencoder.batch_size=4",
        "autoencoder.eval_scenes=4",
        "dit.steps=2",
        "dit.batch_size=4",
        "dit.eval_scenes=4",
        "dit.generate_scenes=2",
    ]
    recipe = Path(__file__).resolve().parents[1] / "trainers" / "recipes" / "shapeworld_flow_base.yaml"
    assert main([str(recipe), *overrides]) == 0
    model = load_unified_model(tmp_path / "export")
    # the scaling factor was set from the trained autoencoder's latents, not left at the builder's 1.0
    assert model.vae.config.scaling_factor != 1.0
    summary = json.loads((tmp_path / "export" / SUMMARY_NAME).read_text())
    for key in ("held_out/exact_scenes", "held_out/pixel_close", "latent_std"):
        assert key in summary["autoencoder"]
    for key in ("held_out/t2i", "held_out/unconditional", "generated/exact_objects"):
        assert key in summary["dit"]
    assert (tmp_path / "export" / METRICS_NAME).exists() and (tmp_path / "export" / "README.md").exists()
    with pytest.raises(ValueError, match="dit.stepz"):
        load_config(recipe, ["dit.stepz=3"])


def test_the_main_command_s_models_need_no_torchvision():
    """`pip install -e '.[models]'` brings no torchvision: the main command's modules and both shipped
    bases must load without it (transformers' Qwen2-VL video processor imports it at module level)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torchvision'] = None\n"  # any `import torchvision` now fails
        "import reca_eval.experiments.main_command, reca_eval.experiments.runner\n"
        "from reca_eval.models.loading import load_unified_model\n"
        "from reca_eval.models.janus.shapeworld import shipped_base_path\n"
        "from reca_eval.models.flow.shapeworld import shipped_flow_base_path\n"
        "load_unified_model(shipped_base_path()); load_unified_model(shipped_flow_base_path())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
