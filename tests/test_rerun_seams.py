"""Edits rerun only what they can change: a report comment, a new attack, a new defense, in a real `dvc repro`.

Each test edits its own copy of scenario `trimmed` (tests/scenarios.py) as
a contributor would (the files the contributor's guide names, then
`python -m pipeline.tools.dvc_deps`), checks that `dvc status` names no
training stage, and then that `dvc repro` runs exactly the expected
stages ("Running stage '...'" lines):

- a comment in a reporting module: only `report`;
- a new attack (its module with a `Settings` block, its registry line, its
  name in `attack.enabled` and its `attack.<module>` block): `validate`,
  the attack stages and `report`;
- a new defense (its `Defense` class, its registry line, its block under
  `defenses` and its name in `defense.run`): `validate`, its own
  `defend@` and `attack_defense@` stages and `report`.
"""

from __future__ import annotations

import pytest
from scenarios import Sandbox, attack_stages, is_training_stage, ran_stages

pytestmark = pytest.mark.slow

NEW_ATTACK = '''"""Scaled loss threshold: the loss attack's score times a positive factor (a copy of `threshold`)."""

from __future__ import annotations

from pydantic import Field, StrictFloat

from pipeline.attacks.params import AttackParams
from pipeline.attacks.statistics import log_true_prob, score_with
from pipeline.config import StrictModel
from pipeline.core.types import AttackInput, AttackResult


class Settings(StrictModel):
    """`attack.scaled_loss`: the factor."""

    scale: StrictFloat = Field(1.0, gt=0)


def run(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    scale = params.scaled_loss.scale
    return score_with("scaled_loss", data, lambda logits, labels: scale * log_true_prob(logits, labels))
'''

NEW_DEFENSE = '''"""Weight decay: an L2 penalty on every kernel, under its own type (a copy of `regularization.L2Defense`)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import Field, StrictFloat

from pipeline.defenses.base import DefendedModels, Defense, TrainingJob, from_stack, train_plain


class WeightDecayDefense(Defense):
    """L2 weight penalty on every kernel."""

    type: Literal["weight_decay"]
    weight: StrictFloat = Field(1e-2, gt=0)

    def train(self, job: TrainingJob) -> DefendedModels:
        recipe = dataclasses.replace(job.recipe, l2=self.weight)
        return from_stack(train_plain(dataclasses.replace(job, recipe=recipe)))
'''


def _add_registry_line(box: Sandbox, registry: str, after: str, line: str) -> None:
    path = box.root / registry
    text = path.read_text()
    assert after in text
    path.write_text(text.replace(after, f"{after}\n{line}", 1))


def _status_then_repro(box: Sandbox) -> tuple[set[str], set[str]]:
    """The stages `dvc status` names after the edit (dvc.yaml's code deps regenerated first), and those `dvc repro` ran."""
    box.python("-m", "pipeline.tools.dvc_deps")
    pending = set(box.status())
    return pending, ran_stages(box.repro().stdout)


def test_a_comment_in_a_reporting_module_reruns_only_the_report(trimmed_copy: Sandbox) -> None:
    box = trimmed_copy
    module = box.root / "pipeline/reporting/markdown.py"
    module.write_text(module.read_text() + "# a contributor's note\n")
    pending, ran = _status_then_repro(box)
    assert pending == {"report"}
    assert ran == {"report"}


def test_a_new_attack_and_an_attack_setting_rerun_only_validate_the_attack_stages_and_the_report(trimmed_copy: Sandbox) -> None:
    box = trimmed_copy
    (box.root / "pipeline/attacks/scaled_loss.py").write_text(NEW_ATTACK)
    _add_registry_line(
        box, "pipeline/attacks/registry.py",
        '    "loss_threshold": "pipeline.attacks.threshold:run_loss",',
        '    "scaled_loss": "pipeline.attacks.scaled_loss:run",',
    )  # fmt: skip
    enabled = [*box.params()["attack"]["enabled"], "scaled_loss"]
    # with an existing attack's setting changed too, which the recipe audit's RMIA reads: every attack stage reruns
    box.set_params({"attack": {"enabled": enabled, "scaled_loss": {"scale": 2.0}, "rmia": {"gamma": 2.0}}})
    expected = {"validate", *attack_stages(box.params()), "report"}
    pending, ran = _status_then_repro(box)
    assert not {stage for stage in pending if is_training_stage(stage)}, pending
    assert pending == expected
    assert ran == expected
    for path in ("metrics/attacks.json", "metrics/defenses/dropout/attacks.json"):
        assert list(box.read_json(path)) == enabled, path
    loss, scaled = (box.read_json("metrics/attacks.json")[name] for name in ("loss_threshold", "scaled_loss"))
    assert scaled["auc"] == loss["auc"]  # a positive factor ranks the points as the loss does


def test_a_new_defense_reruns_only_validate_its_own_stages_and_the_report(trimmed_copy: Sandbox) -> None:
    box = trimmed_copy
    (box.root / "pipeline/defenses/weight_decay.py").write_text(NEW_DEFENSE)
    _add_registry_line(
        box, "pipeline/defenses/registry.py",
        '    "l2": "pipeline.defenses.regularization:L2Defense",',
        '    "weight_decay": "pipeline.defenses.weight_decay:WeightDecayDefense",',
    )  # fmt: skip
    run = [*box.params()["defense"]["run"], "weight_decay"]
    box.set_params({"defenses": {"weight_decay": {"type": "weight_decay", "weight": 0.01}}, "defense": {"run": run}})
    expected = {"validate", "defend@weight_decay", "attack_defense@weight_decay", "recipe@weight_decay", "recipe_attack", "report"}
    pending, ran = _status_then_repro(box)
    assert {stage for stage in pending if is_training_stage(stage)} == {"defend@weight_decay", "recipe@weight_decay"}, pending
    assert pending == expected
    assert ran == expected
    assert list(box.read_json("metrics/report.json")) == ["undefended", *run]
    assert box.read_json("metrics/defenses/weight_decay/utility.json")["test_accuracy"] > 0
