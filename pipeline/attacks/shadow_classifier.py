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
network), ``gradient_boosting`` (histogram gradient boosting),
``random_forest`` and ``logistic_regression``. ``auto`` (the default)
fits every family on the first half and keeps the one whose scores on the
held-out half are best for ``attack.tune_for``: a choice made on shadow
models only (`search_family`; the families fit side by side, one thread
each, on the cores the load average leaves idle: on a busy machine the
threads only fight over the interpreter lock). Score = the classifier's
member probability. Fitting the chosen family alone gives the
same result as ``auto``, so an attack stage that remembers the choice
(`pipeline.attacks.family_choice`) skips the search.

Histogram gradient boosting runs on one OpenMP thread: these fits are
small, and OpenMP's spinning threads made them tens of times slower on a
busy 2-core machine.

`seed_style_accuracy` reproduces how the original report measured this
attack (accuracy on the attack model's own training rows) beside the
honest measurement on the target, to show how inflated the former is.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Literal

import numpy as np
from pydantic import Field, StrictBool, StrictFloat, StrictInt

from pipeline.attacks.params import AttackParams
from pipeline.attacks.statistics import make_result, softmax
from pipeline.config import StrictModel
from pipeline.core.types import AttackInput, AttackResult, AttackScores, Signals
from pipeline.measures.roc import shadow_objective

Predictor = Callable[[np.ndarray], np.ndarray]
Features = Callable[[np.ndarray], np.ndarray]


FAMILIES = ("mlp", "gradient_boosting", "random_forest", "logistic_regression")


class Settings(StrictModel):
    """`attack.shadow_classifier`: `auto` picks the family on held-out shadow models; MLP settings apply to `mlp`."""

    per_class: StrictBool = True
    classifier: Literal["auto", "mlp", "gradient_boosting", "random_forest", "logistic_regression"] = "auto"
    hidden_units: StrictInt = Field(64, gt=0)
    epochs: StrictInt = Field(30, gt=0)
    batch_size: StrictInt = Field(32, gt=0)
    learning_rate: StrictFloat = Field(1e-3, gt=0)


def _fit_mlp(x: np.ndarray, y: np.ndarray, p: Settings, seed: int) -> Predictor:
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
        batch_size=min(p.batch_size, len(x)),  # scikit-learn would clip it too, with a warning each fit
        learning_rate_init=p.learning_rate,
        max_iter=p.epochs,
        shuffle=True,
        random_state=seed,
    )
    with warnings.catch_warnings():  # a fixed epoch budget, as in the report, not convergence
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return lambda q: model.predict_proba(q)[:, 1]


@contextmanager
def _one_openmp_thread() -> Iterator[None]:
    """OpenMP limited to one thread in the calling thread (OpenMP's thread count is per thread)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def _fit_gradient_boosting(x: np.ndarray, y: np.ndarray, seed: int) -> Predictor:
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(random_state=seed)
    with _one_openmp_thread():
        model.fit(x, y)

    def predict(q: np.ndarray) -> np.ndarray:
        with _one_openmp_thread():
            return model.predict_proba(q)[:, 1]

    return predict


def _fit_sklearn(x: np.ndarray, y: np.ndarray, family: str, seed: int) -> Predictor:
    if family == "gradient_boosting":
        return _fit_gradient_boosting(x, y, seed)
    if family == "logistic_regression":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=1000, random_state=seed)
    else:
        from sklearn.ensemble import RandomForestClassifier

        model = RandomForestClassifier(n_estimators=100, min_samples_leaf=5, random_state=seed, n_jobs=1)
    model.fit(x, y)
    return lambda q: model.predict_proba(q)[:, 1]


def fit_classifier(x: np.ndarray, y: np.ndarray, p: Settings, family: str, seed: int) -> Predictor:
    """One binary attack classifier of `family`; returns member probabilities for new rows."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=bool)
    return _fit_mlp(x, y, p, seed) if family == "mlp" else _fit_sklearn(x, y, family, seed)


