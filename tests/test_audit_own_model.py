"""Auditing a user's own trained model through the real `dvc repro`, in a temporary git repository.

The test trains an overfitted Keras MLP on synthetic data (two hidden
layers, so its copies train one by one, not batched), saves it as a
`.keras` file under data/raw/ next to a CSV whose `member` column marks
the rows that trained it, and runs the pipeline on them. The audited
outputs must be exactly the file's outputs on exactly the given features,
the members exactly the marked rows, and the attacks must tell members
from non-members better than chance. Bad inputs, each on its own copy of
that run, fail `prepare` with one line and change no metric; among them a
run defense that would have to retrain the model's architecture, which
the batched trainer cannot rebuild.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scenarios import Sandbox

from pipeline.tools.sandbox import PROJECT

pytestmark = pytest.mark.slow

N, D, C, N_TRAINED = 900, 12, 4, 100
EPOCHS, RATE = 20, 0.01  # the model's training, which its copies repeat: it overfits (train accuracy 1)


def _table(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    centers = rng.normal(0.0, 1.0, (C, D))
    y = rng.integers(0, C, N)
    x = (centers[y] + rng.normal(0.0, 1.5, (N, D))).astype(np.float32)
    trained = np.zeros(N, bool)
    trained[rng.choice(N, N_TRAINED, replace=False)] = True
    lines = [",".join([*(f"f{i}" for i in range(D)), "label", "member"])]
    lines += [",".join([*(f"{v:.6f}" for v in row), str(label), str(int(m))]) for row, label, m in zip(x, y, trained)]
    (root / "data/raw/table.csv").write_text("\n".join(lines) + "\n")
    x = np.loadtxt(root / "data/raw/table.csv", delimiter=",", skiprows=1, usecols=range(D), dtype=np.float32)
    return x, y, trained


def _train_model(x: np.ndarray, y: np.ndarray, path: Path) -> None:
    """An overfitted model of an architecture the batched trainer does not cover, saved as the user would."""
    code = f"""
