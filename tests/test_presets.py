"""Presets: each file of overrides validates on params.yaml and becomes exact `dvc exp run -S` arguments.

The "tiny" preset itself runs as a real `dvc exp run` in tests/scenarios.py (scenario `tiny`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import parse_params
from pipeline.core.errors import PipelineError
from pipeline.tools.presets import PRESETS, applied, arguments, available, overrides
from pipeline.tools.sandbox import PROJECT

DATASET_ROWS = {"digits": 1797, "mnist": 70000, "cifar10": 60000}


def test_the_documented_presets_exist_with_descriptions() -> None:
    presets = available(PROJECT / PRESETS)
    assert {"tiny", "mnist_mlp", "cifar10_cnn"} <= set(presets)
    assert all(presets.values())


@pytest.mark.parametrize("name", ["tiny", "mnist_mlp", "cifar10_cnn"])
def test_each_preset_validates_and_fits_its_dataset(name: str) -> None:
    words = arguments(name, PROJECT / "params.yaml", PROJECT / PRESETS)
    assert words[::2] == ["-S"] * (len(words) // 2)
    flat = overrides(name, PROJECT / PRESETS)
    assert [w.split("=", 1)[0] for w in words[1::2]] == list(flat)
    params = parse_params(applied(yaml.safe_load((PROJECT / "params.yaml").read_text()), flat))
    data = params.data
    needed = 2 * data.n_members + data.n_test + data.n_shadow_pool + data.n_defender_reference
    assert needed <= DATASET_ROWS[data.dataset]
    if name != "tiny":  # real work: TPR at 0.1% FPR rests on at least one false positive
        assert data.n_members >= 1000


def test_cifar10_preset_trains_64_reference_models_with_the_cnn() -> None:
    flat = overrides("cifar10_cnn", PROJECT / PRESETS)
    assert (flat["target.architecture"], flat["reference.n_models"], flat["data.dataset"]) == ("cnn", 64, "cifar10")


def test_values_become_single_shell_words_dvc_parses_back() -> None:
    words = arguments("tiny", PROJECT / "params.yaml", PROJECT / PRESETS)
    pairs = dict(w.split("=", 1) for w in words[1::2])
    run = yaml.safe_load((PROJECT / PRESETS / "tiny.yaml").read_text())["defense"]["run"]
    assert len(run) >= 2 and pairs["defense.run"] == "[" + ",".join(run) + "]"  # a list is one word, no spaces
    assert yaml.safe_load(pairs["defense.run"]) == run
    assert pairs["data.n_members"] == "60"


def test_a_preset_with_a_wrong_key_or_name_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "typo.yaml").write_text("# typo: a wrong key\ndata:\n  n_member: 10\n")
    with pytest.raises(PipelineError, match=r"data\.n_member: unknown key") as error:
        arguments("typo", PROJECT / "params.yaml", tmp_path)
    assert "\n" not in str(error.value)
    with pytest.raises(PipelineError, match="preset 'nope' not found .* presets: typo"):
        arguments("nope", PROJECT / "params.yaml", tmp_path)
    (tmp_path / "spaces.yaml").write_text("# spaces\nmlflow:\n  experiment: two words\n")
    with pytest.raises(PipelineError, match="not one shell word"):
        arguments("spaces", PROJECT / "params.yaml", tmp_path)
