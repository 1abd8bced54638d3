"""Write each stage's code deps in dvc.yaml from its module's import closure.

Run: ``python -m pipeline.tools.dvc_deps`` (rewrites dvc.yaml) or
``--check`` (exit 1 if dvc.yaml is out of date; the dependency test does
the same). A stage's code deps are exactly the project files its module
can import (`core.imports.static_closure`), a package written as its
folder when every module in it is used. Other deps (data, metrics,
params.yaml) are kept as written, before the code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pipeline.core.imports import static_closure

PROJECT = Path(__file__).resolve().parents[2]
STAGE = re.compile(r"^  (\w+):\s*$")
CMD = re.compile(r"^\s+cmd: python -m (pipeline(?:\.\w+)+)")
ITEM = re.compile(r"^(\s+)- (\S+)")


def folded(files: set[str], root: Path = PROJECT) -> list[str]:
    """The files, with each package under pipeline/ whose every module is listed written as its folder."""
    out = set(files)
    for folder in sorted({str(Path(f).parent) for f in files}, key=len):
        if folder == "pipeline" or any(folder.startswith(kept + "/") for kept in out if (root / kept).is_dir()):
            continue
        modules = {str(p.relative_to(root)) for p in (root / folder).rglob("*.py")}
        if modules <= files:
            out = {f for f in out if not f.startswith(folder + "/")} | {folder}
    return sorted(out)


def code_deps(module: str, root: Path = PROJECT) -> list[str]:
    """What a stage running `module` must list under deps."""
    return folded(static_closure(root, module), root)


def updated(text: str, root: Path = PROJECT) -> str:
    """dvc.yaml's text with every stage's code deps regenerated (everything else kept as written)."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    module = None
    while i < len(lines):
        line = lines[i]
        if STAGE.match(line):
            module = None
        if CMD.match(line):
            module = CMD.match(line).group(1)
        out.append(line)
        i += 1
        if line.strip() == "deps:" and module is not None:
            items = []
            while i < len(lines) and ITEM.match(lines[i]):
                items.append(lines[i])
                i += 1
            indent = ITEM.match(items[0]).group(1) if items else " " * (len(line) - len(line.lstrip()) + 2)
            out += [item for item in items if not ITEM.match(item).group(2).startswith("pipeline/")]
            out += [f"{indent}- {dep}" for dep in code_deps(module, root)]
    return "\n".join(out) + "\n"


def main() -> None:
    path = PROJECT / "dvc.yaml"
    text = path.read_text()
    new = updated(text)
    if "--check" in sys.argv[1:]:
        if new != text:
            sys.exit("dvc.yaml: stage code deps are out of date; run python -m pipeline.tools.dvc_deps")
        return
    path.write_text(new)
    print("dvc.yaml: code deps written" if new != text else "dvc.yaml: code deps already up to date")


if __name__ == "__main__":
    main()
