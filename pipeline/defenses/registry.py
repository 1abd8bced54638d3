"""Registry of defenses by the `type` written in `params.yaml`.

Each entry names the `Defense` class (settings and training) of one type.
Adding a defense is one module with its class and one line here. Only the
params check imports this module: it writes each run defense's resolved
class and settings to `data/validated/defenses/<name>.json`, from which the
defense's stages load it (`base.load_class`), so they depend on that defense's
code only and never on this list.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pipeline.config import describe_errors
from pipeline.core.errors import PipelineError
from pipeline.defenses.base import Defense, load_class

REGISTRY: dict[str, str] = {
    "dropout": "pipeline.defenses.regularization:DropoutDefense",
    "l2": "pipeline.defenses.regularization:L2Defense",
    "label_smoothing": "pipeline.defenses.regularization:LabelSmoothingDefense",
    "early_stopping": "pipeline.defenses.early_stopping:EarlyStoppingDefense",
    "dp_sgd": "pipeline.defenses.dp_sgd.defense:DpSgdDefense",
    "adversarial_regularization": "pipeline.defenses.adversarial:AdversarialRegularizationDefense",
    "selena": "pipeline.defenses.selena:SelenaDefense",
    "relaxloss": "pipeline.defenses.relaxloss:RelaxLossDefense",
    "memguard": "pipeline.defenses.output:MemGuardDefense",
    "top_k": "pipeline.defenses.output:TopKDefense",
    "rounding": "pipeline.defenses.output:RoundingDefense",
    "label_only": "pipeline.defenses.output:LabelOnlyDefense",
    "ensemble": "pipeline.defenses.ensembling:EnsembleDefense",
}


def parse_defense(name: str, block: dict[str, Any]) -> tuple[str, Defense]:
    """Validate `defenses.<name>` against its type's class: the class's entry and the settings.

    Raises a PipelineError with one line per problem, naming the key.
    """
    kind = block.get("type")
    if kind not in REGISTRY:
        raise PipelineError(
            f"params.yaml: defenses.{name}.type: unknown defense type {kind!r}; known types: {', '.join(REGISTRY)}"
        )
    entry = REGISTRY[kind]
    try:
        return entry, load_class(entry).model_validate(block)
    except ValidationError as error:
        raise PipelineError(describe_errors(error, "params.yaml", f"defenses.{name}")) from None
