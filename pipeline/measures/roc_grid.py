"""ROC curves on a shared grid of false-positive counts, and their CSV form (DVC's log-log plot, the report's figure)."""

from __future__ import annotations

import numpy as np

from pipeline.core.types import AttackResult
from pipeline.measures.roc import roc


def false_positive_grid(n_nonmembers: int, n_points: int = 60) -> np.ndarray:
    """Log-spaced counts of false positives from 1 to all non-members (distinct integers).

    Operating points are defined by counts, not by rounded rates, so the
    leftmost point is exactly "at most one non-member wrongly flagged".
    """
    return np.unique(np.round(np.geomspace(1, max(n_nonmembers, 1), n_points)).astype(np.int64))


def roc_on_grid(results: dict[str, AttackResult], n_points: int = 60) -> dict[str, np.ndarray]:
    """Each attack's TPR at FPR = k / n_nonmembers for the grid's counts k (the best TPR with at most k false positives)."""
    table: dict[str, np.ndarray] = {}
    for name, result in results.items():
        curve = roc(result.target.scores, result.target.is_member)
        counts = false_positive_grid(curve.n_nonmembers, n_points)
        table.setdefault("fpr", counts / curve.n_nonmembers)
        table[name] = curve.tp[np.searchsorted(curve.fp, counts, side="right") - 1] / curve.n_members
    return table


def roc_csv(table: dict[str, np.ndarray]) -> str:
    """ROC points in long form (attack, fpr, tpr), the shape DVC's plot templates group by."""
    lines = ["attack,fpr,tpr"]
    for attack, tpr in table.items():
        if attack != "fpr":
            lines += [f"{attack},{f:.6g},{t:.6g}" for f, t in zip(table["fpr"], tpr)]
    return "\n".join(lines) + "\n"


def parse_roc_csv(text: str) -> dict[str, np.ndarray]:
    """Inverse of `roc_csv`: the wide table {"fpr": grid, attack: tpr, ...}."""
    rows = [line.split(",") for line in text.splitlines()[1:] if line]
    attacks = list(dict.fromkeys(row[0] for row in rows))
    table = {"fpr": np.array([float(r[1]) for r in rows if r[0] == attacks[0]])}
    for attack in attacks:
        table[attack] = np.array([float(r[2]) for r in rows if r[0] == attack])
    return table
