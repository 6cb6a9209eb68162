"""The arms build the recipes their definitions promise: matched steps, SFT-half's T2I share, frozen
modules, the VQ ablation flag, and stage sharing between arms."""

from __future__ import annotations

import pytest

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
    stage_key,
    step_account,
    t2i_steps_in_mix,
)
from reca_eval.models import family_class
from reca_eval.training.data import source_for_step
from reca_eval.training.recipe import recipe_from_dict

BUDGET = Budget(sft_steps=30, reca_steps=20, batch_size=8, lr=1e-4)


def objectives(stage) -> list[str]:
    return [s["objective"] for s in stage.recipe["data"]["sources"]]


def test_every_arm_is_a_valid_recipe_with_the_frozen_understanding_side():
    assert family_class("janus").frozen_modules == ("vision", "aligner", "vqmodel")
    for name in ALL_ARMS:
        arm = build_arm(name, BUDGET, seed=0)
        for stage in arm.stages:
            recipe = recipe_from_dict(stage.recipe)
            assert recipe.model.freeze == list(family_class("janus").frozen_modules)
            assert recipe.train.batch_size == BUDGET.batch_size
            assert recipe.train.lr == BUDGET.lr
            assert set(stage.streams) == {s.name for s in recipe.data.sources}


def test_sft_reca_and_sft_matched_take_the_same_steps_and_share_the_sft_stage():
    sft, sft_reca, matched = (build_arm(n, BUDGET, seed=3) for n in (SFT, SFT_RECA, SFT_MATCHED))
    assert sft.steps == 30
    assert sft_reca.steps == matched.steps == 50
    assert [objectives(s) for s in sft_reca.stages] == [["t2i"], ["recon", "i2t"]]
    assert [objectives(s) for s in matched.stages] == [["t2i"], ["t2i"]]
    # the RecA mix is the authors' 1:1 recon : i2t for shared-parameter models
    assert [s["ratio"] for s in sft_reca.stages[1].recipe["data"]["sources"]] == [1.0, 1.0]
    # the first stage of both is SFT itself: the same key, so it is trained once
    keys = {stage_key(a.stages[0], "base-path") for a in (sft, sft_reca, matched)}
    assert len(keys) == 1
    # ... while the second stages differ, and read fresh captions rather than SFT's again
    assert stage_key(sft_reca.stages[1], "k") != stage_key(matched.stages[1], "k")
    assert set(matched.stages[1].streams.values()).isdisjoint(matched.stages[0].streams.values())


def test_sft_half_takes_exactly_the_t2i_steps_of_the_reca_t2i_mix():
    for seed in (0, 1, 2):
        mix = build_arm(RECA_T2I, BUDGET, seed)
        half = build_arm(SFT_HALF, BUDGET, seed)
        (stage,) = mix.stages
        ratios = [s["ratio"] for s in stage.recipe["data"]["sources"]]
        assert objectives(stage) == ["t2i", "recon", "i2t"] and ratios == [2.0, 1.0, 1.0]
        drawn = [source_for_step(seed, step, ratios) for step in range(mix.steps)]
        assert half.steps == drawn.count(0) == step_account(mix).t2i_steps
        assert objectives(half.stages[0]) == ["t2i"]
        # about half of the steps, as the 2:1:1 mix says (not exactly: the draw is random but seeded)
        assert 0.3 * mix.steps < half.steps < 0.7 * mix.steps
    assert {build_arm(SFT_HALF, BUDGET, s).steps for s in range(6)} != {25}  # exact counts, not the mean


def test_reca_arms_and_the_vq_ablation():
    reca, vq = build_arm(RECA, BUDGET), build_arm(RECA_VQ, BUDGET)
    assert reca.steps == vq.steps == BUDGET.total_steps
    assert objectives(reca.stages[0]) == objectives(vq.stages[0]) == ["recon", "i2t"]
    assert reca.stages[0].recipe["objective"]["condition_on"] == "understanding"
    assert vq.stages[0].recipe["objective"]["condition_on"] == "vq_embeddings"
    assert "copy/collapse" in vq.description
    assert build_arm(BASE, BUDGET).stages == ()


