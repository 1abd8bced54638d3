"""The shadow classifier's family choice, made once per set of shadow signals.

With ``classifier: auto``, `shadow_classifier` and `ml_leaks` fit every
classifier family to keep the best on held-out shadows. That choice is a
function of the shadow signals, the attack's seed, `attack.tune_for`, the
`attack.shadow_classifier` block, the code that fits and compares the
families, and scikit-learn's and NumPy's versions; `choice_key` hashes
exactly those. An attack stage remembers each choice under its key (a
`persist: true` output), so a rerun for any other change (an RMIA setting,
say) fits the chosen family alone, which gives the same result as the
search: the search keeps the chosen family's model fit on the same rows.

Pure: the stage reads and writes the remembered choices and passes in the
code's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import numpy as np

from pipeline.attacks.params import AttackParams
from pipeline.attacks.shadow_classifier import FAMILIES, SEARCHED, search_family
from pipeline.core.types import Signals

SEARCH_MODULE = "pipeline.attacks.shadow_classifier"  # its import closure is the code a choice depends on


def searched_attacks(params: AttackParams) -> list[str]:
    """The enabled attacks that search a family (none unless ``classifier: auto``)."""
    if params.shadow_classifier.classifier != "auto":
        return []
    return [name for name in params.enabled if name in SEARCHED]


def choice_key(name: str, shadow: Signals, params: AttackParams, seed: int, code: Mapping[str, str]) -> str:
    """sha256 of everything attack `name`'s family choice depends on (`code`: file path -> sha256)."""
    import sklearn

    digest = hashlib.sha256()
    settings = {
        "attack": name,
        "seed": seed,
        "tune_for": params.tune_for,
        "shadow_classifier": params.shadow_classifier.model_dump(mode="json"),
        "code": dict(sorted(code.items())),
        "versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__},
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for array in (shadow.logits, shadow.keep, shadow.labels):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


def with_family(params: AttackParams, family: str) -> AttackParams:
    """`params` with the shadow classifier's family fixed to `family`."""
    chosen = params.shadow_classifier.model_copy(update={"classifier": family})
    return params.model_copy(update={"shadow_classifier": chosen})


def resolve_families(
    shadow: Signals,
    params: AttackParams,
    seeds: Mapping[str, int],
    code: Mapping[str, str],
    remembered: Mapping[str, Mapping[str, str]],
) -> tuple[dict[str, AttackParams], dict[str, dict[str, str]]]:
    """Each searching attack's params with its family fixed, and the choices to remember.

    `seeds` holds each attack's seed; a choice in `remembered` is used only
    where its key matches, anything else is searched afresh.
    """
    overrides, choices = {}, {}
    for name in searched_attacks(params):
        key = choice_key(name, shadow, params, seeds[name], code)
        known = remembered.get(name, {})
        if known.get("key") == key and known.get("family") in FAMILIES:
            family = known["family"]
        else:
            family = search_family(name, shadow, params, seeds[name])
        overrides[name] = with_family(params, family)
        choices[name] = {"key": key, "family": family}
    return overrides, choices
