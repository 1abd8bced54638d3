"""Shadow-model attacks with a learned attack classifier.

`run` (``shadow_classifier``, Shokri et al. 2017): features are the raw
softmax posterior vector; with ``per_class`` one attack classifier per
true class, a class whose training rows hold only one label (or none)
falling back to one global classifier.
`run_ml_leaks` (``ml_leaks``, Salem et al. 2019): one global classifier on
the three largest posteriors, sorted descending. It reuses the
``attack.shadow_classifier`` block for the classifier and its training
recipe (``per_class`` does not apply).

Training rows: every (shadow model, pool point) pair, label = keep. The
shadows are split at random (by `seed`) into two halves: the classifier is
fit on one half's rows, and the other half's rows give the `calibration`
scores, so the threshold is chosen on scores of the same classifier on
shadow models it never saw. The same classifier then scores the target's
candidates. With K shadows each half has K/2 models.

Classifiers (scikit-learn, seeded): ``mlp`` (Dense(hidden_units, relu) ->
sigmoid, Adam, binary cross-entropy, `epochs` passes: the report's attack
network), ``logistic_regression`` and ``random_forest``.
Score = the classifier's member probability.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from pipeline.attacks._signals import make_result, softmax
from pipeline.config import AttackParams, ShadowClassifierParams
from pipeline.types import AttackInput, AttackResult, AttackScores

Predictor = Callable[[np.ndarray], np.ndarray]
Features = Callable[[np.ndarray], np.ndarray]


def _fit_mlp(x: np.ndarray, y: np.ndarray, p: ShadowClassifierParams, seed: int) -> Predictor:
    """Dense(hidden_units, relu) -> sigmoid, Adam on binary cross-entropy.

    scikit-learn's MLP is this exact network; on rows this small it trains
    many times faster than a Keras fit, whose cost is per-step overhead.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(
        hidden_layer_sizes=(p.hidden_units,),
        activation="relu",
        solver="adam",
        alpha=0.0,
        batch_size=p.batch_size,
        learning_rate_init=p.learning_rate,
        max_iter=p.epochs,
        shuffle=True,
        random_state=seed,
    )
    with warnings.catch_warnings():  # a fixed epoch budget, as in the report, not convergence
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return lambda q: model.predict_proba(q)[:, 1]


def _fit_sklearn(x: np.ndarray, y: np.ndarray, p: ShadowClassifierParams, seed: int) -> Predictor:
    if p.classifier == "logistic_regression":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=1000, random_state=seed)
    else:
        from sklearn.ensemble import RandomForestClassifier

        model = RandomForestClassifier(
            n_estimators=100, min_samples_leaf=5, random_state=seed, n_jobs=1
        )
    model.fit(x, y)
    return lambda q: model.predict_proba(q)[:, 1]


def fit_classifier(x: np.ndarray, y: np.ndarray, p: ShadowClassifierParams, seed: int) -> Predictor:
    """One binary attack classifier; returns member probabilities for new rows."""
    fit = _fit_mlp if p.classifier == "mlp" else _fit_sklearn
    return fit(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=bool), p, seed)


class AttackModel:
    """Per-class classifiers (where a class has both labels) over a lazily fit global one."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        classes: np.ndarray,
        per_class: bool,
        p: ShadowClassifierParams,
        seed: int,
    ):
        self._x, self._y, self._p, self._seed = x, y, p, seed
        self._global: Predictor | None = None
        self.per_class: dict[int, Predictor] = {}
        if per_class:
            for c in np.unique(classes):
                rows = classes == c
                if y[rows].any() and not y[rows].all():
                    self.per_class[int(c)] = fit_classifier(x[rows], y[rows], p, seed + 1 + int(c))

    def _global_model(self) -> Predictor:
        if self._global is None:
            self._global = fit_classifier(self._x, self._y, self._p, self._seed)
        return self._global

    def predict(self, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
        out = np.empty(len(x), dtype=np.float64)
        for c in np.unique(classes):
            rows = classes == c
            model = self.per_class.get(int(c)) or self._global_model()
            out[rows] = model(x[rows])
        return out


def posteriors(logits: np.ndarray) -> np.ndarray:
    return softmax(logits)


def top3_sorted(logits: np.ndarray) -> np.ndarray:
    return -np.sort(-softmax(logits), axis=-1)[..., :3]


def attack(
    name: str,
    data: AttackInput,
    p: ShadowClassifierParams,
    seed: int,
    features: Features,
    per_class: bool,
) -> AttackResult:
    shadow = data.shadow
    order = np.random.default_rng(seed).permutation(shadow.n_models)
    fit_half, calibration_half = order[: shadow.n_models // 2], order[shadow.n_models // 2 :]
    feats = features(shadow.logits)  # (K, P, F)

    def rows(models: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = feats[models].reshape(-1, feats.shape[-1])
        return x, shadow.keep[models].ravel().astype(bool), np.tile(shadow.labels, len(models))

    model = AttackModel(*rows(fit_half), per_class=per_class, p=p, seed=seed)
    x_cal, y_cal, c_cal = rows(calibration_half)
    calibration = AttackScores(model.predict(x_cal, c_cal), y_cal, c_cal)
    target_values = model.predict(features(data.target.logits)[0], data.target.labels)
    return make_result(name, data, target_values, calibration)


def run(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    p = params.shadow_classifier
    return attack("shadow_classifier", data, p, seed, posteriors, per_class=p.per_class)


def run_ml_leaks(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    return attack("ml_leaks", data, params.shadow_classifier, seed, top3_sorted, per_class=False)
