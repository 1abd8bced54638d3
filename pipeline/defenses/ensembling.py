"""Model ensembling (the report's defense): each model is an average of m sub-models on disjoint data.

Each of the job's K models becomes an ensemble of m = `n_models`
sub-models. Model k's training points (``keep[k]``, n of them) are
shuffled with a generator seeded from the job's seed and cut into m parts
of s = n // m points each; the n - m*s remainder points are dropped
(trained on by no sub-model; they stay members of model k in the audit's
ground truth, which only makes the defense look no better than it is).
Sub-model j of model k trains on part j alone, with the job's recipe
unchanged (same epochs, batch size and learning rate, so fewer steps per
epoch). All K*m sub-models are trained as one `train_stack` call, sub-model
j of model k being row ``k*m + j``.

A member of model k was seen by one of its m sub-models only, so the
averaged output mixes one "member" output with m - 1 "non-member" ones,
which shrinks the member/non-member gap an attacker exploits (at a cost in
accuracy, as each sub-model sees 1/m of the data).

Released output: ``observe(x)[k] = log((1/m) sum_j softmax(z_kj(x)))``,
computed as logsumexp over the sub-models' log-softmax minus log m in
float64 (finite, exact), returned as float32 log-probabilities.
``network(k)`` is a Keras functional model: one input, the m sub-networks
(``to_keras`` models named ``member_<j>``, softmax outputs) and
``keras.layers.Average``; its predictions are exp(observe(x)[k]) and it
saves to / loads from a ``.keras`` file with no custom objects. It has no
"logits" layer, so read it with ``np.log(model.predict(x))``, not
`keras_logits`.

``history[key]`` is the mean over model k's m sub-models of their curves,
shape (K, epochs); so ``val_loss`` is the sub-models' mean loss, not the
ensemble's. ``info`` holds the part size and the dropped remainder count.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, StrictInt

from pipeline.core.errors import PipelineError
from pipeline.core.seeding import rng_for
from pipeline.core.tf_runtime import keras
from pipeline.defenses.base import DefendedModels, Defense, TrainingJob
from pipeline.stack import TrainedStack, stack_logits, to_keras, train_stack

__all__ = ["split_parts", "ensemble_log_probs", "mean_history", "ensemble_network", "EnsembleDefense"]


def split_parts(keep: np.ndarray, n_parts: int, seed: int) -> np.ndarray:
    """Sub-model keep matrix (K*m, N): row k*m + j is part j of keep[k]'s points.

    Each row of `keep` is shuffled (seeded) and cut into m equal parts of
    n // m points; the remainder is dropped. Parts of one model are
    disjoint; all rows have the same count, as `train_stack` needs.
    """
    keep = np.asarray(keep, dtype=bool)
    if n_parts < 1:
        raise PipelineError(f"defenses.*.n_models must be >= 1, got {n_parts}")
    n_models, n_points = keep.shape
    rng = rng_for(seed, "ensemble", "parts")
    out = np.zeros((n_models * n_parts, n_points), bool)
    for k in range(n_models):
        idx = np.flatnonzero(keep[k])
        size = len(idx) // n_parts
        if size == 0:
            raise PipelineError(
                f"ensemble: n_models={n_parts} sub-models need at least one point each, "
                f"but model {k} has only {len(idx)} training points"
            )
        parts = rng.permutation(idx)[: n_parts * size].reshape(n_parts, size)
        for j, part in enumerate(parts):
            out[k * n_parts + j, part] = True
    return out


def ensemble_log_probs(sub_logits: np.ndarray, n_parts: int) -> np.ndarray:
    """(K*m, N, C) sub-model logits -> (K, N, C) log of each ensemble's mean softmax."""
    from scipy.special import log_softmax, logsumexp  # on use: stage validate imports the defenses for their settings only

    z = np.asarray(sub_logits, dtype=np.float64)
    k_total, n, c = z.shape
    if k_total % n_parts:
        raise PipelineError(f"{k_total} sub-models do not split into ensembles of {n_parts}")
    logp = log_softmax(z, axis=-1).reshape(k_total // n_parts, n_parts, n, c)
    return (logsumexp(logp, axis=1) - np.log(n_parts)).astype(np.float32)


def mean_history(history: dict[str, np.ndarray], n_parts: int) -> dict[str, np.ndarray]:
    """(K*m, epochs) sub-model curves -> (K, epochs) means over each ensemble's m sub-models."""
    return {key: v.reshape(-1, n_parts, v.shape[-1]).mean(axis=1) for key, v in history.items()}


def ensemble_network(stack: TrainedStack, k: int, n_parts: int) -> keras.Model:
    """Ensemble k of the stack as one Keras model: Average of m softmax sub-networks."""
    if not 0 <= k < stack.n_models // n_parts:
        raise PipelineError(f"ensemble index {k} out of range for {stack.n_models // n_parts} ensembles")
    inputs = keras.Input(shape=tuple(stack.architecture.input_shape), name="input")
    outputs = []
    for j in range(n_parts):
        member = to_keras(stack, k * n_parts + j)
        member.name = f"member_{j}"
        outputs.append(member(inputs))
    averaged = keras.layers.Average(name="average")(outputs)
    return keras.Model(inputs, averaged, name=f"ensemble_of_{n_parts}")


class EnsembleDefense(Defense):
    """The report's ensembling: models on disjoint parts of the members, outputs averaged."""

    needs_batched_trainer: ClassVar[bool] = False  # sub-models of any architecture, averaged

    type: Literal["ensemble"]
    n_models: StrictInt = Field(4, ge=2)

    def train(self, job: TrainingJob) -> DefendedModels:
        """Each of the job's K models as an ensemble of `n_models` sub-models on disjoint parts."""
        m = self.n_models
        sub_keep = split_parts(job.keep, m, job.seed)
        stack = train_stack(
            job.architecture, job.recipe, job.x, job.y, sub_keep,
            seed=job.seed, eval_data=job.eval_data, progress=job.label,
        )  # fmt: skip
        n_train = int(np.asarray(job.keep[0]).sum())
        size = int(sub_keep[0].sum())
        return DefendedModels(
            observe=lambda x: ensemble_log_probs(stack_logits(stack, x), m),
            network=lambda k: ensemble_network(stack, k, m),
            history=mean_history(stack.history, m),
            info={"ensemble_part_size": float(size), "ensemble_dropped_points": float(n_train - m * size)},
        )
