"""Output (prediction-time) defenses: the network is trained plainly, its outputs post-processed.

Each defense is an `OutputDefense` whose `release` is a pure NumPy
transform of a ``(..., C)`` logit array into the vector a querying party
receives, returned as float32 log-probabilities; its `train` trains the
job's K models with `train_plain` and applies `release` in `observe`.
`network(k)` is the plain trained network (softmax output): in deployment
`release` is a wrapper around it, applied to the network's logits
(``keras_logits(network, x)``).

What is released
----------------
Every transform works on p = softmax(logits) in float64 and on the model's
predicted label l = argmax(logits) (the first index on an exact tie, as
NumPy's argmax), and returns ``encode(q, l)`` for a released probability
vector q:

    encode(q, l)_c = log(max(q_c, PROB_FLOOR))          with PROB_FLOOR = 1e-12,
    then, if needed, z_l := max_{c != l} z_c + LABEL_MARGIN   (LABEL_MARGIN = 1e-4 nats).

* Zeros (and any q_c < 1e-12) are released as log(1e-12) ~ -27.63, so every
  value is finite. The floor is far below any value the transforms set on
  purpose, and it gives the attacks' statistics a fixed reference level:
  with k = 1 top-k, for instance, phi = z_y - logsumexp(z_{c != y}) is
  log p_top - log((C - 1) 1e-12), so the released top probability is
  still visible to an attacker, as it should be.
* The released label is the model's: z_l is raised, only where q leaves it
  tied with (or within 1e-4 nats of) another class, to 1e-4 nats above
  every other entry. So argmax of the released vector equals argmax of the
  logits always, also after the float32 cast (float32 spacing is below
  2e-6 on [-28, 0]). This is the label an API would release next to the
  vector; the change to q is below 0.01 % of the entry.
* Attacks read released vectors only through softmax, which renormalizes
  them; q itself is not renormalized by top-k and rounding (see there).

The transforms (probability level, l the predicted label)
---------------------------------------------------------
* **memguard** (MemGuard-style, after Jia et al. 2019, simplified): the
  defender moves the confidence vector toward an uninformative target that
  depends on the predicted label only,

      t(l) = (1 - s) onehot(l) + s / (C - 1) (1 - onehot(l)),   s = min(B / 2, (C - 1) / (2C)),

  the one-hot of the label smoothed by L1 distance B (capped at half way to
  uniform, so t's top entry stays the label with t_l >= (C + 1) / (2C)):

      q = p + lam (t - p),   lam = min(1, B / ||t - p||_1)   (lam = 0 where p = t).

  So ||q - p||_1 <= B, q is a probability vector (a convex combination of
  two), and q's top class stays l: q_l - q_c = (1 - lam)(p_l - p_c) +
  lam (t_l - t_c) > 0. Every output within L1 distance B of t(l) is
  released as exactly t(l): confident outputs, where members and
  non-members differ, collapse to one vector, which carries only the label
  (as MemGuard's aim of an attack output of 0.5). Outputs farther away
  move B toward it. With B = 2 every output becomes t(l): label only.
  Unlike the original there is no attack classifier in the loop and no
  random noise: the transform is deterministic, so an adaptive attacker
  sees the same mechanism on its shadows.
* **top_k**: keep exactly k entries, the label and the k - 1 largest other
  probabilities (ties by lower class index), set the rest to 0; not
  renormalized (an API showing its top-k scores shows the model's own
  numbers); k >= C releases p unchanged. k = 1 keeps the top probability,
  unlike label_only.
* **rounding**: q = p rounded to `decimals` places (NumPy's round half to
  even on float64), not renormalized, so sum(q) may differ from 1 by up to
  C * 0.5 * 10^-decimals. Rounding is monotone, so the label's entry is
  never below another; where rounding ties it with another entry (or
  rounds every entry to 0, as decimals = 0 does when p_l < 0.5), the
  label margin above keeps the label. Zeros are released at the floor.
* **label_only**: q = onehot(l).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, StrictFloat, StrictInt

from pipeline.core.errors import PipelineError
from pipeline.defenses.base import DefendedModels, Defense, TrainingJob, train_plain
from pipeline.stack import stack_logits, to_keras

__all__ = [
    "PROB_FLOOR",
    "LOG_FLOOR",
    "LABEL_MARGIN",
    "softmax64",
    "predicted_label",
    "encode",
    "memguard_target",
    "memguard_probabilities",
    "top_k_probabilities",
    "round_probabilities",
    "label_only_probabilities",
    "memguard_release",
    "top_k_release",
    "rounding_release",
    "label_only_release",
    "OutputDefense",
    "MemGuardDefense",
    "TopKDefense",
    "RoundingDefense",
    "LabelOnlyDefense",
]

PROB_FLOOR = 1e-12
LOG_FLOOR = float(np.log(PROB_FLOOR))
LABEL_MARGIN = 1e-4  # nats; >> float32 spacing on [LOG_FLOOR, 0]


# --------------------------------------------------------------------------
# Shared numerics


def softmax64(logits: np.ndarray) -> np.ndarray:
    """softmax over the last axis, in float64."""
    from scipy.special import log_softmax  # on use: stage validate imports the defenses for their settings only

    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64), axis=-1))


def predicted_label(logits: np.ndarray) -> np.ndarray:
    """The model's predicted class, argmax of the logits (first index on ties)."""
    return np.argmax(np.asarray(logits), axis=-1)


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return (np.arange(n_classes) == np.asarray(labels)[..., None]).astype(np.float64)


