"""Registry of defenses by the `type` written in `params.yaml`.

A training-time defense maps the base training recipe to a defended one;
adding a defense is one module plus one line here (and its params model in
`pipeline/config.py`).
"""

from __future__ import annotations

from typing import Callable

from pipeline.defenses import regularization
from pipeline.ensemble import Recipe

_REGISTRY: dict[str, Callable[[Recipe, object], Recipe]] = {
    "dropout": regularization.dropout,
    "l2": regularization.l2,
}


def apply_defense(recipe: Recipe, defense: object) -> Recipe:
    """The recipe with `defense` (a validated params model with a `type`) applied."""
    kind = getattr(defense, "type")
    if kind not in _REGISTRY:
        raise KeyError(f"unknown defense type {kind!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[kind](recipe, defense)
