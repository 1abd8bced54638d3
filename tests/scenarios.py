"""The real pipeline runs that the slow tests share, and the sandbox commands they use.

A scenario is a real `dvc repro` (or `dvc exp run`) in a throwaway git
repository (`pipeline.tools.sandbox`). Each one is built once per test
session, whichever pytest-xdist worker needs it first (the others wait on
its lock), and is never changed afterwards: a test that changes anything
works on its own copy (`Built.copy`), so every test can run alone, in any
order. Their steps, all in this file:

- `tiny`: the project's params.yaml, then the tiny preset as one DVC
  experiment, `python -m pipeline.tools.presets run tiny -n tiny` (every
  stage; defenses dropout and dp_sgd; canary audits of the
  undefended and the DP-SGD target), committed.
- `trimmed`: a copy of `tiny`, then (1) dp_sgd dropped from the run
  (`defense.run: [dropout]`, `canaries.defenses: []`) and
  `dvc repro`, which reruns only `validate`, `recipe_attack` and the
  report (its output is the scenario's log); then (2) the shadow classifier's family fixed
  (`attack.shadow_classifier.classifier: logistic_regression`) and
  `dvc repro` (validate, the attack stages, the report); committed. Tests
  that rerun the attack stages start here: one defense's attacks and one
  classifier family run the same stages and code as two defenses and
  the family search (which `tiny` runs), in a fraction of the time.

Every stage runs with `PIPELINE_CHECK_PARAMS` set, so a param listed in
dvc.yaml but never read fails it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

from pipeline.tools.sandbox import PROJECT, make_sandbox, sandbox_env

TINY_PRESET = yaml.safe_load((PROJECT / "presets/tiny.yaml").read_text())
TRIMMED_RUN = {"defense": {"run": ["dropout"]}, "canaries": {"defenses": []}}
ONE_CLASSIFIER = {"attack": {"shadow_classifier": {"classifier": "logistic_regression"}}}
CHECKED = {"PIPELINE_CHECK_PARAMS": "1"}  # a stage fails if dvc.yaml lists a param it never reads
STDERR_MARK = "\n--- stderr ---\n"  # a scenario's log: the run's output, then its error stream
TRAINING_STAGES = (
    "prepare", "train_target", "train_shadows", "train_reference", "defend", "audit_canaries",
    "recipe_undefended", "recipe", "recipe_dp",
)  # fmt: skip


def deep_update(base: dict, change: dict) -> dict:
    """`base` with the nested mapping `change` written into it (in place)."""
    for key, value in change.items():
        if isinstance(value, dict):
            deep_update(base.setdefault(key, {}), value)
        else:
            base[key] = value
    return base


def ran_stages(output: str) -> set[str]:
    """The stages a `dvc repro` or `dvc exp run` output says it ran."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def is_training_stage(stage: str) -> bool:
    """Whether a stage trains a model (or prepares the data every model trains on)."""
    return stage.split("@")[0] in TRAINING_STAGES


def attack_stages(params: dict) -> set[str]:
    """The attack stages of a params.yaml mapping: the undefended target's, one per run defense, the recipe audit's."""
    return {"train_attack", *(f"attack_defense@{name}" for name in params["defense"]["run"]), "recipe_attack"}


def recipe_stages(params: dict) -> set[str]:
    """The recipe audit's training stages: the undefended recipe, one per run defense and per DP baseline setting."""
    defenses, baseline = params["defense"]["run"], params["recipe_audit"]["dp_baseline"]
    return {"recipe_undefended", *(f"recipe@{name}" for name in defenses), *(f"recipe_dp@{name}" for name in baseline)}