class AttackModel:
    """Per-class classifiers (where a class has both labels) over a lazily fit global one."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        classes: np.ndarray,
        per_class: bool,
        p: Settings,
        family: str,
        seed: int,
    ):
        self._x, self._y, self._p, self._family, self._seed = x, y, p, family, seed
        self._global: Predictor | None = None
        self.per_class: dict[int, Predictor] = {}
        if per_class:
            for c in np.unique(classes):
                rows = classes == c
                if y[rows].any() and not y[rows].all():
                    self.per_class[int(c)] = fit_classifier(x[rows], y[rows], p, family, seed + 1 + int(c))

    def _global_model(self) -> Predictor:
        if self._global is None:
            self._global = fit_classifier(self._x, self._y, self._p, self._family, self._seed)
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


class _Rows:
    """The shadows' attack rows, split into the half that fits classifiers and the half that calibrates them."""

    def __init__(self, shadow: Signals, features: Features, seed: int) -> None:
        order = np.random.default_rng(seed).permutation(shadow.n_models)
        self._shadow, self._feats = shadow, features(shadow.logits)  # (K, P, F)
        self.fit_half, self.calibration_half = order[: shadow.n_models // 2], order[shadow.n_models // 2 :]

    def of(self, models: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, membership labels and true classes of the (model, pool point) pairs of `models`."""
        x = self._feats[models].reshape(-1, self._feats.shape[-1])
        return x, self._shadow.keep[models].ravel().astype(bool), np.tile(self._shadow.labels, len(models))


def _fit_and_calibrate(
    rows: _Rows, params: AttackParams, family: str, seed: int, per_class: bool
) -> tuple[AttackModel, AttackScores]:
    """A `family` attack model fit on one half of the shadows, and its scores on the other half."""
    model = AttackModel(*rows.of(rows.fit_half), per_class=per_class, p=params.shadow_classifier, family=family, seed=seed)
    x_cal, y_cal, c_cal = rows.of(rows.calibration_half)
    return model, AttackScores(model.predict(x_cal, c_cal), y_cal, c_cal)


def idle_cores() -> int:
    """Cores left idle by the load (this process counts as one of the load), at least 1."""
    return max(1, int((os.cpu_count() or 1) - os.getloadavg()[0] + 1))


def _best_of_every_family(
    rows: _Rows, params: AttackParams, seed: int, per_class: bool
) -> tuple[str, AttackModel, AttackScores]:
    """Every family fit side by side; the first in FAMILIES whose held-out scores are best for `tune_for`."""
    with ThreadPoolExecutor(max_workers=min(len(FAMILIES), idle_cores())) as pool:
        fitted = list(pool.map(lambda family: _fit_and_calibrate(rows, params, family, seed, per_class), FAMILIES))
    objectives = [shadow_objective(calibration, params.tune_for) for _, calibration in fitted]
    best = max(range(len(FAMILIES)), key=lambda i: (objectives[i], -i))
    return FAMILIES[best], *fitted[best]


# The attacks built on this classifier: their features, and whether `per_class` applies to them.
SEARCHED: dict[str, tuple[Features, bool]] = {"shadow_classifier": (posteriors, True), "ml_leaks": (top3_sorted, False)}


def uses_per_class(name: str, params: AttackParams) -> bool:
    """Whether attack `name` fits one classifier per class (``ml_leaks`` never does)."""
    return params.shadow_classifier.per_class if SEARCHED[name][1] else False


def search_family(name: str, shadow: Signals, params: AttackParams, seed: int) -> str:
    """The family that ``classifier: auto`` picks for attack `name` ("shadow_classifier" or "ml_leaks")."""
    features, _ = SEARCHED[name]
    return _best_of_every_family(_Rows(shadow, features, seed), params, seed, uses_per_class(name, params))[0]


def attack(name: str, data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    """Attack `name`: fit (or, with ``auto``, choose) the classifier on shadow rows, score the target."""
    features, _ = SEARCHED[name]
    rows, per_class = _Rows(data.shadow, features, seed), uses_per_class(name, params)
    family = params.shadow_classifier.classifier
    if family == "auto":
        _, model, calibration = _best_of_every_family(rows, params, seed, per_class)
    else:
        model, calibration = _fit_and_calibrate(rows, params, family, seed, per_class)
    target_values = model.predict(features(data.target.logits)[0], data.target.labels)
    return make_result(name, data, target_values, calibration)


def run(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    return attack("shadow_classifier", data, params, seed)


def run_ml_leaks(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    return attack("ml_leaks", data, params, seed)


def seed_style_accuracy(data: AttackInput, params: AttackParams, seed: int) -> dict[str, float]:
    """The original report's measurement beside the honest one, for one attack classifier.

    As the original did: one shadow model, one global MLP on its posteriors
    of its members and non-members (the pool), accuracy measured on those
    same training rows (threshold 0.5). Beside it, the same classifier at
    the same threshold on the target's members and non-members (balanced
    accuracy).
    """
    x = posteriors(data.shadow.logits[0])
    y = np.asarray(data.shadow.keep[0], dtype=bool)
    model = fit_classifier(x, y, params.shadow_classifier, "mlp", seed)
    called = model(posteriors(data.target.logits[0])) >= 0.5
    member = np.asarray(data.target.keep[0], dtype=bool)
    return {
        "accuracy_on_own_training_rows": float(np.mean((model(x) >= 0.5) == y)),
        "balanced_accuracy_on_target": float((np.mean(called[member]) + np.mean(~called[~member])) / 2),
    }
