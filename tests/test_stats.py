"""Cluster bootstrap and paired comparison on synthetic runs whose truth the test plants."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reca_eval.results.stats import cluster_bootstrap, cluster_multiplicities, pair_rows, paired_bootstrap

CATEGORIES = ("counting", "colors", "position")


def mean_of_category_means(rows: pd.DataFrame, weights: np.ndarray | None) -> dict[str, float]:
    """GenEval-style aggregate: weighted mean per category, overall = mean of category means."""
    w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=float)
    codes, cats = pd.factorize(rows["category"])
    score = rows["score"].to_numpy(dtype=float)
    total = np.bincount(codes, weights=w, minlength=len(cats))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.bincount(codes, weights=w * score, minlength=len(cats)) / total
    out = {str(c): float(m) for c, m in zip(cats, means, strict=True)}
    out["overall"] = float(np.nanmean(means))
    return out


def make_rows(
    n_prompts: int = 120,
    samples: int = 4,
    seed: int = 0,
    correlated: bool = True,
    categories: tuple[str, ...] = CATEGORIES,
) -> pd.DataFrame:
    """Binary scores; ``correlated``: all samples of a prompt share one outcome (prompt difficulty)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_prompts):
        p = rng.beta(2, 2)
        shared = rng.random() < p
        for s in range(samples):
            ok = shared if correlated else rng.random() < p
            rows.append(
                {
                    "item_id": f"{i:05d}",
                    "sample": s,
                    "category": categories[i % len(categories)],
                    "score": float(ok),
                }
            )
    return pd.DataFrame(rows)


def test_multiplicities_draw_every_replicate_n_clusters_times():
    counts = cluster_multiplicities(n_clusters=50, n_boot=200, seed=3)
    assert counts.shape == (200, 50)
    assert (counts.sum(axis=1) == 50).all()
    # with replacement: some clusters are drawn twice, some not at all
    assert (counts == 0).any() and (counts >= 2).any()


def test_replicate_weights_are_constant_within_a_cluster():
    rows = make_rows(n_prompts=30)
    seen: list[np.ndarray] = []

    def recording(frame: pd.DataFrame, weights: np.ndarray | None) -> dict[str, float]:
        if weights is not None:
            seen.append(np.asarray(weights).copy())
        return mean_of_category_means(frame, weights)

    cluster_bootstrap(rows, recording, n_boot=40, seed=1)
    assert len(seen) == 40
    for weights in seen:
        per_cluster = pd.Series(weights).groupby(rows["item_id"].to_numpy()).nunique()
        assert (per_cluster == 1).all()
        assert weights.sum() == len(rows)  # 30 draws of 4-row clusters
    assert any((w == 0).any() for w in seen)


def test_cluster_interval_is_wider_than_naive_per_image_interval_for_correlated_images():
    rows = make_rows(n_prompts=200, samples=4, correlated=True)
    clustered = cluster_bootstrap(rows, mean_of_category_means, n_boot=400, seed=0)
    # The naive bootstrap treats every image as its own cluster.
    naive_rows = rows.assign(row_id=np.arange(len(rows)))
    naive = cluster_bootstrap(naive_rows, mean_of_category_means, cluster="row_id", n_boot=400, seed=0)
    assert clustered["overall"].estimate == pytest.approx(naive["overall"].estimate)
    # 4 perfectly correlated images carry the information of one: width ratio near sqrt(4) = 2.
    ratio = clustered["overall"].half_width / naive["overall"].half_width
    assert ratio > 1.5
    assert clustered["overall"].se > 1.5 * naive["overall"].se


def test_independent_images_give_similar_widths():
    rows = make_rows(n_prompts=200, samples=4, correlated=False)
    clustered = cluster_bootstrap(rows, mean_of_category_means, n_boot=400, seed=0)
    naive = cluster_bootstrap(
        rows.assign(row_id=np.arange(len(rows))), mean_of_category_means, cluster="row_id", n_boot=400, seed=0
    )
    # Independent samples still share the prompt's p, so clustering widens a little, not 2x.
    assert clustered["overall"].half_width / naive["overall"].half_width < 1.5


def test_bootstrap_is_deterministic_given_seed_and_intervals_contain_estimate():
    rows = make_rows(n_prompts=90)
    first = cluster_bootstrap(rows, mean_of_category_means, n_boot=300, seed=7)
    again = cluster_bootstrap(rows, mean_of_category_means, n_boot=300, seed=7)
    other = cluster_bootstrap(rows, mean_of_category_means, n_boot=300, seed=8)
    assert first == again
    assert first["overall"] != other["overall"]
    assert set(first) == {"overall", *CATEGORIES}
    for key, interval in first.items():
        assert interval.low <= interval.estimate <= interval.high, key
        assert interval.low < interval.high, key


def test_bootstrap_rejects_bad_input():
    rows = make_rows(n_prompts=5)
    with pytest.raises(ValueError, match="cluster column 'prompt'"):
        cluster_bootstrap(rows, mean_of_category_means, cluster="prompt")
    with pytest.raises(ValueError, match="^cannot bootstrap an empty set of rows$"):
        cluster_bootstrap(rows.iloc[:0], mean_of_category_means)
    for alpha in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
            cluster_bootstrap(rows, mean_of_category_means, alpha=alpha)
    with pytest.raises(ValueError, match="no value in cluster column"):
        cluster_bootstrap(rows.assign(item_id=None), mean_of_category_means)


def test_paired_identical_runs_give_zero_delta_with_zero_width():
    rows = make_rows(n_prompts=60)
    result = paired_bootstrap(rows, rows.copy(), mean_of_category_means, n_boot=200, seed=0)
    assert set(result) == {"overall", *CATEGORIES}
    for delta in result.values():
        assert delta.delta == 0 and delta.low == 0 and delta.high == 0
        assert not delta.excludes_zero
        assert delta.n_pairs == len(rows) and delta.unmatched_a == 0 and delta.unmatched_b == 0


def fix_failing_prompts(rows: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """B = A with ``fraction`` of the prompts that fail on every sample made to pass on every sample."""
    per_prompt = rows.groupby("item_id")["score"].max()
    failing = per_prompt.index[per_prompt == 0].to_numpy()
    rng = np.random.default_rng(seed)
    fixed = rng.choice(failing, size=int(round(fraction * len(failing))), replace=False)
    out = rows.copy()
    out.loc[out["item_id"].isin(fixed), "score"] = 1.0
    return out


def test_planted_improvement_is_detected_and_tiny_noise_is_not():
    rows_a = make_rows(n_prompts=150, seed=2)
    rows_b = fix_failing_prompts(rows_a, fraction=0.3, seed=0)
    improved = paired_bootstrap(rows_a, rows_b, mean_of_category_means, n_boot=400, seed=0)
    overall = improved["overall"]
    assert overall.delta > 0.05
    assert overall.low > 0 and overall.excludes_zero
    assert overall.low <= overall.delta <= overall.high

    # Tiny noise: two images flipped up, two flipped down.
    rng = np.random.default_rng(5)
    noisy = rows_a.copy()
    ones = rng.choice(np.flatnonzero(noisy["score"].to_numpy() == 1), size=2, replace=False)
    zeros = rng.choice(np.flatnonzero(noisy["score"].to_numpy() == 0), size=2, replace=False)
    noisy.loc[ones, "score"] = 0.0
    noisy.loc[zeros, "score"] = 1.0
    unchanged = paired_bootstrap(rows_a, noisy, mean_of_category_means, n_boot=400, seed=0)
    assert abs(unchanged["overall"].delta) < 0.01
    assert not unchanged["overall"].excludes_zero


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_interval_is_narrower_than_unpaired_resampling_gives(seed):
    # Resampling A and B independently gives a delta whose spread is sqrt(w_a^2 + w_b^2) of the two
    # runs' own widths. B is A with some failing prompts fixed, so a prompt that is hard for A is hard
    # for B: resampled jointly, that shared difficulty cancels and the paired interval is about half as
    # wide (0.46-0.51 over seeds 0-3).
    rows_a = make_rows(n_prompts=150, seed=2 + seed)
    rows_b = fix_failing_prompts(rows_a, fraction=0.3, seed=seed)
    paired = paired_bootstrap(rows_a, rows_b, mean_of_category_means, n_boot=300, seed=seed)["overall"]
    ci_a = cluster_bootstrap(rows_a, mean_of_category_means, n_boot=300, seed=seed)["overall"]
    ci_b = cluster_bootstrap(rows_b, mean_of_category_means, n_boot=300, seed=seed)["overall"]
    unpaired = math.hypot(ci_a.high - ci_a.low, ci_b.high - ci_b.low)
    assert (paired.high - paired.low) < 0.7 * unpaired


def test_pairing_mismatches_are_counted_and_nothing_paired_is_refused():
    rows_a = make_rows(n_prompts=40)
    # B lost prompt 00000 entirely and one sample of prompt 00001, and has an extra prompt.
    rows_b = rows_a[
        (rows_a["item_id"] != "00000") & ~((rows_a["item_id"] == "00001") & (rows_a["sample"] == 3))
    ]
    extra = pd.DataFrame(
        [{"item_id": "99999", "sample": s, "category": "colors", "score": 1.0} for s in range(2)]
    )
    rows_b = pd.concat([rows_b, extra], ignore_index=True)
    result = paired_bootstrap(rows_a, rows_b, mean_of_category_means, n_boot=50, seed=0)
    assert result["overall"].unmatched_a == 5
    assert result["overall"].unmatched_b == 2
    assert result["overall"].n_pairs == len(rows_a) - 5

    other = rows_a.assign(item_id="x" + rows_a["item_id"])
    with pytest.raises(ValueError, match="no rows of run A pair with run B"):
        paired_bootstrap(rows_a, other, mean_of_category_means, n_boot=10)


def test_pairing_keys_default_to_question_ids_and_refuse_ambiguous_keys():
    base = make_rows(n_prompts=10, samples=2)
    questions = pd.concat([base.assign(proposition_id=q) for q in range(3)], ignore_index=True)
    shuffled = questions.sample(frac=1.0, random_state=0).reset_index(drop=True)
    paired_a, paired_b, ua, ub = pair_rows(questions, shuffled)
    assert (ua, ub) == (0, 0)
    assert (
        paired_a[["item_id", "sample", "proposition_id"]] == paired_b[["item_id", "sample", "proposition_id"]]
    ).all(axis=None)
    assert (paired_a["score"] == paired_b["score"]).all()
    with pytest.raises(ValueError, match="do not identify run A's rows uniquely"):
        pair_rows(questions, shuffled, keys=("item_id", "sample"))
    with pytest.raises(ValueError, match="not in run B's rows"):
        pair_rows(questions, base, keys=("item_id", "sample", "proposition_id"))


def test_pairing_refuses_rows_whose_categories_differ():
    rows_a = make_rows(n_prompts=12)
    rows_b = rows_a.copy()
    rows_b.loc[0, "category"] = "position" if rows_b.loc[0, "category"] != "position" else "colors"
    with pytest.raises(ValueError, match="different categories"):
        paired_bootstrap(rows_a, rows_b, mean_of_category_means, n_boot=10)


def test_defaults_are_1000_replicates_at_seed_0():
    # The documented defaults (`--n-boot 1000`, seed 0) are the ones a bare call uses.
    rows = make_rows(n_prompts=8, samples=2)
    calls = {"a": 0}

    def counting(frame: pd.DataFrame, weights: np.ndarray | None) -> dict[str, float]:
        calls["a"] += 1
        return mean_of_category_means(frame, weights)

    default = cluster_bootstrap(rows, counting)
    assert calls["a"] == 1 + 1000
    assert default == cluster_bootstrap(rows, counting, n_boot=1000, seed=0)
    calls["a"] = 0
    rows_b = rows.assign(score=1.0 - rows["score"])
    paired = paired_bootstrap(rows, rows_b, counting)
    assert calls["a"] == 2 + 2 * 1000
    assert paired == paired_bootstrap(rows, rows_b, counting, n_boot=1000, seed=0)


def test_paired_bootstrap_pairs_on_the_keys_it_is_given():
    rows = make_rows(n_prompts=10, samples=2)
    with pytest.raises(ValueError, match="not in run A's rows"):
        paired_bootstrap(rows, rows, mean_of_category_means, keys=("item_id", "question_id"), n_boot=5)
    # Keys without the sample: two rows of a prompt share a key, which is refused.
    with pytest.raises(ValueError, match="do not identify run A's rows uniquely"):
        paired_bootstrap(rows, rows, mean_of_category_means, keys=("item_id",), n_boot=5)


def present_categories_only(rows: pd.DataFrame, weights: np.ndarray | None) -> dict[str, float]:
    """An aggregate that leaves out a category no row of the replicate carries (some benchmarks do)."""
    out = mean_of_category_means(rows, weights)
    return {k: v for k, v in out.items() if not np.isnan(v)}


def test_a_category_missing_from_some_replicates_is_taken_over_the_others():
    # One prompt alone carries "rare": replicates that do not draw it have no "rare" key at all.
    rows = make_rows(n_prompts=30, samples=2, seed=4)
    rows.loc[rows["item_id"] == "00000", "category"] = "rare"
    rows_b = rows.assign(score=1.0)
    single = cluster_bootstrap(rows, present_categories_only, n_boot=200, seed=0)
    assert single["rare"].low <= single["rare"].estimate <= single["rare"].high
    paired = paired_bootstrap(rows, rows_b, present_categories_only, n_boot=200, seed=0)
    rare = paired["rare"]
    assert (rare.a, rare.b) == (rows.loc[rows["category"] == "rare", "score"].mean(), 1.0)
    assert rare.low == pytest.approx(1.0 - rare.a) and rare.high == pytest.approx(1.0 - rare.a)
    overall = paired["overall"]
    assert overall.a == pytest.approx(mean_of_category_means(rows, None)["overall"]) and overall.b == 1.0


def test_pairing_uses_the_keys_both_runs_have_and_names_what_is_wrong():
    rows = make_rows(n_prompts=10, samples=2)
    # A has a question id that B lacks: the default keys are those both have.
    with_questions = rows.assign(proposition_id=0)
    paired_a, paired_b, ua, ub = pair_rows(with_questions, rows)
    assert len(paired_a) == len(rows) and (ua, ub) == (0, 0)
    with pytest.raises(ValueError, match="must include the cluster column 'item_id'"):
        pair_rows(rows, rows, keys=("sample",))
    with pytest.raises(ValueError, match=r"\(20 rows share a key, e\.g\. \{'item_id': '00000'\}\)"):
        pair_rows(rows, rows, keys=("item_id",))


def test_duplicated_keys_in_run_b_are_refused_with_the_first_example():
    rows = make_rows(n_prompts=10, samples=2)
    doubled = pd.concat([rows, rows.iloc[[3]]], ignore_index=True)  # one row of B twice
    with pytest.raises(
        ValueError,
        match=r"run B's rows uniquely \(2 rows share a key, e\.g\. \{'item_id': '00001', 'sample': 1\}",
    ):
        pair_rows(rows, doubled)
    # rows ordered by sample: the first duplicated key is prompt 00000's, the second row prompt 00001's
    by_sample = rows.sort_values("sample", kind="stable").reset_index(drop=True)
    with pytest.raises(ValueError, match=r"e\.g\. \{'item_id': '00000'\}"):
        pair_rows(by_sample, by_sample, keys=("item_id",))


def test_pairing_keeps_run_a_order_and_columns_and_explains_refusals():
    rows = make_rows(n_prompts=10, samples=2)
    shuffled = rows.sample(frac=1.0, random_state=3).reset_index(drop=True)
    paired_a, paired_b, _, _ = pair_rows(shuffled, rows)
    pd.testing.assert_frame_equal(paired_a, shuffled)  # A's rows, in A's order, with A's columns
    assert list(paired_b.columns) == list(rows.columns)
    pd.testing.assert_frame_equal(paired_b, shuffled)
    with pytest.raises(ValueError, match=r"cannot pair runs on \['item_id', 'sample'\]"):
        pair_rows(rows, rows.assign(sample=rows["sample"].astype(str)))
    with pytest.raises(
        ValueError, match=r"\(20 rows in A, 20 in B\): are these runs of the same benchmark items\?"
    ):
        pair_rows(rows, rows.assign(item_id="x" + rows["item_id"]))


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_intervals_are_the_percentiles_of_the_replicates(alpha):
    # The aggregate reports how often prompt 0 was drawn, so the replicate values are known exactly:
    # column 0 of the multiplicities (prompts are numbered in order of first appearance).
    rows = make_rows(n_prompts=12, samples=2)
    values = np.random.default_rng(0).normal(size=len(rows))  # continuous: every quantile differs

    def draws_of_first(frame: pd.DataFrame, weights: np.ndarray | None) -> dict[str, float]:
        w = np.ones(len(frame)) if weights is None else weights
        first = float(w[0])
        return {
            "draws": first,
            "only_when_drawn": first if first > 0 else float("nan"),
            "never": float("nan"),
            "mean": float(np.average(values, weights=w)),
        }

    result = cluster_bootstrap(rows, draws_of_first, n_boot=400, seed=5, alpha=alpha)
    counts = cluster_multiplicities(12, 400, seed=5)[:, 0].astype(float)
    low, high = np.quantile(counts, [alpha / 2, 1 - alpha / 2])
    assert (result["draws"].low, result["draws"].high) == (low, high)
    assert result["draws"].se == pytest.approx(counts.std(ddof=1))
    assert result["draws"].estimate == 1.0
    drawn = counts[counts > 0]  # replicates that leave the prompt out give NaN: taken over the others
    assert (result["only_when_drawn"].low, result["only_when_drawn"].high) == tuple(
        np.quantile(drawn, [alpha / 2, 1 - alpha / 2])
    )
    codes = pd.factorize(rows["item_id"])[0]
    means = [np.average(values, weights=c[codes]) for c in cluster_multiplicities(12, 400, seed=5)]
    assert (result["mean"].low, result["mean"].high) == pytest.approx(
        tuple(np.quantile(means, [alpha / 2, 1 - alpha / 2]))
    )
    two = cluster_bootstrap(rows, draws_of_first, n_boot=2, seed=5, alpha=alpha)["mean"]
    assert two.se == pytest.approx(np.std(means[:2], ddof=1))
    never = result["never"]
    assert np.isnan(never.low) and np.isnan(never.high) and np.isnan(never.se)


def test_one_prompt_or_one_replicate_gives_a_point_interval():
    rows = make_rows(n_prompts=1, samples=3)
    single = cluster_bootstrap(rows, mean_of_category_means, n_boot=20, seed=0)["overall"]
    assert single.low == single.high == single.estimate and single.se == 0.0
    one = cluster_bootstrap(make_rows(n_prompts=20), mean_of_category_means, n_boot=1, seed=0)["overall"]
    assert one.low == one.high and one.se == 0.0
    with pytest.raises(ValueError, match="^cluster bootstrap needs at least one cluster$"):
        cluster_multiplicities(0, 10, seed=0)
    with pytest.raises(ValueError, match="n_boot must be >= 1, got 0"):
        cluster_multiplicities(5, 0, seed=0)


def test_pairing_a_run_without_categories():
    rows = make_rows(n_prompts=6, samples=2)
    paired_a, paired_b, _, _ = pair_rows(rows, rows.drop(columns=["category"]))
    assert len(paired_a) == len(paired_b) == len(rows)
