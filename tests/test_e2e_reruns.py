"""What a param edit reruns in a real `dvc repro`, and that forced reruns reproduce the metrics byte for byte.

Each test changes its own copy of scenario `tiny` or `trimmed`
(tests/scenarios.py), or reads `trimmed` itself, which is `tiny` after
dp_sgd was dropped from `defense.run`. Stage `validate` reruns on every
edit of params.yaml (it checks the whole file), then reruns nothing
downstream unless what it records changed.
"""

from __future__ import annotations

import pytest
from scenarios import Built, Sandbox, ran_stages

pytestmark = pytest.mark.slow


def test_a_second_repro_reruns_nothing(tiny_copy: Sandbox) -> None:
    """Also with the bytecode caches the stages' imports wrote into the folder deps (`pipeline/stack`), as Python does by default."""
    box = tiny_copy
    assert list((box.root / "pipeline/stack/__pycache__").glob("*.pyc"))
    before = len(box.runs())
    assert ran_stages(box.repro().stdout) == set()
    assert len(box.runs()) == before


def test_changing_one_defense_reruns_only_its_stages_and_the_report(trimmed_copy: Sandbox) -> None:
    box = trimmed_copy
    box.set_params({"defenses": {"dropout": {"rate": 0.3}}})
    retrained = {"defend@dropout", "attack_defense@dropout", "recipe@dropout", "recipe_attack"}
    assert ran_stages(box.repro().stdout) == {"validate", *retrained, "report"}
    summary = box.summaries()[0]
    links = box.summary_links(summary)
    assert {stage for stage, link in links.items() if link["status"] == "ran"} == retrained
    assert links["prepare"]["status"] == "cached" and links["prepare"]["run_id"] in {r.info.run_id for r in box.runs()}
    assert summary.data.tags["stage_runs"].startswith(f"{len(links)} stage runs: {len(retrained)} ran")


def test_registering_models_reruns_only_the_report_and_tags_each_version(tiny_copy: Sandbox) -> None:
    """With mlflow.register_models on, every audited target is a registered version carrying its audit headline."""
    import mlflow

    box = tiny_copy
    box.set_params({"mlflow": {"register_models": True}})
    assert ran_stages(box.repro().stdout) == {"validate", "report"}
    client = mlflow.MlflowClient(tracking_uri=box.store)
    report = box.read_json("metrics/report.json")
    assert "dp_sgd" in report  # a DP target among them
    for name, row in report.items():
        (version,) = client.search_model_versions(f"name = 'membership-inference.{name}'")
        assert version.tags["audit.headline_attack"] == row["headline"]["attack"]
        assert float(version.tags["audit.headline_auc"]) == pytest.approx(row["headline"]["metrics"]["auc"], abs=5e-4)
        assert ("audit.dp_epsilon" in version.tags) == (name == "dp_sgd")


def test_same_params_give_the_same_metrics(trimmed_copy: Sandbox) -> None:
    """A forced rerun of a defense's training reproduces its outputs exactly: nothing downstream is stale.

    The same holds, in other tests, for the target's training (the
    tracking-server test forces `train_target`, then only what its change
    reads reruns) and for the shadows and the attacks (a killed stage's
    rerun gives the metrics it had).
    """
    box = trimmed_copy
    before = box.metrics()
    assert ran_stages(box.repro("-f", "-s", "defend@dropout").stdout) == {"defend@dropout"}
    # only its run record (a new MLflow run id) differs, which the report reads to link the stage runs
    assert box.status() == {"report": [{"changed deps": {"data/runs": "modified"}}]}
    assert box.metrics() == before


def test_a_removed_defense_no_longer_shows(trimmed: Built) -> None:
    box = trimmed.sandbox
    assert "dp_sgd" not in box.params()["defense"]["run"]
    assert ran_stages(trimmed.log) == {"validate", "recipe_attack", "report"}  # the recipe comparison, without it
    assert "dp_sgd" not in box.run("dvc", "metrics", "show").stdout
    assert "dp_sgd" not in box.run("dvc", "plots", "show", "--json").stdout
    assert list(box.read_json("metrics/report.json")) == ["undefended", "dropout"]