@dataclass(frozen=True)
class Sandbox:
    """A sandbox repository and the environment its commands run in (its own MLflow store, this interpreter's tools)."""

    root: Path
    env: dict[str, str]

    @classmethod
    def create(cls, root: Path, params_text: str | None = None) -> Sandbox:
        """A fresh sandbox of this project's pipeline files, committed, nothing run yet."""
        root.mkdir(parents=True, exist_ok=True)
        return cls(root, {**make_sandbox(root, params_text), **CHECKED})

    def run(self, *args: str, check: bool = True, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run a command in the sandbox; with `check`, a non-zero exit fails the test with its output."""
        result = subprocess.run(
            list(args), cwd=self.root, env=env or self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def python(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, *args, check=check)

    def repro(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("dvc", "repro", *args, check=check)

    def status(self) -> dict:
        """`dvc status --json`: each stage that would rerun, with what changed."""
        return json.loads(self.run("dvc", "status", "--json").stdout)

    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def set_params(self, change: dict) -> None:
        """Write the nested `change` into params.yaml, as a user edits it."""
        (self.root / "params.yaml").write_text(yaml.safe_dump(deep_update(self.params(), change), sort_keys=False))

    def read_json(self, path: str) -> Any:
        return json.loads((self.root / path).read_text())

    def commit(self, message: str = "results") -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", message, "--allow-empty")

    def changed(self) -> list[str]:
        """`git status` entries: committed files changed or deleted, and new files."""
        return self.run("git", "status", "--porcelain", "--untracked-files=all").stdout.splitlines()

    def metrics(self) -> dict[str, str]:
        """Every metrics file's text, by path."""
        return {str(p.relative_to(self.root)): p.read_text() for p in sorted((self.root / "metrics").rglob("*.json"))}

    @property
    def store(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def runs(self) -> list:
        """Every MLflow run of the pipeline's experiment in the sandbox's store."""
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=self.store)
        experiment = client.get_experiment_by_name("membership-inference")
        return client.search_runs([experiment.experiment_id], max_results=1000)

    def summaries(self) -> list:
        """The summary runs (one per report), newest first."""
        found = [r for r in self.runs() if r.data.tags.get("summary") == "true"]
        return sorted(found, key=lambda r: r.info.start_time, reverse=True)

    def summary_links(self, summary: Any) -> dict[str, dict[str, str]]:
        """A summary run's `stage_runs.json` artifact: stage -> the run id that made its outputs, and ran or cached."""
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=self.store)
        return json.loads(Path(client.download_artifacts(summary.info.run_id, "stage_runs.json")).read_text())

    def copy(self, dest: Path) -> Sandbox:
        """A complete copy at `dest`: repository, DVC cache, outputs and MLflow store, moved to the new place."""
        copy_tree(self.root, dest)
        return Sandbox(dest, {**sandbox_env(dest), **CHECKED})


def _relocate_store(root: Path, old: str, new: str) -> None:
    """Point a copied MLflow store at the copy: artifact locations and tags name the sandbox's absolute path."""
    database = root / "mlflow.db"
    if database.exists():
        with contextlib.closing(sqlite3.connect(database)) as db, db:
            tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for column in [row[1] for row in db.execute(f'PRAGMA table_info("{table}")') if row[2].upper() in ("TEXT", "") or "CHAR" in row[2].upper()]:  # fmt: skip
                    db.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE instr("{column}", ?) > 0',
                        (old, new, old),
                    )
    for model in (root / "mlartifacts").rglob("MLmodel"):
        model.write_text(model.read_text().replace(old, new))


def copy_tree(source: Path, dest: Path) -> None:
    """Copy a sandbox (DVC's scratch folder .dvc/tmp left out) and relocate its MLflow store."""
    shutil.copytree(source, dest, symlinks=True, ignore=lambda folder, _: ["tmp"] if folder.endswith("/.dvc") else [])
    _relocate_store(dest, str(source.resolve()), str(dest.resolve()))


@dataclass(frozen=True)
class Built:
    """A built scenario: its sandbox (never to be changed) and the output of the run that built it."""

    sandbox: Sandbox
    log: str

    def copy(self, dest: Path) -> Sandbox:
        return self.sandbox.copy(dest)


def _build_tiny(repo: Path, scenarios: Scenarios) -> str:
    box = Sandbox.create(repo)
    result = box.python("-m", "pipeline.tools.presets", "run", "tiny", "-n", "tiny")
    box.commit()
    return result.stdout + STDERR_MARK + result.stderr


def _build_trimmed(repo: Path, scenarios: Scenarios) -> str:
    box = scenarios.get("tiny").copy(repo)
    box.set_params(TRIMMED_RUN)
    result = box.repro()
    box.set_params(ONE_CLASSIFIER)
    box.repro()
    box.commit()
    return result.stdout


BUILDERS: dict[str, Callable[[Path, Scenarios], str]] = {"tiny": _build_tiny, "trimmed": _build_trimmed}


class Scenarios:
    """The session's built scenarios, in a folder every xdist worker of the session shares."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def get(self, name: str) -> Built:
        """The scenario, built now under its lock if no worker has built it yet."""
        place = self.folder / f"scenario-{name}"
        with FileLock(str(self.folder / f"scenario-{name}.lock")):
            if (place / "failed.txt").exists():
                raise AssertionError(f"scenario {name!r} failed to build earlier in this session:\n{(place / 'failed.txt').read_text()}")
            if not (place / "log.txt").exists():
                shutil.rmtree(place, ignore_errors=True)
                place.mkdir(parents=True)
                try:
                    log = BUILDERS[name](place / "repo", self)
                except Exception as error:
                    (place / "failed.txt").write_text(str(error))
                    raise
                (place / "log.txt").write_text(log)
        env = {**sandbox_env(place / "repo"), **CHECKED}
        return Built(Sandbox(place / "repo", env), (place / "log.txt").read_text())


def shared_folder(basetemp: Path) -> Path:
    """The folder the workers of one xdist session share (the session's own base folder without xdist)."""
    return basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp
