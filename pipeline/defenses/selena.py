"""SELENA (Tang et al., USENIX Security 2022): Split-AI soft labels, then self-distillation.

For each of the job's K models (n training points each, M = `n_submodels`,
L = `n_excluded`):

1. Split-AI. Every training point of model k is excluded from exactly L of
   model k's M sub-models, chosen at random (`exclusion_matrix`); sub-model
   j trains on the points not excluded from it. The assignment is balanced:
   each sub-model excludes floor(nL/M) or ceil(nL/M) points, so sub-model
   training sets differ by at most one point, and when nL/M is not a whole
   number the sub-models one point short get one of their own training
   points twice (an appended duplicate row of x that only they train on),
   so every sub-model trains on the same number of rows, as one batched
   `train_stack` call over all K*M sub-models needs (row k*M + j is
   sub-model j of model k). Exclusions stay exact: no point is trimmed.
2. Soft labels. Each training point's soft label is the average softmax
   output of the L sub-models it was excluded from, i.e. only of
   sub-models that never saw it (`soft_labels`).
3. Self-distillation. The K final models, the ones released, train on
   their own training points with those soft labels as targets (the
   recipe's cross-entropy against probabilities, through `train_stack`'s
   `soft_targets`), with the job's recipe and architecture.

A member's soft label is a non-member prediction of models that did not
see it, so the final model learns member outputs that look like
non-member outputs. The sub-models use the job's recipe as is (same
epochs, batch size and learning rate). Seeds derive from `job.seed`.

history: the distilled models' curves (K, epochs); info: the sub-models'
training-set size and the soft labels' accuracy on the training points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, StrictInt, model_validator

from pipeline.core.errors import PipelineError
from pipeline.core.seeding import derive_seed, rng_for
from pipeline.defenses.base import DefendedModels, Defense, TrainingJob, from_stack
from pipeline.stack import TrainedStack, stack_logits, train_stack

__all__ = ["exclusion_matrix", "SplitAI", "split_ai", "soft_labels", "SelenaDefense"]


def exclusion_matrix(n_points: int, n_submodels: int, n_excluded: int, rng: np.random.Generator) -> np.ndarray:
    """(n_points, M) bool: row i marks the L sub-models point i is excluded from.

    Every row has exactly L True entries; column j (sub-model j) has c_j
    of them, with the c_j equal up to one (floor or ceil of nL/M, the ceil
    ones chosen at random). Points are assigned in random order; each
    takes the sub-models that must take it for the totals to stay
    reachable (remaining capacity equal to the number of points left), and
    the rest of its L at random, weighted by remaining capacity. That keeps
    the assignment random while meeting every count exactly: a 0/1 matrix
    with r rows of sum L and column sums c_j exists iff sum c_j = rL and
    every c_j <= r, which each step preserves.
    """
    m, l = n_submodels, n_excluded
    if not 1 <= l < m:
        raise PipelineError(f"need 1 <= n_excluded < n_submodels, got n_excluded={l}, n_submodels={m}")
    base, extra = divmod(n_points * l, m)
    capacity = np.full(m, base, np.int64)
    capacity[rng.choice(m, extra, replace=False)] += 1
    out = np.zeros((n_points, m), bool)
    for left, i in enumerate(rng.permutation(n_points)):
        remaining = n_points - left
        forced = np.flatnonzero(capacity == remaining)
        free = np.flatnonzero((capacity > 0) & (capacity < remaining))
        n_free = l - len(forced)
        weights = capacity[free] / capacity[free].sum() if n_free else None
        chosen = np.concatenate([forced, rng.choice(free, n_free, replace=False, p=weights)])
        out[i, chosen] = True
        capacity[chosen] -= 1
    return out


@dataclass(frozen=True)
class SplitAI:
    """The trained Split-AI of K models.

    `excluded` (K, M, N) bool: point i is a training point of model k that
    sub-model j of model k did not see. `keep` (K*M, N + D) bool: the
    sub-models' training rows over x plus the D appended duplicate rows
    `extra_rows` (indices into x). `stack`: the K*M trained sub-models.
    """

    excluded: np.ndarray
    keep: np.ndarray
    extra_rows: np.ndarray
    stack: TrainedStack


def split_ai(job: TrainingJob, defense: SelenaDefense) -> SplitAI:
    """Assign exclusions and train all K*M sub-models in one `train_stack` call.

    `SelenaDefense` already guarantees 1 <= n_excluded < n_submodels.
    """
    keep = np.asarray(job.keep, dtype=bool)
    k_models, n_total = keep.shape
    m, l = defense.n_submodels, defense.n_excluded
    rng = rng_for(job.seed, "selena", "exclusions")
    excluded = np.zeros((k_models, m, n_total), bool)
    for k in range(k_models):
        points = np.flatnonzero(keep[k])
        excluded[k][:, points] = exclusion_matrix(len(points), m, l, rng).T
    sub_keep = (keep[:, None, :] & ~excluded).reshape(k_models * m, n_total)
    counts = sub_keep.sum(axis=1)
    target = counts.max()
    extra_rows, extra_owner = [], []
    for row in np.flatnonzero(counts < target):  # one point short: repeat one of its own points
        extra_rows.append(int(rng.choice(np.flatnonzero(sub_keep[row]))))
        extra_owner.append(row)
    extra = np.zeros((k_models * m, len(extra_rows)), bool)
    extra[extra_owner, np.arange(len(extra_rows))] = True
    rows = np.asarray(extra_rows, dtype=np.int64)
    label = None if job.label is None else f"{job.label} (SELENA split-AI, {k_models * m} sub-models)"
    stack = train_stack(
        job.architecture, job.recipe,
        np.concatenate([job.x, job.x[rows]]), np.concatenate([job.y, job.y[rows]]),
        np.concatenate([sub_keep, extra], axis=1),
        seed=derive_seed(job.seed, "selena", "split_ai"), progress=label,
    )  # fmt: skip
    return SplitAI(excluded, np.concatenate([sub_keep, extra], axis=1), rows, stack)


def soft_labels(sub_probs: np.ndarray, excluded: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(K, N, C) soft labels: mean of the sub-models' probabilities where excluded.

    sub_probs (K, M, N, C) are the sub-models' softmax outputs on every
    point, excluded (K, M, N) as in `SplitAI`. A point excluded from no
    sub-model of model k (not one of its training points) gets its one-hot
    label, which training never reads.
    """
    weights = excluded.astype(np.float64)
    n_excl = weights.sum(axis=1)  # (K, N)
    summed = np.einsum("kmn,kmnc->knc", weights, sub_probs.astype(np.float64))
    onehot = np.eye(sub_probs.shape[-1])[y]
    out = np.where(n_excl[..., None] > 0, summed / np.maximum(n_excl, 1)[..., None], onehot[None])
    return out.astype(np.float32)