import numpy as np
from pipeline.core.tf_runtime import keras
keras.utils.set_random_seed(0)
data = np.load({str(path.with_suffix('.npz'))!r})
model = keras.Sequential([keras.Input(({D},)), keras.layers.Dense(64, activation="relu"),
                          keras.layers.Dense(32, activation="relu"), keras.layers.Dense({C}, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam({RATE}), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(data["x"], data["y"], epochs={EPOCHS}, batch_size=32, verbose=0)
model.save({str(path)!r})
"""
    np.savez(path.with_suffix(".npz"), x=x, y=y)
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT, check=True, capture_output=True, timeout=300)
    path.with_suffix(".npz").unlink()


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sandbox, subprocess.CompletedProcess, np.ndarray, np.ndarray]:
    """The scenario: a CSV and a model trained on its marked rows, committed in a fresh sandbox, then `dvc repro`.

    Read only: the tests that change anything work on a copy.
    """
    root = tmp_path_factory.mktemp("own-model") / "repo"
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["data"].update(
        {"dataset": "csv", "path": "data/raw/table.csv", "member_column": "member",
         "n_test": 100, "n_shadow_pool": 200, "n_defender_reference": 24}
    )  # fmt: skip
    params["target"].update({"model": "data/raw/model.keras", "epochs": EPOCHS})
    params["shadows"]["n_models"], params["reference"]["n_models"] = 4, 4
    params["attack"]["shadow_classifier"]["epochs"] = 2
    params["defense"].update({"run": ["memguard"], "adaptive": False})
    params["canaries"].update({"n": 100, "guesses": [20, 50, 100], "defenses": []})
    params["recipe_audit"].update({"n_models": 4, "n_canaries": 26, "dp_baseline": []})  # DP-SGD retrains: not this model
    box = Sandbox.create(root, yaml.safe_dump(params, sort_keys=False))
    (root / "data/raw").mkdir(parents=True, exist_ok=True)
    x, y, trained = _table(root)
    _train_model(x[trained], y[trained], root / "data/raw/model.keras")
    box.commit("the model to audit")
    return box, box.repro(check=False), x, trained


def test_dvc_repro_audits_exactly_the_given_model(audited: tuple[Sandbox, subprocess.CompletedProcess, np.ndarray, np.ndarray]) -> None:
    box, result, x, trained = audited
    root = box.root
    assert result.returncode == 0, result.stdout + result.stderr
    prepared = json.loads((root / "metrics/prepare.json").read_text())
    assert (prepared["n_members"], prepared["n_nonmembers"]) == (N_TRAINED, N_TRAINED)
    assert prepared["audited_model"] == "data/raw/model.keras" and "one by one" in prepared["attacker_models_train"]
    splits = np.load(root / "data/prepared/splits.npz")
    assert set(splits["members"]) == set(np.flatnonzero(trained))  # the members are exactly the marked rows
    for role in ("nonmembers", "test", "shadow_pool", "defender_reference"):
        assert not trained[splits[role]].any(), role
    data = np.load(root / "data/prepared/dataset.npz")
    np.testing.assert_array_equal(data["x"], x)  # features exactly as given: nothing standardised

    from pipeline.core.tf_runtime import keras

    model = keras.saving.load_model(root / "data/raw/model.keras")
    outputs = np.load(root / "data/target/outputs.npz")
    candidates = outputs["index"]
    assert set(candidates) == set(splits["members"]) | set(splits["nonmembers"])
    probabilities = np.asarray(model(x[candidates], training=False))
    logits = outputs["candidate_logits"].astype(np.float64)
    released = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(released / released.sum(1, keepdims=True), probabilities, rtol=1e-5, atol=1e-7)

    attacks = json.loads((root / "metrics/attacks.json").read_text())
    headline = json.loads((root / "metrics/headline.json").read_text())
    assert attacks["loss_threshold"]["auc"] > 0.6
    assert headline["metrics"]["auc_ci_low"] > 0.5  # the attack chosen on shadow data beats chance on the target
    target = json.loads((root / "metrics/target.json").read_text())
    assert target["train_accuracy"] == 1.0 and target["generalization_gap"] > 0.05  # overfitted, as intended
    assert "the target is the given model `data/raw/model.keras`" in (root / "reports/report.md").read_text()
    (summary,) = box.summaries()  # the MLflow summary logs the counts the audit used, not the ignored params
    assert summary.data.params["data.n_members"] == summary.data.params["data.n_nonmembers"] == str(N_TRAINED)


def _prepare_with(box: Sandbox, change: dict) -> subprocess.CompletedProcess:
    """Stage prepare on the changed params, after stage validate (which must pass) recorded what they require."""
    box.set_params(change)
    box.python("-m", "pipeline.stages.validate")
    return box.python("-m", "pipeline.stages.prepare", check=False)


BAD = [
    ("not a keras file", {"target": {"model": "data/raw/notes.keras"}}, "is not a Keras model file"),
    ("wrong input shape", {"data": {"path": "data/raw/narrow.csv"}}, "takes inputs shaped (12,) but the data's samples are shaped (11,)"),
    ("labels out of range", {"data": {"path": "data/raw/more_classes.csv"}}, "labels hold 5 classes"),
    ("marker not 0/1", {"data": {"path": "data/raw/bad_marker.csv"}}, "data.member_column: data/raw/bad_marker.csv column 'member' row 3 holds 'maybe'"),
    ("index out of range", {"data": {"member_column": None, "member_index": "data/raw/rows.txt"}}, "line 2 names row 900"),
    ("a defense that retrains it", {"defense": {"run": ["dropout"]}}, "defense.run: dropout: these defenses retrain the model with the project's batched trainer"),
]


@pytest.mark.parametrize("case, change, message", BAD, ids=[case for case, _, _ in BAD])
def test_bad_inputs_fail_prepare_with_one_line(
    audited: tuple[Sandbox, subprocess.CompletedProcess, np.ndarray, np.ndarray], tmp_path: Path, case: str, change: dict, message: str
) -> None:
    box = audited[0].copy(tmp_path / "repo")
    root = box.root
    table = (root / "data/raw/table.csv").read_text().splitlines()
    (root / "data/raw/notes.keras").write_text("my notes")
    (root / "data/raw/narrow.csv").write_text("\n".join(",".join(line.split(",")[1:]) for line in table) + "\n")
    rows = [line.split(",") for line in table]
    for row in rows[1:13]:
        row[D] = "4"  # a fifth class (of min_per_class rows) for a model with four outputs
    (root / "data/raw/more_classes.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    rows = [line.split(",") for line in table]
    rows[4][D + 1] = "maybe"
    (root / "data/raw/bad_marker.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    (root / "data/raw/rows.txt").write_text("0\n900\n")
    before = sorted((path, path.read_bytes()) for path in (root / "metrics").rglob("*.json"))
    result = _prepare_with(box, change)
    assert result.returncode == 1, result.stdout + result.stderr
    assert sorted((path, path.read_bytes()) for path in (root / "metrics").rglob("*.json")) == before
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr
