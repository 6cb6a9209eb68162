"""Property-based tests (hypothesis): the cluster and paired bootstrap on arbitrary prompt structures, and
the shapes-edit scorer's geometry on hand-made scenes shifted pixel by pixel."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reca_eval.results.stats import cluster_bootstrap, paired_bootstrap
from reca_eval.scorers.shapes import score_edit
from reca_eval.shapeworld.palette import SHAPES, STYLES
from reca_eval.shapeworld.render import render_scene
from reca_eval.shapeworld.scene import Scene, SceneObject, clear_relation

# Every example runs the real code on a few hundred rows or one small image: fast, but not instant on a
# loaded machine, so no per-example deadline.
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------ bootstrap


def mean_score(rows: pd.DataFrame, weights: np.ndarray | None) -> dict[str, float]:
    w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=float)
    return {"overall": float(np.average(rows["score"].to_numpy(dtype=float), weights=w))}


@st.composite
def prompt_rows(draw, min_prompts: int = 2, max_prompts: int = 25) -> pd.DataFrame:
    """Rows of a run: 1-5 samples per prompt (prompts need not have equal counts), binary scores."""
    sizes = draw(st.lists(st.integers(1, 5), min_size=min_prompts, max_size=max_prompts))
    rows = []
    for i, size in enumerate(sizes):
        for s in range(size):
            rows.append({"item_id": f"p{i:03d}", "sample": s, "score": float(draw(st.booleans()))})
    return pd.DataFrame(rows)


def recording(calls: list[np.ndarray]):
    def aggregate(rows: pd.DataFrame, weights: np.ndarray | None) -> dict[str, float]:
        if weights is not None:
            calls.append(np.asarray(weights, dtype=float).copy())
        return mean_score(rows, weights)

    return aggregate


def assert_prompt_weights(weights: np.ndarray, item_ids: np.ndarray, n_prompts: int) -> None:
    """A replicate weights every row of a prompt alike, and draws n_prompts prompts in all."""
    per_prompt = pd.Series(weights).groupby(item_ids)
    assert (per_prompt.nunique() == 1).all()
    multiplicity = per_prompt.first()
    assert (multiplicity == multiplicity.round()).all() and (multiplicity >= 0).all()
    assert multiplicity.sum() == n_prompts


@FAST
@given(rows=prompt_rows(), seed=st.integers(0, 2**16))
def test_cluster_bootstrap_weights_are_constant_within_a_prompt(rows, seed):
    calls: list[np.ndarray] = []
    cluster_bootstrap(rows, recording(calls), n_boot=15, seed=seed)
    assert len(calls) == 15
    for weights in calls:
        assert_prompt_weights(weights, rows["item_id"].to_numpy(), rows["item_id"].nunique())


@FAST
@given(rows=prompt_rows(), seed=st.integers(0, 2**16), flips=st.data())
def test_paired_bootstrap_gives_both_runs_the_same_prompt_weights(rows, seed, flips):
    rows_b = rows.copy()
    flip = flips.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    rows_b.loc[flip, "score"] = 1.0 - rows_b.loc[flip, "score"]
    rows_b = rows_b.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # B's rows in another order
    calls: list[np.ndarray] = []
    result = paired_bootstrap(rows, rows_b, recording(calls), n_boot=10, seed=seed)["overall"]
    assert len(calls) == 20  # A then B in every replicate
    for weights_a, weights_b in zip(calls[::2], calls[1::2], strict=True):
        np.testing.assert_array_equal(weights_a, weights_b)
        assert_prompt_weights(weights_a, rows["item_id"].to_numpy(), rows["item_id"].nunique())
    assert result.n_pairs == len(rows) and result.unmatched_a == result.unmatched_b == 0
    assert result.delta == pytest.approx(rows_b["score"].mean() - rows["score"].mean())


@FAST
@given(rows=prompt_rows(), seed=st.integers(0, 2**16))
def test_paired_bootstrap_does_not_depend_on_the_row_order_of_run_b(rows, seed):
    # Rows pair by their keys, not their position: B in any order gives the very same result.
    rows_b = rows.assign(score=1.0 - rows["score"])
    first = paired_bootstrap(rows, rows_b, mean_score, n_boot=30, seed=seed)
    shuffled = paired_bootstrap(
        rows, rows_b.sample(frac=1.0, random_state=seed), mean_score, n_boot=30, seed=seed
    )
    assert first == shuffled


def correlated_runs(n_prompts: int, samples: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """B differs from A by whole prompts: every sample of a prompt gains or loses together."""
    rng = np.random.default_rng(seed)
    a_prompt = rng.random(n_prompts) < 0.5
    b_prompt = np.where(rng.random(n_prompts) < 0.3, ~a_prompt, a_prompt)
    rows = [
        {
            "item_id": f"p{i:04d}",
            "sample": s,
            "row": i * samples + s,
            "a": float(a_prompt[i]),
            "b": float(b_prompt[i]),
        }
        for i in range(n_prompts)
        for s in range(samples)
    ]
    frame = pd.DataFrame(rows)
    return frame.assign(score=frame["a"]), frame.assign(score=frame["b"])


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_on_correlated_data_the_paired_interval_resamples_prompts_not_rows(seed):
    # With four perfectly correlated samples per prompt, resampling prompts gives an interval about
    # sqrt(4) = 2 times as wide as resampling rows; an implementation that resamples rows gives 1.
    rows_a, rows_b = correlated_runs(n_prompts=150, samples=4, seed=seed)
    prompts = paired_bootstrap(rows_a, rows_b, mean_score, n_boot=300, seed=seed)["overall"]
    per_row = paired_bootstrap(
        rows_a, rows_b, mean_score, keys=("row",), cluster="row", n_boot=300, seed=seed
    )["overall"]
    assert prompts.delta == pytest.approx(per_row.delta)
    assert (prompts.high - prompts.low) > 1.4 * (per_row.high - per_row.low)


# -------------------------------------------------------------------------------- edit scorer geometry

RESOLUTIONS = (64, 128)


def at(
    shape: str, colour: str, style: str, cx: float, cy: float, res: int, size: str = "small"
) -> SceneObject:
    """An object whose centre is pixel (cx, cy) of a 64 px image, exactly, at any power-of-two resolution."""
    scale = res / 64
    return SceneObject(shape, colour, size, style, x=(cx * scale + 0.5) / res, y=(cy * scale + 0.5) / res)


def shifted(obj: SceneObject, dx: int, dy: int, res: int) -> SceneObject:
    """``obj`` moved by (dx, dy) pixels at resolution ``res`` (exact: positions are multiples of 1/res)."""
    return dataclasses.replace(obj, x=obj.x + dx / res, y=obj.y + dy / res)


def tolerance(res: int) -> int:
    return max(1, res // 64)  # the documented tolerance: each box edge within max(1, res/64) px


objects = st.tuples(st.sampled_from(SHAPES), st.sampled_from(STYLES))
shifts = st.tuples(st.integers(-9, 9), st.integers(-9, 9)).filter(lambda d: d != (0, 0))


@FAST
@given(res=st.sampled_from(RESOLUTIONS), kept=objects, shift=shifts)
def test_an_unchanged_object_shifted_past_the_tolerance_is_not_preserved(res, kept, shift):
    # A recolour of the top-left square; the circle and the object ``kept`` are left alone, and the
    # output shifts ``kept`` by ``shift`` pixels (at 64 px; twice that at 128).
    shape, style = kept
    recoloured = at("square", "red", "solid", 14, 14, res)
    other = at("circle", "blue", "outline", 50, 14, res)
    moving = at(shape, "green", style, 32, 42, res)
    source = Scene("grey", [recoloured, other, moving])
    target = Scene("grey", [dataclasses.replace(recoloured, colour="yellow"), other, moving])
    dx, dy = (d * res // 64 for d in shift)
    output = render_scene(Scene("grey", [target.objects[0], other, shifted(moving, dx, dy, res)]), res)
    result = score_edit(source, target, output)
    within = max(abs(dx), abs(dy)) <= tolerance(res)
    # units: the two unchanged objects and the background
    assert result["preservation"] == pytest.approx(1.0 if within else 2 / 3)
    assert result["success"] == 1  # the recolour itself is right either way


def move_or_add(kind: str, res: int, shape: str, style: str) -> tuple[Scene, Scene, SceneObject, SceneObject]:
    """Source and target of a hand-made move or add: the edited object ends left of a reference circle
    (its one clear relation); a third object has no clear relation to it. Returns the edited object's
    target and the reference."""
    edited = at(shape, "red", style, 14, 32, res)
    reference = at("circle", "blue", "solid", 42, 32, res)
    bystander = at("diamond", "purple", "solid", 50, 54, res)
    old = at(shape, "red", style, 14, 10, res)
    source = Scene("sand", [old, reference, bystander] if kind == "move" else [reference, bystander])
    target = Scene("sand", [edited, reference, bystander])
    assert clear_relation(edited, reference) == "left of" and clear_relation(edited, bystander) is None
    return source, target, edited, reference


@FAST
@given(kind=st.sampled_from(["move", "add"]), res=st.sampled_from(RESOLUTIONS), obj=objects, shift=shifts)
def test_a_moved_or_added_object_off_its_place_without_its_reference_fails(kind, res, obj, shift):
    # The reference is gone, so the relation cannot be checked: only the target place itself passes.
    source, target, edited, reference = move_or_add(kind, res, *obj)
    dx, dy = (d * res // 64 for d in shift)
    bystander = target.objects[2]
    output = render_scene(Scene("sand", [shifted(edited, dx, dy, res), bystander]), res)
    result = score_edit(source, target, output)
    assert result["success"] == int(max(abs(dx), abs(dy)) <= tolerance(res)), result


@FAST
@given(kind=st.sampled_from(["move", "add"]), res=st.sampled_from(RESOLUTIONS), obj=objects)
def test_a_move_or_add_succeeds_at_its_place_or_in_its_relation_and_not_left_behind(kind, res, obj):
    source, target, edited, reference = move_or_add(kind, res, *obj)
    bystander = target.objects[2]
    assert score_edit(source, target, render_scene(target, res))["success"] == 1
    # Elsewhere but still left of the reference: the relation holds.
    elsewhere = shifted(edited, 0, -12 * res // 64, res)
    assert (
        score_edit(source, target, render_scene(Scene("sand", [elsewhere, reference, bystander]), res))[
            "success"
        ]
        == 1
    )
    # Mirrored through the reference: right of it, the relation fails.
    mirrored = shifted(edited, 40 * res // 64, 0, res)
    assert (
        score_edit(source, target, render_scene(Scene("sand", [mirrored, reference, bystander]), res))[
            "success"
        ]
        == 0
    )
    # The unedited source: a move left at its old place (which cannot also count as the moved object,
    # even where the old place keeps the relation), an add never made.
    unedited = score_edit(source, target, render_scene(source, res))
    assert unedited["success"] == 0 and "missing" in unedited["reason"], unedited
    assert ("still present" in unedited["reason"]) == (kind == "move"), unedited
