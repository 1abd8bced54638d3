"""Every bad input of issue 27's corpus gets one line naming the problem and the fix.

One table: each row states the input (a CSV or NPZ file under data/raw/,
a symbolic link there, or params.yaml as written or edited) and the line
the project answers. Every row runs fast, through the loader or the params
check directly; rows with `via` run again through the real command in a
subprocess (`python -m pipeline.stages.prepare`, `validate`, or
`pipeline.tools.check_params`), which must print that one line after
`error: `, exit 1 and write no output.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pipeline.config import DataParams
from pipeline.core.errors import PipelineError
from pipeline.datasets.loaders import load_data
from pipeline.datasets.tabular import one_hot_summary
from pipeline.tools.check_params import problems

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((PROJECT / "params.yaml").read_text())
CONFIGURED = ", ".join(DEFAULT["defenses"])
DELETED = object()  # a params row's value: the key is deleted from the file


@dataclass(frozen=True)
class Case:
    """A bad input and the one line it gets.

    `kind` says what `given` is: "csv" (the text of data/raw/t.csv), "npz"
    (the arrays of data/raw/t.npz, or its bytes), "link" (where
    data/raw/t.csv links to, relative to the project), "params" (the text
    of params.yaml, or dotted edits of the project's). `line` is the error
    line; for a CSV that loads, the one-hot summary the prepare stage
    prints (`one-hot encoded: ...`). `data` are DataParams for data rows.
    """

    id: str
    kind: str
    given: Any
    line: str
    data: dict[str, Any] = field(default_factory=dict)
    via: str | None = None  # "prepare", "validate" or "check_params": also run the real command


def _numbers(cells: dict[int, str], n: int = 10, column: str = "f1") -> str:
    """A numeric CSV of n rows (lines 2 to n+1), with the given cells of `column` replaced by line number."""
    rows = ["f0,f1,label"]
    for line in range(2, n + 2):
        f1 = cells.get(line, str(line * 0.5))
        rows.append(f"{line},{f1},{'ab'[line % 2]}")
    return "\n".join(rows) + "\n"


ONE_CELL = "correct it or drop its row (nothing is imputed); a column is categorical only when most of its cells are not numbers"
CASES = [
    # 1. one cell of a numeric column: an error quoting it, never one-hot encoding
    Case("nul-byte", "csv", _numbers({7: "4\x005"}),
         f"data/raw/t.csv: column 'f1' is numeric (90% of its cells read as numbers) but 1 cell is not a finite "
         f"number: line 7 '4\\x005'; {ONE_CELL}", via="prepare"),
    Case("decimal-comma-quoted", "csv", _numbers({5: '"1,2"'}),
         "data/raw/t.csv: column 'f1' is numeric (100% of its cells read as numbers) but 1 cell is not a finite "
         "number: line 5 '1,2'; write numbers with a decimal point and no thousands separator"),
    Case("double-dot", "csv", _numbers({3: "12..5"}),
         f"data/raw/t.csv: column 'f1' is numeric (90% of its cells read as numbers) but 1 cell is not a finite "
         f"number: line 3 '12..5'; {ONE_CELL}"),
    Case("n/a", "csv", _numbers({11: "n/a"}),
         f"data/raw/t.csv: column 'f1' is numeric (90% of its cells read as numbers) but 1 cell is not a finite "
         f"number: line 11 'n/a'; {ONE_CELL}"),
    Case("n/a-with-categorical-off", "csv", _numbers({11: "n/a"}),
         f"data/raw/t.csv: column 'f1' is numeric (90% of its cells read as numbers) but 1 cell is not a finite "
         f"number: line 11 'n/a'; {ONE_CELL}", {"categorical": "error"}),
    Case("half-numbers-is-numeric", "csv", _numbers({2: "x", 3: "y", 4: "z", 5: "w", 6: "v"}),
         "data/raw/t.csv: column 'f1' is numeric (50% of its cells read as numbers) but 5 cells are not a finite "
         "number: line 2 'x', line 3 'y', line 4 'z', line 5 'w', line 6 'v'; correct them or drop their rows "
         "(nothing is imputed); a column is categorical only when most of its cells are not numbers"),
    Case("many-bad-cells-are-counted", "csv", _numbers(dict.fromkeys((2, 3, 4, 5, 7, 9), "?"), n=14),
         "data/raw/t.csv: column 'f1' is numeric (57% of its cells read as numbers) but 6 cells are not a finite "
         "number: line 2 '?', line 3 '?', line 4 '?', line 5 '?', line 7 '?' and 1 more; correct them or drop "
         "their rows (nothing is imputed); a column is categorical only when most of its cells are not numbers"),
    Case("decimal-comma-column", "csv", "f;label\n1,5;a\n2;b\n1.234,75;a\n",
         "data/raw/t.csv: column 'f' is numeric (100% of its cells read as numbers) but 2 cells are not a finite "
         "number: line 2 '1,5', line 4 '1.234,75'; write numbers with a decimal point and no thousands separator"),
    Case("long-cell-is-cut", "csv", _numbers({4: "x" * 40}),
         f"data/raw/t.csv: column 'f1' is numeric (90% of its cells read as numbers) but 1 cell is not a finite "
         f"number: line 4 'xxxxxxxxxxxxxxxxxxxxxxxx'...; {ONE_CELL}"),
    Case("genuine-categorical", "csv", "size,colour,label\n1,red,a\n2,blue,b\n3,red,a\n4,green,b\n5,7,a\n",
         "one-hot encoded: 'colour' (4 columns)"),
    # 2. messages that name the thing and the fix
    Case("empty-csv", "csv", "",
         "data/raw/t.csv: the file is empty; write a header row, then one row per sample"),
    Case("blank-csv", "csv", "\n \n,,\n",
         "data/raw/t.csv: the file is empty; write a header row, then one row per sample"),
    Case("nan-cell", "csv", _numbers({6: "nan"}),
         f"data/raw/t.csv: column 'f1' is numeric (100% of its cells read as numbers) but 1 cell is not a finite "
         f"number: line 6 'nan'; {ONE_CELL}"),
    Case("nan-label", "csv", "f,label\n1,0\n2,nan\n3,1\n",
         "data/raw/t.csv: line 3 has 'nan' in the label column 'label', not a class; give every row a class"),
    Case("nan-in-npz", "npz", {"x": np.array([[0.0, 1], [2, np.inf], [4, 5]]), "y": np.array([0, 1, 0])},
         "data: data/raw/t.npz has 1 NaN or infinite feature value, the first x[1, 1] = inf; replace them or "
         "drop their rows (nothing is imputed)"),
    Case("nan-label-in-npz", "npz", {"x": np.zeros((3, 2)), "y": np.array([0.0, np.nan, 1.0])},
         "data/raw/t.npz: label y[1] is nan, not a class; give every sample a class"),
    Case("continuous-labels", "csv", "f,price\n" + "".join(f"{i},{0.5 + i / 8}\n" for i in range(12)),
         "data.min_per_class: label '0.5' of data/raw/t.csv has 1 sample, fewer than the 10 required; the labels "
         "(column 'price') take 12 values in 12 rows, so they look continuous, not like classes: set "
         "data.label_column to the column holding the class, or bin the values into classes",
         {"label_column": "price", "min_per_class": 10}),
    Case("rare-class", "csv", "f,label\n" + "".join(f"{i},{'cat' if i else 'emu'}\n" for i in range(12)),
         "data.min_per_class: label 'emu' of data/raw/t.csv has 1 sample, fewer than the 2 required; drop or "
         "relabel its rows, or lower data.min_per_class", {"min_per_class": 2}),
    Case("link-out-of-the-project", "link", "../elsewhere.csv",
         "data.path: data/raw/t.csv is a symbolic link to {outside}/elsewhere.csv, outside data/raw/; copy the "
         "file into data/raw/ instead of linking to it", via="prepare"),
    Case("link-out-of-data-raw", "link", "data/other.csv",
         "data.path: data/raw/t.csv is a symbolic link to data/other.csv, outside data/raw/; copy the file into "
         "data/raw/ instead of linking to it"),
    Case("npz-without-y", "npz", {"x": np.zeros((3, 2))},
         "data/raw/t.npz: has no array y (arrays: x); save the arrays with numpy.savez(path, x=x, y=y)"),
    Case("npz-of-objects", "npz", {"x": np.array([{}, {}], dtype=object), "y": np.zeros(2)},
         "data/raw/t.npz: not a readable .npz archive (Object arrays cannot be loaded when allow_pickle=False); "
         "save numeric arrays with numpy.savez(path, x=x, y=y)"),
    Case("empty-npz", "npz", b"",
         "data/raw/t.npz: the file is empty; save the arrays with numpy.savez(path, x=x, y=y)"),
    # 3. params that DVC reads first
    Case("empty-params", "params", "",
         "params.yaml: the file is empty; restore the project's (git checkout params.yaml) and edit the settings in it",
         via="check_params"),
    Case("defense-run-a-string", "params", {"defense.run": "dropout"},
         "params.yaml: defense.run: must be a list of names: write [dropout] (got 'dropout')", via="check_params"),
    Case("defense-run-empty", "params", {"defense.run": None, "canaries.defenses": []},
         "params.yaml: defense.run: must be a list of names: write [] for none (got None)"),
    Case("defense-not-configured", "params", {"defense.run": ["dropout", "dp"]},
         f"params.yaml: defense.run: 'dp' is not configured under defenses (configured: {CONFIGURED}); add a "
         "defenses.dp block with its type, or drop it from defense.run", via="validate"),
    Case("canary-defense-not-run", "params", {"canaries.defenses": ["dp"]},
         "params.yaml: canaries.defenses: 'dp' is not in defense.run "
         f"({', '.join(DEFAULT['defense']['run'])}); audit only defenses that run, or add it to defense.run"),
    Case("dp-baseline-not-configured", "params", {"recipe_audit.dp_baseline": ["dp_eps1"]},
         f"params.yaml: recipe_audit.dp_baseline: 'dp_eps1' is not configured under defenses (configured: "
         f"{CONFIGURED}); add a defenses.dp_eps1 block with type: dp_sgd, or drop it from recipe_audit.dp_baseline"),
    Case("dp-baseline-a-string", "params", {"recipe_audit.dp_baseline": "dp_eps16"},
         "params.yaml: recipe_audit.dp_baseline: must be a list of names: write [dp_eps16] (got 'dp_eps16')"),
    Case("foreach-key-deleted", "params", {"canaries.defenses": DELETED},
         "params.yaml: canaries.defenses: missing, but dvc.yaml reads it (stage audit_canaries_defense); write it "
         "back under canaries, e.g. defenses: []", via="check_params"),
    Case("stage-param-deleted", "params", {"seed": DELETED},
         "params.yaml: seed: missing, but dvc.yaml reads it (stage prepare); write it back, e.g. seed: 42"),
]  # fmt: skip


def _params_text(given: Any) -> str:
    """params.yaml as the row gives it: its text, or the project's with dotted edits."""
    if isinstance(given, str):
        return given
    params = copy.deepcopy(DEFAULT)
    for key, value in given.items():
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        if value is DELETED:
            del node[leaf]
        else:
            node[leaf] = value
    return yaml.safe_dump(params, sort_keys=False)


def _write_input(case: Case, root: Path) -> dict[str, Any]:
    """Write the row's input into the project `root`; the data settings that read it."""
    raw = root / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    if case.kind == "csv":
        (raw / "t.csv").write_bytes(case.given.encode())
    elif case.kind == "npz":
        if isinstance(case.given, bytes):
            (raw / "t.npz").write_bytes(case.given)
        else:
            np.savez(raw / "t.npz", **case.given)
        return {"dataset": "npz", "path": "data/raw/t.npz", "min_per_class": 1, **case.data}
    elif case.kind == "link":
        target = root / case.given
        target.write_text("f,label\n1,a\n2,b\n")
        (raw / "t.csv").symlink_to(os.path.relpath(target, raw))
    return {"dataset": "csv", "path": "data/raw/t.csv", "min_per_class": 1, **case.data}


def _answer(case: Case, root: Path) -> str:
    """The line the project gives for the row's input, called directly."""
    if case.kind == "params":
        (root / "params.yaml").write_text(_params_text(case.given))
        lines = problems(root / "params.yaml", PROJECT / "dvc.yaml")
        assert len(lines) == 1, lines
        return lines[0]
    settings = _write_input(case, root)
    try:
        loaded = load_data(DataParams(**settings), root)
    except PipelineError as error:
        assert "\n" not in str(error)
        return str(error)
    return f"one-hot encoded: {one_hot_summary(loaded.one_hot)}"


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # any run goes to cwd's own store
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _through_command(case: Case, root: Path) -> subprocess.CompletedProcess:
    """Run the row's input through the real command in a copy of the project under `root`."""
    if case.via == "check_params":
        (root / "params.yaml").write_text(_params_text(case.given))
        return _run([sys.executable, "-m", "pipeline.tools.check_params", str(root / "params.yaml")], PROJECT)
    shutil.copytree(PROJECT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    params = copy.deepcopy(DEFAULT)
    if case.kind == "params":
        (root / "params.yaml").write_text(_params_text(case.given))
    else:
        params["data"].update(_write_input(case, root))
        (root / "params.yaml").write_text(yaml.safe_dump(params))
    return _run([sys.executable, "-m", f"pipeline.stages.{case.via}"], root)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_each_bad_input_gets_one_line_naming_the_problem_and_the_fix(case: Case, tmp_path: Path) -> None:
    expected = case.line.replace("{outside}", str(tmp_path))
    (tmp_path / "project").mkdir()
    (tmp_path / "real").mkdir()
    assert _answer(case, tmp_path / "project") == expected
    if case.via is None:
        return
    result = _through_command(case, tmp_path / "real")
    assert (result.returncode, result.stderr) == (1, f"error: {expected}\n")
    written = [p for folder in ("data/prepared", "data/validated", "metrics") for p in (tmp_path / "real").glob(f"{folder}/*")]
    assert not written


def test_each_one_hot_encoded_column_is_listed_where_the_run_is_read(tmp_path: Path) -> None:
    """In prepare's printed line, metrics/prepare.json and the MLflow run's params, not only on stderr."""
    import sqlite3

    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    colours = ["red", "blue", "green"]
    rows = [f"{i * 0.25},{colours[i % 3]},{'ab'[i % 2]}" for i in range(60)]
    (raw / "t.csv").write_text("size,colour,label\n" + "\n".join(rows) + "\n")
    params = copy.deepcopy(DEFAULT)
    params["data"].update(
        dataset="csv", path="data/raw/t.csv", n_members=10, n_test=10, n_shadow_pool=20, n_defender_reference=0
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(PROJECT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    result = _run([sys.executable, "-m", "pipeline.stages.prepare"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("shadow pool; one-hot encoded: 'colour' (3 columns)")
    summary = yaml.safe_load((tmp_path / "metrics" / "prepare.json").read_text())
    assert summary["one_hot_encoded"] == {"colour": 3} and summary["n_features"] == 4
    with sqlite3.connect(tmp_path / "mlflow.db") as store:
        logged = store.execute("select value from params where key = 'one_hot_encoded'").fetchall()
    assert logged == [("'colour' (3 columns)",)]
