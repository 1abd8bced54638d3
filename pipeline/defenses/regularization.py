"""Regularization defenses: they shrink the train-test gap an attacker exploits."""

from __future__ import annotations

import dataclasses

from pipeline.config import DropoutDefense, L2Defense
from pipeline.ensemble import Recipe


def dropout(recipe: Recipe, defense: DropoutDefense) -> Recipe:
    """Dropout after the hidden layer, as in the original report (rate 0.5)."""
    return dataclasses.replace(recipe, dropout=defense.rate)


def l2(recipe: Recipe, defense: L2Defense) -> Recipe:
    """An L2 penalty on every kernel."""
    return dataclasses.replace(recipe, l2=defense.weight)
