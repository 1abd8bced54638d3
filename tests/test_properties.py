"""Property-based tests (hypothesis): ROC against brute-force counts, disjoint masks and splits, intervals around the estimate.

Examples are derandomized (the same ones every run, no example database),
so a mutation run or CI sees the same cases as a developer.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import DataParams
from pipeline.core.types import AttackResult, AttackScores
from pipeline.datasets.splits import defender_mask, make_splits, paired_keep
from pipeline.measures.intervals import auc_of_rows, bootstrap_intervals, tpr_at_false_positives
from pipeline.measures.roc import roc, roc_auc, tpr_at_fpr
from pipeline.measures.roc_grid import false_positive_grid, roc_on_grid

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None)


@st.composite
def labelled_scores(draw: st.DrawFn, most: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Scores on a few integer levels (so ties are common) and labels with both classes."""
    n = draw(st.integers(2, most))
    scores = np.array(draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)), float)
    member = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    member[0], member[1] = True, False
    return scores, member


def _brute_counts(scores: np.ndarray, member: np.ndarray, threshold: float) -> tuple[int, int]:
    called = scores >= threshold
    return int(np.sum(called & member)), int(np.sum(called & ~member))


def _brute_best_tpr(scores: np.ndarray, member: np.ndarray, most_fp: float) -> float:
    """The largest TPR over every threshold (each score, and above all) flagging at most `most_fp` non-members."""
    best = 0.0
    for t in [*np.unique(scores), np.inf]:
        tp, fp = _brute_counts(scores, member, t)
        if fp <= most_fp:
            best = max(best, tp / member.sum())
    return best


@SETTINGS
@given(labelled_scores())
def test_roc_counts_match_a_brute_force_count_at_every_distinct_score(case: tuple[np.ndarray, np.ndarray]) -> None:
    scores, member = case
    curve = roc(scores, member)
    assert curve.thresholds[0] > scores.max() and (curve.tp[0], curve.fp[0]) == (0, 0)
    assert sorted(curve.thresholds[1:], reverse=True) == list(curve.thresholds[1:]) == sorted(set(scores), reverse=True)
    for t, tp, fp in zip(curve.thresholds, curve.tp, curve.fp):
        assert (tp, fp) == _brute_counts(scores, member, t)
    assert (curve.n_members, curve.n_nonmembers) == (member.sum(), (~member).sum())


@SETTINGS
@given(labelled_scores(), st.sampled_from([0.01, 0.05, 0.1, 0.25, 0.5]))
def test_tpr_at_fpr_is_the_brute_force_best_rate(case: tuple[np.ndarray, np.ndarray], level: float) -> None:
    scores, member = case
    value = tpr_at_fpr(roc(scores, member), level)
    n_nonmembers = int((~member).sum())
    if n_nonmembers * level < 1:
        assert value is None
    else:
        assert value == _brute_best_tpr(scores, member, level * n_nonmembers)


@SETTINGS
@given(labelled_scores(), st.integers(0, 8))
def test_tpr_at_k_false_positives_is_the_brute_force_best_rate(case: tuple[np.ndarray, np.ndarray], k: int) -> None:
    scores, member = case
    got = tpr_at_false_positives(scores[member][None, :], scores[~member][None, :], k)
    assert got.shape == (1,) and got[0] == _brute_best_tpr(scores, member, k)


@SETTINGS
@given(labelled_scores())
def test_auc_of_rows_counts_pairs_with_ties_as_half(case: tuple[np.ndarray, np.ndarray]) -> None:
    scores, member = case
    m, n = scores[member], scores[~member]
    pairs = (m[:, None] > n[None, :]).mean() + 0.5 * (m[:, None] == n[None, :]).mean()
    assert np.isclose(auc_of_rows(m[None, :], n[None, :])[0], pairs, rtol=0, atol=1e-12)


@SETTINGS
@given(labelled_scores())
def test_roc_auc_is_the_area_under_the_roc_and_scikit_learns(case: tuple[np.ndarray, np.ndarray]) -> None:
    """The headline's AUC: the trapezoids under the ROC (the brute-force counts above), and scikit-learn's number."""
    from sklearn.metrics import roc_auc_score

    scores, member = case
    curve = roc(scores, member)
    tpr, fpr = np.append(curve.tp, curve.n_members) / curve.n_members, np.append(curve.fp, curve.n_nonmembers) / curve.n_nonmembers
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert np.isclose(roc_auc(member, scores), area, rtol=0, atol=1e-12)
    assert np.isclose(roc_auc(member, scores), roc_auc_score(member, scores), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="both members and non-members"):
        roc_auc(np.ones_like(member), scores)
    with pytest.raises(ValueError, match=r"finite scores \(1 are not\)"):
        roc_auc(member, np.where(np.arange(scores.size) == 0, np.nan, scores))