def test_seeds_change_data_streams_and_order_but_not_the_definition():
    a, b = build_arm(SFT_RECA, BUDGET, seed=0), build_arm(SFT_RECA, BUDGET, seed=1)
    assert [s.recipe["train"]["seed"] for s in b.stages] == [1, 1]
    streams_a = {v.seed for s in a.stages for v in s.streams.values()}
    streams_b = {v.seed for s in b.stages for v in s.streams.values()}
    assert streams_a.isdisjoint(streams_b)
    assert min(streams_a | streams_b) > 3  # the base's pre-training streams are 1-3
    assert stage_key(a.stages[0], "x") != stage_key(b.stages[0], "x")
    # each source has enough items that no item repeats within a stage
    for stage in a.stages:
        for stream in stage.streams.values():
            assert stream.limit == stage.recipe["train"]["steps"] * BUDGET.batch_size


def test_step_accounting_and_bad_input():
    account = step_account(build_arm(SFT_RECA, BUDGET))
    assert account.steps == 50 and account.batch_size == 8 and account.t2i_steps == 30
    assert len(account.stages) == 2 and "recon:i2t" in account.stages[1]
    assert "SFT+RecA" in step_account(build_arm(SFT_MATCHED, BUDGET)).controls
    with pytest.raises(KeyError, match="unknown arm 'SFT2'"):
        build_arm("SFT2", BUDGET)
    with pytest.raises(ValueError, match="sft_steps"):
        Budget(sft_steps=0)
    assert t2i_steps_in_mix(0, 10, (1.0,)) == 10


def test_sft_half_of_a_mix_without_t2i_draws_is_the_base():
    tiny = Budget(sft_steps=2, reca_steps=2, batch_size=2)
    assert t2i_steps_in_mix(0, 4, tiny.mix_ratios) == 0  # this seed's 4 draws miss the t2i source
    half = build_arm(SFT_HALF, tiny, seed=0)
    assert half.stages == () and "base itself" in half.description


def test_identical_stages_of_different_arms_share_one_key():
    # with S = R and this seed, the 2:1:1 mix draws exactly S T2I steps: SFT-half is then SFT itself
    even = Budget(sft_steps=40, reca_steps=40, batch_size=8)
    half, sft = build_arm(SFT_HALF, even, seed=0), build_arm(SFT, even, seed=0)
    assert half.steps == sft.steps == 40
    assert stage_key(half.stages[0], "base") == stage_key(sft.stages[0], "base")
    # the default budget (R < S) keeps the control apart from SFT
    assert all(build_arm(SFT_HALF, Budget(), s).steps != Budget().sft_steps for s in range(3))


def test_caption_mode_reaches_every_text_stream_and_bad_values_are_refused():
    sparse = Budget(sft_steps=30, reca_steps=20, batch_size=8, lr=1e-4, caption_mode="sparse")
    for name in (SFT, SFT_RECA, RECA_T2I):
        arm, dense_arm = build_arm(name, sparse), build_arm(name, BUDGET)
        modes = {v.caption_mode for s in arm.stages for v in s.streams.values()}
        assert modes == {"sparse"}
        # a different caption mode is a different stage: never reused from a dense run's cache
        assert stage_key(arm.stages[0], "x") != stage_key(dense_arm.stages[0], "x")
    with pytest.raises(ValueError, match="caption_mode"):
        Budget(caption_mode="terse")
    with pytest.raises(ValueError, match="bottleneck_size"):
        Budget(bottleneck_size=-2)


def test_instruction_count_reaches_the_recon_objective_only_when_set():
    few = Budget(sft_steps=30, reca_steps=20, batch_size=8, lr=1e-4, instructions=1)
    arm, default = build_arm(RECA, few), build_arm(RECA, BUDGET)
    assert arm.stages[0].recipe["objective"]["instructions"] == 1
    assert recipe_from_dict(arm.stages[0].recipe).objective.instructions == 1
    # the default leaves the recipe as before, so stages trained before the option existed stay cached
    assert "instructions" not in default.stages[0].recipe["objective"]
    assert stage_key(arm.stages[0], "x") != stage_key(default.stages[0], "x")
    with pytest.raises(ValueError, match="instructions"):
        Budget(instructions=500)
