"""Each stage's `deps` and `params` in dvc.yaml are exactly what its code uses.

Code: the project files a stage's module can import are found statically
(every `import` anywhere in a file, function bodies included, and every
"pipeline.x:func" string a registry loads by name), then checked in a fresh
interpreter that really imports the module. That set must equal the
pipeline/ files the stage declares (a declared folder stands for every .py
file in it), so editing any module reruns exactly the stages that use it.

Params: each stage module's PARAMS must equal its `params:` in dvc.yaml;
at run time `common.ScopedParams` refuses reads outside them, and the
end-to-end test runs every stage with unread declared params made an error.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.tools.sandbox import PROJECT

MODULE_REF = re.compile(r"^(pipeline(?:\.\w+)+)(?::\w+)?$")
LIGHT_STAGES = ("prepare", "build_attack_dataset", "train_attack", "report")  # never import TensorFlow


def module_file(name: str) -> Path | None:
    """The file of project module `name`, or None if it is not one."""
    base = PROJECT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_packages(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _referenced_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_REF.match(node.value):
            names.add(MODULE_REF.match(node.value).group(1))
    return {n for n in names if n.split(".")[0] == "pipeline"}


def static_closure(module: str) -> set[str]:
    """Project files (relative paths) that importing and running `module` can load."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        for name in _with_packages(todo.pop()):
            path = module_file(name)
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(_referenced_modules(path))
    return {str(p.relative_to(PROJECT)) for p in seen}


def runtime_imports(module: str) -> tuple[set[str], bool]:
    """Project files a fresh interpreter has loaded after importing `module`, and whether TensorFlow was."""
    code = (
        "import json, sys, importlib; importlib.import_module(sys.argv[1]); "
        "print(json.dumps([[m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)], "
        "'tensorflow' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code, module], cwd=PROJECT, capture_output=True, text=True, check=True)
    files, tf = json.loads(out.stdout.splitlines()[-1])
    root = str(PROJECT) + "/"
    return {f[len(root) :] for f in files if f.startswith(root + "pipeline/")}, tf


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
    if name != "prepare":  # prepare loads TensorFlow only for the Keras downloaders
        assert "pipeline/core/tf_runtime.py" not in static_closure(module)


def test_an_undeclared_import_is_caught(tmp_path: Path) -> None:
    """The scan follows an import that exists only inside a function body."""
    closure = static_closure("pipeline.stages.report")
    assert "pipeline/core/tf_runtime.py" not in closure
    assert "pipeline/core/tf_runtime.py" in static_closure("pipeline.datasets.loaders")  # Keras downloaders, imported lazily