@SETTINGS
@given(st.integers(1, 400))
def test_false_positive_grid_runs_over_distinct_counts_from_one_to_all(n_nonmembers: int) -> None:
    grid = false_positive_grid(n_nonmembers)
    assert grid[0] == 1 and grid[-1] == n_nonmembers and np.all(np.diff(grid) > 0)


@SETTINGS
@given(labelled_scores())
def test_roc_on_grid_is_the_brute_force_best_rate_at_each_count(case: tuple[np.ndarray, np.ndarray]) -> None:
    scores, member = case
    target = AttackScores(scores, member, np.zeros(len(scores), np.int64))
    table = roc_on_grid({"a": AttackResult("a", target, target)}, n_points=5)
    n_nonmembers = int((~member).sum())
    counts = false_positive_grid(n_nonmembers, 5)
    np.testing.assert_array_equal(table["fpr"], counts / n_nonmembers)
    assert table["a"].tolist() == [_brute_best_tpr(scores, member, k) for k in counts]


@SETTINGS
@given(st.integers(1, 30), st.integers(1, 20), st.integers(0, 40), st.integers(0, 15), st.integers(0, 30), st.integers(0, 2**31 - 1))
def test_splits_are_disjoint_and_sized_for_any_sizes(members: int, test: int, extra_pool: int, reference: int, spare: int, seed: int) -> None:
    pool = 2 * members + extra_pool  # the schema asks a pool that trains a pair of shadows like the target
    params = DataParams(n_members=members, n_test=test, n_shadow_pool=pool, n_defender_reference=reference)
    n = 2 * members + test + pool + reference + spare
    splits = make_splits(n, params, np.random.default_rng(seed))
    roles = [splits.members, splits.nonmembers, splits.test, splits.shadow_pool, splits.defender_reference]
    assert [len(r) for r in roles] == [members, members, test, pool, reference]
    everything = np.concatenate(roles)
    assert len(set(everything.tolist())) == len(everything) and everything.min() >= 0 and everything.max() < n


@SETTINGS
@given(st.integers(1, 15), st.integers(1, 10), st.integers(0, 10), st.integers(0, 8), st.integers(0, 20), st.integers(0, 2**31 - 1))
def test_splits_around_a_trained_model_keep_its_rows_as_the_members_only(
    trained: int, test: int, extra_pool: int, reference: int, spare: int, seed: int
) -> None:
    pool = 2 * trained + extra_pool
    reference = min(reference, pool - trained)
    n = 2 * trained + test + pool + reference + spare
    rng = np.random.default_rng(seed)
    marked = np.zeros(n, bool)
    marked[rng.choice(n, trained, replace=False)] = True
    params = DataParams(n_members=1, n_test=test, n_shadow_pool=pool, n_defender_reference=reference)
    splits = make_splits(n, params, rng, trained=marked)
    assert sorted(splits.members.tolist()) == np.flatnonzero(marked).tolist()
    others = [splits.nonmembers, splits.test, splits.shadow_pool, splits.defender_reference]
    assert [len(r) for r in others] == [trained, test, pool, reference]
    rest = np.concatenate(others)
    assert len(set(rest.tolist())) == len(rest) and not marked[rest].any()


@SETTINGS
@given(st.integers(1, 8), st.integers(1, 12), st.integers(0, 10), st.integers(0, 6), st.integers(0, 2**31 - 1))
def test_paired_keep_and_defender_masks_are_disjoint_for_any_sizes(pairs: int, train: int, spare: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_points = 2 * train + spare + size
    keep = paired_keep(n_points, train, 2 * pairs, rng)
    assert (keep.sum(axis=1) == train).all() and keep.sum(axis=0).max() <= pairs
    assert not np.any(keep[0::2] & keep[1::2])
    eligible = np.arange(n_points) >= n_points - spare - size  # the last points, some of them trained on
    if (eligible & ~keep).sum(axis=1).min() >= size:
        mask = defender_mask(keep, eligible, size, rng)
        assert (mask.sum(axis=1) == size).all() and not np.any(mask & keep) and not np.any(mask & ~eligible)


@SETTINGS
@given(st.integers(5, 40), st.integers(5, 40), st.floats(0.0, 3.0), st.integers(0, 2**31 - 1))
def test_auc_interval_contains_the_sample_auc(n_members: int, n_nonmembers: int, shift: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    members, nonmembers = rng.normal(shift, 1, n_members).round(1), rng.normal(0, 1, n_nonmembers).round(1)
    scores = np.r_[members, nonmembers]
    is_member = np.r_[np.ones(n_members, bool), np.zeros(n_nonmembers, bool)]
    # array-likes as the signature allows: a list of scores, 0/1 membership
    low, high = bootstrap_intervals(scores.tolist(), is_member.astype(int), {}, seed=seed, n_resamples=400)["auc"]
    point = auc_of_rows(members[None, :], nonmembers[None, :])[0]
    assert low <= point <= high
