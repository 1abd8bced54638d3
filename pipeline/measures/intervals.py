"""95% intervals on an attack's AUC and TPRs at fixed false-positive counts.

Stratified percentile bootstrap: each resample draws the target's members
and its non-members with replacement, each group keeping its size, and
recomputes every statistic; the interval is the 2.5th to 97.5th
percentile over the resamples. The same seed gives the same intervals.
TPR "at k false positives" is the share of members scoring strictly above
the (k+1)-th highest non-member score: the best TPR of any threshold that
flags at most k non-members, the same operating point as
`evaluation.tpr_at_fpr`.
"""

from __future__ import annotations

import numpy as np

N_RESAMPLES = 1000
CONFIDENCE = 0.95


def auc_of_rows(members: np.ndarray, nonmembers: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of each row of (B, n_m) member and (B, n_n) non-member scores, ties counted half."""
    from scipy.stats import rankdata  # imported where intervals are computed, not by every user of this module

    n_m, n_n = members.shape[1], nonmembers.shape[1]
    ranks = rankdata(np.concatenate([members, nonmembers], axis=1), axis=1)
    return (ranks[:, :n_m].sum(axis=1) - n_m * (n_m + 1) / 2) / (n_m * n_n)


def tpr_at_false_positives(members: np.ndarray, nonmembers: np.ndarray, k: int) -> np.ndarray:
    """Per row, the share of members above the (k+1)-th highest non-member (1 when k >= n_n)."""
    if k >= nonmembers.shape[1]:
        return np.ones(len(members))
    cut = -np.partition(-nonmembers, k, axis=1)[:, k]
    return np.mean(members > cut[:, None], axis=1)


def bootstrap_intervals(
    scores: np.ndarray,
    is_member: np.ndarray,
    false_positives: dict[str, int],
    seed: int,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> dict[str, tuple[float, float]]:
    """Intervals for "auc" and for the TPR at each named count of false positives."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member, dtype=bool)
    members, nonmembers = s[y], s[~y]
    rng = np.random.default_rng(seed)
    m = members[rng.integers(0, members.size, (n_resamples, members.size))]
    n = nonmembers[rng.integers(0, nonmembers.size, (n_resamples, nonmembers.size))]
    samples = {"auc": auc_of_rows(m, n)}
    samples |= {name: tpr_at_false_positives(m, n, k) for name, k in false_positives.items()}
    tail = 100 * (1 - confidence) / 2
    return {name: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) for name, v in samples.items()}
