"""Typed records passed between the library modules and the stages."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Features and integer labels of the whole dataset, in one array each."""

    x: np.ndarray  # (N, ...) float32
    y: np.ndarray  # (N,) int64, values in [0, n_classes)
    n_classes: int
    name: str
    trained: np.ndarray | None = None  # (N,) bool: the rows that trained a given model (target.model), if any


@dataclass(frozen=True)
class Splits:
    """Disjoint index arrays into a `Dataset`, one per role.

    `members` train the target, `nonmembers` (same count) are held out from
    it, `test` measures utility, `shadow_pool` is the attacker's own data,
    `defender_reference` is non-member data the defender holds (used only by
    defenses that need it, such as adversarial regularization).
    """

    members: np.ndarray
    nonmembers: np.ndarray
    test: np.ndarray
    shadow_pool: np.ndarray
    defender_reference: np.ndarray

    @property
    def candidates(self) -> np.ndarray:
        """The points an attack is scored on: members first, then non-members."""
        return np.concatenate([self.members, self.nonmembers])


@dataclass(frozen=True)
class Signals:
    """Outputs of K models on a set of points, and which model saw which point.

    `logits[k, j]` is model k's pre-softmax output on point `index[j]`;
    `keep[k, j]` is True iff that point was in model k's training set.
    """

    logits: np.ndarray  # (K, P, C) float32
    keep: np.ndarray  # (K, P) bool
    labels: np.ndarray  # (P,) int64 true classes
    index: np.ndarray  # (P,) int64 positions in the Dataset

    @property
    def n_models(self) -> int:
        return int(self.logits.shape[0])


@dataclass(frozen=True)
class AttackScores:
    """Per-point membership scores (higher means member) with the ground truth."""

    scores: np.ndarray  # (P,) float64
    is_member: np.ndarray  # (P,) bool
    labels: np.ndarray  # (P,) int64 true classes, for per-class slices


@dataclass(frozen=True)
class AttackResult:
    """One attack's scores on the target, and on shadow data for calibration.

    `calibration` holds scores with known membership that come from shadow
    or reference models only; decision thresholds are chosen on it, never
    on `target`.
    """

    name: str
    target: AttackScores
    calibration: AttackScores


@dataclass(frozen=True)
class AttackMetrics:
    """How well one attack separates the target's members from non-members.

    A TPR at a fixed FPR is None when there are too few non-members to
    measure that FPR ("not measurable"), never a fake 0.

    `threshold` is chosen on the attack's calibration (shadow) scores;
    `balanced_accuracy` and `ppv` (precision of the "member" calls, None if
    nothing is called a member) are measured on the target at it.
    `call_tpr` / `call_fpr` are the target's rates at the calibration
    threshold for 1% FPR (the calls behind PPV at realistic priors).
    `epsilon_lb` is the empirical epsilon lower bound, valid at
    `epsilon_lb_confidence` (`pipeline.measures.bounds`). `intervals` maps "auc" and
    TPR keys to 95% bootstrap intervals. `shadow_auc` and
    `shadow_tpr_at_1pct_fpr` are measured on the calibration scores: what
    the attacker can know before looking at the target. `auc_per_class`
    maps each true class to its AUC, None where the class has only members
    or only non-members.
    """

    auc: float
    advantage: float
    balanced_accuracy: float
    threshold: float
    tpr_at_fpr: dict[float, float | None] = field(default_factory=dict)
    n_members: int = 0
    n_nonmembers: int = 0
    ppv: float | None = None
    epsilon_lb: float = 0.0
    epsilon_lb_confidence: float = 0.95
    auc_per_class: dict[int, float | None] = field(default_factory=dict)
    tpr_at_lowest_fpr: float = 0.0
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    shadow_auc: float = 0.5
    shadow_tpr_at_1pct_fpr: float | None = None
    call_tpr: float = 0.0
    call_fpr: float = 0.0


@dataclass(frozen=True)
class AttackInput:
    """Everything an attack may read: saved model outputs, never models.

    `shadow` holds the K shadow models on the attacker's pool (each trained
    on as many points as the target, a pool point IN for at most half of
    them, exactly half with the default pool size); `target` holds the target (K=1) on
    the candidates, its `keep` row being the ground-truth membership that
    only the evaluator looks at; `shadow_on_candidates` holds the shadow
    models' logits on the same candidates, none of which they trained on
    (the OUT models of offline LiRA and RMIA). `reference`, when present,
    holds reference models trained like the target on random halves of the
    candidates, each candidate IN for exactly half of them (online LiRA's
    stronger attacker, who holds the candidate records). The robustness
    arrays serve the augmentation label-only attack (`pipeline.training.augment`).
    """

    shadow: Signals
    target: Signals
    shadow_on_candidates: np.ndarray  # (K, n_candidates, C) float32
    reference: Signals | None = None
    shadow_robustness: np.ndarray | None = None  # (S, K, P) share of perturbed pool copies labelled right, per setting
    target_robustness: np.ndarray | None = None  # (S, 1, n_candidates) the same for the target
