"""Params validation: each bad key or value gives one error that names it.

`bad` runs what stage `validate` runs: the schema every stage reads
(`config`) and the checks that need the attack and defense registries
(`checks`).
"""

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.checks import check
from pipeline.config import flatten, load_params, parse_params
from pipeline.core.errors import PipelineError

DEFAULT = yaml.safe_load(Path("params.yaml").read_text())


def bad(mutate) -> str:
    raw = copy.deepcopy(DEFAULT)
    mutate(raw)
    with pytest.raises(PipelineError) as info:
        check(parse_params(raw))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_default_params_are_valid() -> None:
    checked = check(load_params("params.yaml"))
    assert checked.params.data.dataset == "digits"
    assert set(checked.defenses) >= {"dropout", "l2"}
    assert checked.attack.lira.fixed_variance is True  # each attack family's block, typed


def test_the_schema_every_stage_reads_names_no_attack_and_no_defense() -> None:
    """So adding either edits no file a training stage depends on (the seams of dvc.yaml)."""
    from pipeline.core.imports import static_closure
    from pipeline.tools.sandbox import PROJECT

    closure = static_closure(PROJECT, "pipeline.config")
    assert not [f for f in closure if f.startswith(("pipeline/attacks/", "pipeline/defenses/"))]


def test_several_problems_are_reported_together_one_line_each() -> None:
    raw = copy.deepcopy(DEFAULT)
    raw["attack"]["enabled"] = ["psychic"]
    raw["defenses"]["dropout"]["rate"] = 1.5
    with pytest.raises(PipelineError) as info:
        check(parse_params(raw))
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and "attack.enabled" in lines[0] and "defenses.dropout.rate" in lines[1]


def test_unknown_top_level_key() -> None:
    assert "params.yaml: epochs: unknown key" in bad(lambda r: r.update(epochs=3))


def test_unknown_nested_key() -> None:
    assert "target.epoch: unknown key" in bad(lambda r: r["target"].update(epoch=3))


def test_negative_size_names_key_and_value() -> None:
    message = bad(lambda r: r["data"].update(n_members=-5))
    assert "data.n_members" in message and "-5" in message


def test_odd_shadow_count() -> None:
    assert "shadows.n_models" in bad(lambda r: r["shadows"].update(n_models=3))


def test_unknown_attack_lists_known_ones() -> None:
    message = bad(lambda r: r["attack"].update(enabled=["shadow_classifier", "psychic"]))
    assert "attack.enabled" in message and "'psychic'" in message and "loss_threshold" in message


def test_unknown_defense_type() -> None:
    message = bad(lambda r: r["defenses"].update(magic={"type": "magic"}))
    assert "defenses.magic" in message and "dropout" in message


def test_defense_value_out_of_range() -> None:
    message = bad(lambda r: r["defenses"]["dropout"].update(rate=1.5))
    assert "defenses.dropout.rate:" in message
    assert "1.5" in message


def test_wrong_type() -> None:
    assert "target.epochs" in bad(lambda r: r["target"].update(epochs="many"))


def test_missing_params_file(tmp_path) -> None:
    with pytest.raises(PipelineError, match="not found"):
        load_params(tmp_path / "params.yaml")


def test_malformed_yaml(tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_params(path)


def test_flatten_gives_dotted_keys() -> None:
    flat = flatten(parse_params(DEFAULT))
    assert flat["target.epochs"] == DEFAULT["target"]["epochs"]
    assert flat["defenses.dropout.rate"] == 0.5


def test_lira_needs_four_shadows() -> None:
    def change(raw):
        raw["shadows"]["n_models"] = 2
        raw["attack"]["enabled"] = ["lira_offline"]

    message = bad(change)
    assert "shadows.n_models" in message and "lira_offline" in message and "(got 2)" in message


def test_defense_run_must_name_configured_defenses() -> None:
    message = bad(lambda r: r["defense"].update(run=["dropout", "nonexistent"]))
    assert "defense.run" in message and "'nonexistent'" in message


def test_canary_audits_name_defenses_that_run_and_fitting_guess_counts() -> None:
    message = bad(lambda r: r["defense"].update(run=["dropout"]))  # dp_sgd is still audited
    assert "canaries.defenses" in message and "'dp_sgd'" in message and "defense.run" in message
    message = bad(lambda r: r["canaries"].update(n=500))  # a guess count of 1000 is left over
    assert "canaries.guesses" in message and "500" in message
    message = bad(lambda r: r["canaries"].update(kind="gradient"))
    assert "canaries.kind" in message and "mislabeled" in message


def test_every_registered_defense_type_is_its_class_and_configured() -> None:
    import typing

    from pipeline.defenses.base import load_class
    from pipeline.defenses.registry import REGISTRY

    for kind, entry in REGISTRY.items():
        assert typing.get_args(load_class(entry).model_fields["type"].annotation) == (kind,)
    assert set(REGISTRY) == {d["type"] for d in DEFAULT["defenses"].values()}  # params.yaml shows each one


def test_selena_needs_training_submodels() -> None:
    message = bad(lambda r: r["defenses"]["selena"].update(n_excluded=9))
    assert message.startswith("params.yaml: defenses.selena: n_excluded must be below n_submodels")
    assert "n_excluded=9" in message


def test_dp_sgd_takes_one_noise_source() -> None:
    message = bad(lambda r: r["defenses"]["dp_sgd"].update(noise_multiplier=1.0, target_epsilon=4.0))
    assert "defenses.dp_sgd: give exactly one of noise_multiplier and target_epsilon" in message


def test_the_dp_baseline_names_configured_dp_sgd_defenses_once() -> None:
    message = bad(lambda r: r["recipe_audit"].update(dp_baseline=["dp_eps16", "nowhere"]))
    assert "recipe_audit.dp_baseline" in message and "'nowhere'" in message
    message = bad(lambda r: r["recipe_audit"].update(dp_baseline=["dp_sgd"]))  # already in defense.run
    assert "recipe_audit.dp_baseline" in message and "'dp_sgd' is listed twice" in message
    message = bad(lambda r: r["recipe_audit"].update(dp_baseline=["dropout_off"]) or r["defenses"].update(dropout_off={"type": "dropout"}))
    assert "recipe_audit.dp_baseline: 'dropout_off' is a dropout defense" in message


def test_the_recipe_audit_needs_even_counts() -> None:
    assert "recipe_audit.n_models" in bad(lambda r: r["recipe_audit"].update(n_models=7))
    assert "recipe_audit.n_canaries" in bad(lambda r: r["recipe_audit"].update(n_canaries=0))
