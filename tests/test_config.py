"""Params validation: each bad key or value gives one error that names it."""

import copy

import pytest
import yaml

from pipeline.config import flatten, load_params, parse_params
from pipeline.core.errors import PipelineError

DEFAULT = yaml.safe_load(open("params.yaml"))


def bad(mutate) -> str:
    raw = copy.deepcopy(DEFAULT)
    mutate(raw)
    with pytest.raises(PipelineError) as info:
        parse_params(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_default_params_are_valid() -> None:
    params = load_params("params.yaml")
    assert params.data.dataset == "digits"
    assert set(params.defenses) >= {"dropout", "l2"}


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


def test_every_configured_defense_type_has_an_implementation() -> None:
    from pipeline.config import DEFENSE_TYPES
    from pipeline.defenses.registry import REGISTRY

    types = set(DEFENSE_TYPES)
    assert types == set(REGISTRY)
    assert types == {d["type"] for d in DEFAULT["defenses"].values()}  # params.yaml shows each one


def test_selena_needs_training_submodels() -> None:
    message = bad(lambda r: r["defenses"]["selena"].update(n_excluded=9))
    assert message.startswith("params.yaml: defenses.selena: n_excluded must be below n_submodels")
    assert "n_excluded=9" in message


def test_dp_sgd_takes_one_noise_source() -> None:
    message = bad(lambda r: r["defenses"]["dp_sgd"].update(noise_multiplier=1.0, target_epsilon=4.0))
    assert "defenses.dp_sgd: give exactly one of noise_multiplier and target_epsilon" in message