def _labels_for(probs: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    return np.argmax(probs, axis=-1) if labels is None else np.asarray(labels)


def encode(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Released probabilities (..., C) and labels (...) as float32 log-probabilities.

    log(max(q, PROB_FLOOR)), with the label's entry raised where needed to
    LABEL_MARGIN nats above every other entry (see the module docstring).
    """
    z = np.log(np.maximum(np.asarray(probs, dtype=np.float64), PROB_FLOOR))
    labels = np.asarray(labels)[..., None]
    is_label = np.arange(z.shape[-1]) == labels
    best_other = np.max(np.where(is_label, -np.inf, z), axis=-1, keepdims=True)
    own = np.take_along_axis(z, labels, axis=-1)
    np.put_along_axis(z, labels, np.maximum(own, best_other + LABEL_MARGIN), axis=-1)
    return z.astype(np.float32)


# --------------------------------------------------------------------------
# Probability-level transforms: (..., C) probabilities -> (..., C) released probabilities


def memguard_target(labels: np.ndarray, n_classes: int, budget: float) -> np.ndarray:
    """t(l): onehot(l) smoothed by s = min(B/2, (C-1)/(2C)) of mass, spread on the other classes."""
    s = min(budget / 2.0, (n_classes - 1) / (2.0 * n_classes))
    onehot = _one_hot(labels, n_classes)
    return onehot * (1.0 - s) + (1.0 - onehot) * (s / (n_classes - 1))


def memguard_probabilities(
    probs: np.ndarray, budget: float, labels: np.ndarray | None = None
) -> np.ndarray:
    """q = p + min(1, B / ||t - p||_1) (t - p): at most B in L1 toward t(label)."""
    if budget < 0:
        raise PipelineError(f"memguard budget must be >= 0, got {budget}")
    p = np.asarray(probs, dtype=np.float64)
    t = memguard_target(_labels_for(p, labels), p.shape[-1], budget)
    dist = np.sum(np.abs(t - p), axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(dist > 0, np.minimum(1.0, budget / dist), 0.0)
    q = p + lam * (t - p)
    return np.where(lam >= 1.0, t, q)  # exactly t where the budget reaches it


def top_k_probabilities(probs: np.ndarray, k: int, labels: np.ndarray | None = None) -> np.ndarray:
    """The label's and the k-1 largest other probabilities kept, the rest 0; not renormalized."""
    if k < 1:
        raise PipelineError(f"top_k k must be >= 1, got {k}")
    p = np.asarray(probs, dtype=np.float64)
    n_classes = p.shape[-1]
    if k >= n_classes:
        return p.copy()
    is_label = _one_hot(_labels_for(p, labels), n_classes).astype(bool)
    # rank: the label first, then by decreasing probability, ties by lower index (stable sort)
    key = np.where(is_label, -np.inf, -p)
    order = np.argsort(key, axis=-1, kind="stable")[..., :k]
    kept = np.zeros(p.shape, bool)
    np.put_along_axis(kept, order, True, axis=-1)
    return np.where(kept, p, 0.0)


def round_probabilities(probs: np.ndarray, decimals: int) -> np.ndarray:
    """p rounded to `decimals` places (half to even); not renormalized."""
    if decimals < 0:
        raise PipelineError(f"rounding decimals must be >= 0, got {decimals}")
    return np.round(np.asarray(probs, dtype=np.float64), decimals)


def label_only_probabilities(probs: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """onehot(label)."""
    p = np.asarray(probs, dtype=np.float64)
    return _one_hot(_labels_for(p, labels), p.shape[-1])


# --------------------------------------------------------------------------
# Logit-level transforms: (..., C) logits -> (..., C) released float32 log-probabilities


def _release(logits: np.ndarray, transform: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise PipelineError(f"logits must have a class axis of size >= 2, got shape {logits.shape}")
    labels = predicted_label(logits)
    return encode(transform(softmax64(logits), labels), labels)


def memguard_release(logits: np.ndarray, budget: float) -> np.ndarray:
    return _release(logits, lambda p, l: memguard_probabilities(p, budget, l))


def top_k_release(logits: np.ndarray, k: int) -> np.ndarray:
    return _release(logits, lambda p, l: top_k_probabilities(p, k, l))


def rounding_release(logits: np.ndarray, decimals: int) -> np.ndarray:
    return _release(logits, lambda p, l: round_probabilities(p, decimals))


def label_only_release(logits: np.ndarray) -> np.ndarray:
    return _release(logits, lambda p, l: label_only_probabilities(p, l))


# --------------------------------------------------------------------------
# Defenses: plain training, released outputs post-processed


class OutputDefense(Defense):
    """A defense that trains plainly and post-processes what the network releases (`release`).

    It never changes the network, so it works for any architecture, a
    user's own included; `network(k)` is the plain network and `release`
    its deployment wrapper, applied to the network's logits.
    """

    needs_batched_trainer: ClassVar[bool] = False

    def release(self, logits: np.ndarray) -> np.ndarray:
        """(..., C) network logits -> (..., C) released float32 log-probabilities."""
        raise NotImplementedError

    def train(self, job: TrainingJob) -> DefendedModels:
        """Plain training; the released outputs are `release` of the network's logits."""
        stack = train_plain(job)
        return DefendedModels(
            observe=lambda x: self.release(stack_logits(stack, x)),
            network=lambda k: to_keras(stack, k),
            history=stack.history,
        )


class MemGuardDefense(OutputDefense):
    """MemGuard-style: perturb the confidence vector, never the predicted label."""

    type: Literal["memguard"]
    budget: StrictFloat = Field(0.5, gt=0, le=2)

    def release(self, logits: np.ndarray) -> np.ndarray:
        """Outputs moved at most `budget` (l1) toward t(label)."""
        return memguard_release(logits, self.budget)


class TopKDefense(OutputDefense):
    """Release only the k largest probabilities."""

    type: Literal["top_k"]
    k: StrictInt = Field(1, ge=1)

    def release(self, logits: np.ndarray) -> np.ndarray:
        """Only the k largest probabilities released."""
        return top_k_release(logits, self.k)


class RoundingDefense(OutputDefense):
    """Release probabilities rounded to `decimals` places."""

    type: Literal["rounding"]
    decimals: StrictInt = Field(1, ge=0)

    def release(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities released rounded to `decimals` places."""
        return rounding_release(logits, self.decimals)


class LabelOnlyDefense(OutputDefense):
    """Release the predicted label only."""

    type: Literal["label_only"]

    def release(self, logits: np.ndarray) -> np.ndarray:
        """Only the predicted label released (as a one-hot)."""
        return label_only_release(logits)
