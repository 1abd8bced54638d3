"""Each stage's `deps` and `params` in dvc.yaml are exactly what its code uses.

Code: the project files a stage's module can import are found statically
(`pipeline.core.imports`: every `import` anywhere in a file, function bodies
included, and every "pipeline.x:name" string a registry loads by name),
then checked in a fresh interpreter that really imports the module. That
set must equal the pipeline/ files the stage declares (a declared folder
stands for every .py file in it), so editing any module reruns exactly the
stages that use it; `python -m pipeline.tools.dvc_deps` writes them. A
defense's own code reaches its stages through stage `validate`'s
fingerprint of it (data/validated/defenses/<name>.json).

Params: each stage module's PARAMS must equal its `params:` in dvc.yaml;
at run time `common.ScopedParams` refuses reads outside them, and the
end-to-end test runs every stage with unread declared params made an error.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core import imports
from pipeline.tools import dvc_deps
from pipeline.tools.sandbox import PROJECT, make_sandbox

LIGHT_STAGES = ("validate", "prepare", "build_attack_dataset", "train_attack", "report")  # never import TensorFlow


def static_closure(module: str) -> set[str]:
    return imports.static_closure(PROJECT, module)


@functools.cache  # one fresh interpreter per stage module, whichever tests ask
def runtime_imports(module: str) -> tuple[frozenset[str], bool]:
    """Project files a fresh interpreter has loaded after importing `module`, and whether TensorFlow was."""
    code = (
        "import json, sys, importlib; importlib.import_module(sys.argv[1]); "
        "print(json.dumps([[m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)], "
        "'tensorflow' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code, module], cwd=PROJECT, capture_output=True, text=True, check=True)
    files, tf = json.loads(out.stdout.splitlines()[-1])
    root = str(PROJECT) + "/"
    return frozenset(f[len(root) :] for f in files if f.startswith(root + "pipeline/")), tf


def declared_code(deps: list[str]) -> set[str]:
    """The pipeline/ .py files a stage's deps name (a folder: every .py file in it)."""
    files: set[str] = set()
    for dep in deps:
        path = PROJECT / dep
        if not dep.startswith("pipeline/"):
            continue
        if path.is_dir():
            files.update(str(p.relative_to(PROJECT)) for p in path.rglob("*.py"))
        else:
            files.add(dep)
    return files


def stages() -> dict[str, dict]:
    """dvc.yaml's stages, a foreach stage once with `${item}` left in place."""
    out = {}
    for name, stage in yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"].items():
        out[name] = stage.get("do", stage)
    return out


def stage_module(stage: dict) -> str:
    return stage["cmd"].split()[2]


@pytest.mark.parametrize("name", list(stages()))
def test_declared_code_deps_are_exactly_the_imported_files(name: str) -> None:
    stage = stages()[name]
    module = stage_module(stage)
    closure = static_closure(module)
    loaded, _ = runtime_imports(module)
    assert loaded <= closure, f"the static scan missed {sorted(loaded - closure)}"
    declared = declared_code(stage["deps"])
    assert not closure - declared, f"{name}: dvc.yaml deps lack {sorted(closure - declared)}"
    assert not declared - closure, f"{name}: dvc.yaml deps list unused {sorted(declared - closure)}"


@pytest.mark.parametrize("name", list(stages()))
def test_declared_params_are_the_stage_modules_params(name: str) -> None:
    stage = stages()[name]
    module = __import__(stage_module(stage), fromlist=["PARAMS"])
    declared = [p.replace("${item}", "ITEM") for p in stage.get("params", [])]
    used = module.params_for("ITEM") if hasattr(module, "params_for") else module.PARAMS
    assert sorted(declared) == sorted(used)


@pytest.mark.parametrize("name", LIGHT_STAGES)
def test_light_stages_do_not_import_tensorflow(name: str) -> None:
    module = stage_module(stages()[name])
    _, tf = runtime_imports(module)
    assert not tf
    if name not in ("prepare", "validate"):  # Keras downloaders; the defenses' classes beside their training code
        assert "pipeline/core/tf_runtime.py" not in static_closure(module)


def test_an_undeclared_import_is_caught(tmp_path: Path) -> None:
    """The scan follows an import that exists only inside a function body."""
    closure = static_closure("pipeline.stages.report")
    assert "pipeline/core/tf_runtime.py" not in closure
    assert "pipeline/core/tf_runtime.py" in static_closure("pipeline.datasets.loaders")  # Keras downloaders, imported lazily


def test_dvc_yaml_code_deps_are_generated_from_the_closures() -> None:
    """dvc.yaml is what `python -m pipeline.tools.dvc_deps` writes: no hand edit drifts from the imports."""
    text = (PROJECT / "dvc.yaml").read_text()
    assert dvc_deps.updated(text) == text


