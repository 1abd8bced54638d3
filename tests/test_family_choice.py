"""The shadow classifier's remembered family choice: equal to a fresh search, dropped when what it depends on changes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.attacks import family_choice, shadow_classifier
from pipeline.attacks.family_choice import choice_key, resolve_families, searched_attacks, with_family
from pipeline.attacks.registry import attack_params
from pipeline.core.types import AttackInput, Signals

SEEDS = {"shadow_classifier": 11, "ml_leaks": 12}
CODE = {"pipeline/attacks/shadow_classifier.py": "0" * 64}


def signals(n_models: int, n_points: int, seed: int) -> Signals:
    """Logits of `n_models` models on 3 classes, a point's own class a little higher when the model trained on it."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n_points)
    keep = rng.random((n_models, n_points)) < 0.5
    logits = rng.normal(size=(n_models, n_points, 3)).astype(np.float32)
    logits[:, np.arange(n_points), labels] += 1.0 + 1.5 * keep
    return Signals(logits=logits, keep=keep, labels=labels, index=np.arange(n_points))


@pytest.fixture(scope="module")
def data() -> AttackInput:
    shadow, target = signals(4, 90, 0), signals(1, 60, 1)
    return AttackInput(shadow=shadow, target=target, shadow_on_candidates=shadow.logits[:, :60])


def params(**shadow_classifier: object):
    block = {"hidden_units": 8, "epochs": 5, **shadow_classifier}
    return attack_params({"enabled": ["shadow_classifier", "ml_leaks", "loss_threshold"], "shadow_classifier": block})


def test_the_remembered_choice_equals_a_fresh_search_and_skips_it(data: AttackInput, monkeypatch: pytest.MonkeyPatch) -> None:
    p = params()
    overrides, choices = resolve_families(data.shadow, p, SEEDS, CODE, {})
    assert set(overrides) == set(choices) == {"shadow_classifier", "ml_leaks"}
    for name, choice in choices.items():
        assert choice["family"] == shadow_classifier.search_family(name, data.shadow, p, SEEDS[name])
        assert overrides[name].shadow_classifier.classifier == choice["family"]
    monkeypatch.setattr(family_choice, "search_family", lambda *args: pytest.fail("searched again"))
    again, remembered = resolve_families(data.shadow, p, SEEDS, CODE, choices)
    assert remembered == choices and again == overrides


@pytest.mark.parametrize("name", ["shadow_classifier", "ml_leaks"])
def test_the_chosen_family_alone_scores_exactly_as_the_search(data: AttackInput, name: str) -> None:
    p = params()
    family = shadow_classifier.search_family(name, data.shadow, p, SEEDS[name])
    searched = shadow_classifier.attack(name, data, p, SEEDS[name])
    alone = shadow_classifier.attack(name, data, with_family(p, family), SEEDS[name])
    assert np.array_equal(searched.target.scores, alone.target.scores)
    assert np.array_equal(searched.calibration.scores, alone.calibration.scores)


def changed_logits(shadow: Signals) -> Signals:
    logits = shadow.logits.copy()
    logits[0, 0, 0] += 1e-3
    return Signals(logits=logits, keep=shadow.keep, labels=shadow.labels, index=shadow.index)


def changed_keep(shadow: Signals) -> Signals:
    keep = shadow.keep.copy()
    keep[1, 2] = ~keep[1, 2]
    return Signals(logits=shadow.logits, keep=keep, labels=shadow.labels, index=shadow.index)


CHANGES = {
    "shadow logits": lambda s, p, seed, code: (changed_logits(s), p, seed, code),
    "shadow membership": lambda s, p, seed, code: (changed_keep(s), p, seed, code),
    "tune_for": lambda s, p, seed, code: (s, p.model_copy(update={"tune_for": "auc"}), seed, code),
    "classifier settings": lambda s, p, seed, code: (s, params(hidden_units=9), seed, code),
    "per_class": lambda s, p, seed, code: (s, params(per_class=False), seed, code),
    "seed": lambda s, p, seed, code: (s, p, seed + 1, code),
    "code": lambda s, p, seed, code: (s, p, seed, {**code, "pipeline/measures/roc.py": "1" * 64}),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_in_what_the_choice_depends_on_invalidates_it(
    data: AttackInput, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = params()
    _, choices = resolve_families(data.shadow, p, SEEDS, CODE, {})
    shadow, changed, seed, code = CHANGES[change](data.shadow, p, SEEDS["shadow_classifier"], CODE)
    assert choice_key("shadow_classifier", shadow, changed, seed, code) != choices["shadow_classifier"]["key"]
    searched = []
    monkeypatch.setattr(family_choice, "search_family", lambda name, *args: searched.append(name) or "mlp")
    _, renewed = resolve_families(shadow, changed, {**SEEDS, "shadow_classifier": seed}, code, choices)
    assert "shadow_classifier" in searched
    assert renewed["shadow_classifier"]["key"] != choices["shadow_classifier"]["key"]


def test_the_key_ignores_settings_the_choice_does_not_read(data: AttackInput) -> None:
    """Other attacks' settings (RMIA's gamma, say) leave the choice in place."""
    p = params()
    other = attack_params({**p.model_dump(), "rmia": {"gamma": 2.0}})
    assert choice_key("ml_leaks", data.shadow, p, 12, CODE) == choice_key("ml_leaks", data.shadow, other, 12, CODE)


def test_a_fixed_family_searches_nothing_and_a_bad_memory_is_searched_afresh(data: AttackInput) -> None:
    assert searched_attacks(params(classifier="logistic_regression")) == []
    assert resolve_families(data.shadow, params(classifier="mlp"), SEEDS, CODE, {}) == ({}, {})
    p = params()
    key = choice_key("ml_leaks", data.shadow, p, SEEDS["ml_leaks"], CODE)
    _, choices = resolve_families(data.shadow, p, SEEDS, CODE, {"ml_leaks": {"key": key, "family": "no_such_family"}})
    assert choices["ml_leaks"]["family"] in shadow_classifier.FAMILIES


def test_a_fixed_family_is_the_one_fitted(data: AttackInput) -> None:
    """Two fixed families score the target differently, and each as itself: the setting is not ignored."""
    scored = {
        family: shadow_classifier.attack("shadow_classifier", data, params(classifier=family), SEEDS["shadow_classifier"])
        for family in ("logistic_regression", "gradient_boosting")
    }
    linear, boosted = (scored[family].target.scores for family in ("logistic_regression", "gradient_boosting"))
    assert not np.allclose(linear, boosted)
    again = shadow_classifier.attack(
        "shadow_classifier", data, params(classifier="logistic_regression"), SEEDS["shadow_classifier"]
    )
    assert np.array_equal(again.target.scores, linear)
