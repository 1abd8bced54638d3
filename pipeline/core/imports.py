"""Which project files a module can load: its import closure, found statically.

Every `import` anywhere in a file (function bodies included) and every
"pipeline.x:name" string a registry loads by name count. The closure is
what a stage's `deps` in dvc.yaml must list, and what fingerprints a
defense's code (`stages.validate`), so an edit reruns exactly the stages
that can run the edited code.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
from pathlib import Path

MODULE_REF = re.compile(r"^(pipeline(?:\.\w+)+)(?::\w+)?$")


def module_file(root: Path, name: str) -> Path | None:
    """The file of project module `name` under `root`, or None if it is not one."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_packages(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def referenced_modules(path: Path) -> set[str]:
    """Project modules a file imports, or names in "pipeline.x[:name]" strings.

    Each version of a file is parsed once per process (stage `validate`
    takes the closures of a dozen defenses, which share most files).
    """
    stat = path.stat()
    return set(_referenced_modules(path.resolve(), stat.st_mtime_ns, stat.st_size))


@functools.cache
def _referenced_modules(path: Path, mtime_ns: int, size: int) -> frozenset[str]:
    """`referenced_modules` of one version of a file, told apart by its modification time and size."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_REF.match(node.value):
            names.add(MODULE_REF.match(node.value).group(1))
    return frozenset(n for n in names if n.split(".")[0] == "pipeline")


def static_closure(root: Path, module: str) -> set[str]:
    """Project files (paths relative to `root`) that importing and running `module` can load."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        for name in _with_packages(todo.pop()):
            path = module_file(root, name)
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(referenced_modules(path))
    return {str(p.relative_to(root)) for p in seen}


def fingerprint(root: Path, files: set[str]) -> dict[str, str]:
    """sha256 of each file, by path: changes exactly when one of the files does."""
    return {path: hashlib.sha256((root / path).read_bytes()).hexdigest() for path in sorted(files)}
