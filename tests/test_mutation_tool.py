"""`mutation/run.py`'s choices of what to mutate and run: the CI part, the scratch copy's settings, the score."""

from __future__ import annotations

import fnmatch
import importlib.util
import sys
import tomllib

import pytest

from pipeline.tools.sandbox import PROJECT

_spec = importlib.util.spec_from_file_location("mutation_run", PROJECT / "mutation" / "run.py")
run = sys.modules["mutation_run"] = importlib.util.module_from_spec(_spec)  # its dataclasses look themselves up there
_spec.loader.exec_module(run)


def test_the_ci_part_is_mutants_1_17_33_of_each_sampled_function() -> None:
    targets = tomllib.loads((PROJECT / "mutation" / "targets.toml").read_text())
    globs = run.every_nth(run.mutant_globs(targets, sample=True), 16)
    picked = [n for k in range(1, 60) if any(fnmatch.fnmatchcase(n := f"pipeline.measures.roc.x_roc__mutmut_{k}", g) for g in globs)]
    assert picked == [f"pipeline.measures.roc.x_roc__mutmut_{k}" for k in (1, 17, 33, 49)]
    assert not any(fnmatch.fnmatchcase("pipeline.attacks.lira.x_lira__mutmut_1", g) for g in globs)  # not a sample module
    assert any(fnmatch.fnmatchcase("pipeline.measures.intervals.x_auc_of_rows__mutmut_17", g) for g in globs)  # "*" entries


def test_the_scratch_copy_mutates_and_maps_only_what_ci_names() -> None:
    text = (PROJECT / "pyproject.toml").read_text()
    changed = tomllib.loads(run.with_mutmut_lists(text, {"only_mutate": ["a.py"], "pytest_add_cli_args_test_selection": ["t.py"]}))
    before = tomllib.loads(text)
    assert changed["tool"]["mutmut"]["only_mutate"] == ["a.py"]
    assert changed["tool"]["mutmut"]["pytest_add_cli_args_test_selection"] == ["t.py"]
    for key in ("pytest_add_cli_args", "process_isolation", "also_copy", "source_paths"):
        assert changed["tool"]["mutmut"][key] == before["tool"]["mutmut"][key]
    assert {k: v for k, v in changed.items() if k != "tool"} == {k: v for k, v in before.items() if k != "tool"}
    with pytest.raises(KeyError, match="no missing_list"):
        run.with_mutmut_lists(text, {"missing_list": []})


def test_score_counts_timeouts_as_killed_and_leaves_equivalents_out() -> None:
    status = {"m.x_f__mutmut_1": "killed", "m.x_f__mutmut_2": "timeout", "m.x_f__mutmut_3": "survived",
              "m.x_f__mutmut_4": "survived"}  # fmt: skip
    table, score = run.score_table(status, excluded={"m.x_f__mutmut_4"})
    assert table == [("m", 2, 1, 1, 4)] and score == pytest.approx(200 / 3)