class SelenaDefense(Defense):
    """SELENA (Tang et al. 2022): Split-AI soft labels, then self-distillation."""

    type: Literal["selena"]
    n_submodels: StrictInt = Field(8, ge=2)
    n_excluded: StrictInt = Field(4, ge=1)

    @model_validator(mode="after")
    def _some_submodels_train(self) -> SelenaDefense:
        if self.n_excluded >= self.n_submodels:
            raise ValueError(
                f"n_excluded must be below n_submodels (got n_excluded={self.n_excluded}, "
                f"n_submodels={self.n_submodels})"
            )
        return self

    def train(self, job: TrainingJob) -> DefendedModels:
        """SELENA: Split-AI soft labels for every model's training points, then distillation."""
        from scipy.special import softmax  # on use: stage validate imports the defenses for their settings only

        split = split_ai(job, self)
        k_models, m, n_total = split.excluded.shape
        logits = stack_logits(split.stack, job.x).reshape(k_models, m, n_total, -1)
        soft = soft_labels(softmax(logits.astype(np.float64), axis=-1), split.excluded, np.asarray(job.y))
        keep = np.asarray(job.keep, dtype=bool)
        label = None if job.label is None else f"{job.label} (SELENA distillation)"
        stack = train_stack(
            job.architecture, job.recipe, job.x, job.y, keep, seed=derive_seed(job.seed, "selena", "distill"),
            eval_data=job.eval_data, progress=label, soft_targets=soft,
        )  # fmt: skip
        soft_acc = float(np.mean((soft.argmax(-1) == np.asarray(job.y)[None])[keep]))
        return from_stack(
            stack,
            {
                "selena_submodel_points": float(split.keep.sum(axis=1)[0]),
                "selena_soft_label_accuracy": soft_acc,
            },
        )