def test_folding_writes_a_package_as_its_folder_only_when_every_module_is_used() -> None:
    everything = {str(p.relative_to(PROJECT)) for p in (PROJECT / "pipeline/stack").rglob("*.py")}
    assert dvc_deps.folded(everything) == ["pipeline/stack"]
    some = everything - {"pipeline/stack/conv.py"}
    assert dvc_deps.folded(some) == sorted(some)


def test_a_defense_fingerprint_covers_its_whole_closure_and_changes_with_it(tmp_path: Path) -> None:
    """The validate stage's record of a defense changes exactly when a file its class can run changes."""
    from pipeline.defenses.regularization import DropoutDefense
    from pipeline.stages.validate import defense_record

    record = defense_record("dropout", "pipeline.defenses.regularization:DropoutDefense", DropoutDefense(type="dropout"))
    assert set(record["code"]) == static_closure("pipeline.defenses.regularization")
    assert "pipeline/defenses/regularization.py" in record["code"] and "pipeline/stack/trainer.py" in record["code"]
    assert "pipeline/defenses/dp_sgd/trainer.py" not in record["code"]  # another defense's code: not a dependency


def test_prepare_needs_the_defense_list_only_for_a_given_model() -> None:
    """Stage validate lists the defenses needing the batched trainer only with target.model: else adding one never reruns prepare."""
    from pipeline.checks import check
    from pipeline.config import parse_params
    from pipeline.stages.validate import requirements

    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    nothing = {"defense.run": [], "recipe_audit.dp_baseline": []}
    assert requirements(check(parse_params(raw))) == {"defenses_needing_the_batched_trainer": nothing}
    raw["target"]["model"], raw["data"]["member_column"] = "data/raw/model.keras", "member"
    listed = requirements(check(parse_params(raw)))["defenses_needing_the_batched_trainer"]
    assert "dropout" in listed["defense.run"] and "memguard" not in listed["defense.run"]
    assert listed["recipe_audit.dp_baseline"] == raw["recipe_audit"]["dp_baseline"]


def test_a_code_folder_deps_hash_leaves_out_what_python_and_macos_write_there() -> None:
    """.dvcignore: bytecode caches (every stage's imports write them) and Finder's .DS_Store, not the sources.

    Else a folder dep (`pipeline/stack`) would hash whatever the last stage
    compiled, and `dvc status` would show stages changed after a run and
    in every fresh clone.
    """
    deps = {dep for stage in stages().values() for dep in stage.get("deps", [])}
    folders = sorted(dep for dep in deps if dep.startswith("pipeline/") and (PROJECT / dep).is_dir())
    assert folders  # the stack, training and reporting packages, at least
    written = [f"{folder}/{name}" for folder in folders for name in ("__pycache__/spec.cpython-311.pyc", "spec.pyc", ".DS_Store")]
    sources = [f"{folder}/spec.py" for folder in folders]
    dvc = str(Path(sys.executable).with_name("dvc"))
    command = [dvc, "check-ignore", "--details", "--non-matching", *written, *sources]
    out = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True)
    ignored = {line.split("\t")[-1] for line in out.stdout.splitlines() if not line.startswith("::")}
    assert ignored == set(written), out.stdout


LISTS = ("defense.run", "canaries.defenses", "recipe_audit.dp_baseline")  # lists of names params allow empty ([])


def test_every_data_dep_exists_whatever_lists_are_empty(tmp_path: Path) -> None:
    """No stage waits on a file or folder that, with some lists empty, no stage writes and git does not hold.

    DVC refuses to run a stage whose dep is missing, so such a dep fails
    the run at that stage, after the training before it (the report, with
    `defense.run: []`, once waited on metrics/defenses, which only the
    defense stages wrote). Each combination of emptied lists, in a fresh
    copy of the project as a clone has it, through DVC's own expansion of
    the foreach stages.
    """
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    make_sandbox(tmp_path)
    tracked = subprocess.run(["git", "ls-files"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    default = yaml.safe_load((PROJECT / "params.yaml").read_text())
    for emptied in itertools.product((False, True), repeat=len(LISTS)):
        if emptied[0] and not emptied[1]:
            continue  # canaries.defenses must be within defense.run
        params = copy.deepcopy(default)
        for key in (key for key, empty in zip(LISTS, emptied) if empty):
            section, name = key.split(".")
            params[section][name] = []
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        with Repo(str(tmp_path)) as repo:
            stages = list(repo.index.stages)
        outs = {out.def_path for stage in stages for out in stage.outs}
        written_or_held = outs | set(tracked)
        missing = {
            (stage.name, dep.def_path)
            for stage in stages for dep in stage.deps
            if not isinstance(dep, ParamsDependency)
            and not any(p == dep.def_path or p.startswith(dep.def_path + "/") or dep.def_path.startswith(p + "/") for p in written_or_held)
        }  # fmt: skip
        assert not missing, (dict(zip(LISTS, emptied)), missing)
        assert {stage.name for stage in stages} >= {"validate", "train_attack", "report"}
