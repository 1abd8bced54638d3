"""Check params.yaml before DVC reads it: `python -m pipeline.tools.check_params [path]`.

DVC resolves dvc.yaml's `foreach` over `defense.run`, `canaries.defenses`
and `recipe_audit.dp_baseline` before any stage runs, and refuses a stage
whose `params:` key the file lacks, so some mistakes (an empty file,
`defense.run` written as a string, a defense listed but not configured, a
key deleted) would otherwise get DVC's message, not the project's. `make
run` runs this first: the checks of stage `validate`, and every key
dvc.yaml reads present in the file, one line per problem.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline.checks import check
from pipeline.config import Params, parse_params, read_params
from pipeline.core.errors import PipelineError

DVC_FILE = Path("dvc.yaml")
INTERPOLATION = re.compile(r"^\$\{\s*([\w.]+)\s*\}$")  # foreach: ${defense.run}


def keys_dvc_reads(dvc_file: Path) -> dict[str, str]:
    """Each params.yaml key dvc.yaml reads, with the first stage that reads it: `foreach` lists first, then `params:`."""
    if not dvc_file.is_file():
        raise PipelineError(f"{dvc_file}: not found; run the check from the project root, where dvc.yaml is")
    stages = yaml.safe_load(dvc_file.read_text())["stages"]
    keys: dict[str, str] = {}
    for name, stage in stages.items():
        match = INTERPOLATION.match(str(stage.get("foreach", "")))
        if match:
            keys.setdefault(match.group(1), name)
    for name, stage in stages.items():
        for key in stage.get("do", stage).get("params", []):
            if isinstance(key, str) and "${" not in key:  # other entries name other files, or the foreach item
                keys.setdefault(key, name)
    return keys


def missing_keys(raw: dict[str, Any], keys: dict[str, str], source: str) -> list[str]:
    """One line for each key (or the section holding it) that dvc.yaml reads but `raw` lacks, with its default."""
    defaults = Params.model_construct().model_dump(mode="json")  # the schema's defaults, not validated together
    lines: dict[str, str] = {}
    for key, stage in keys.items():
        parts = key.split(".")
        held = _held(raw, parts)
        if held == len(parts):
            continue
        absent, part = ".".join(parts[: held + 1]), parts[held]
        value = _held_value(defaults, parts[: held + 1])
        example = yaml.safe_dump({part: value}, default_flow_style=True, width=10**6).strip()[1:-1]
        where = f" under {'.'.join(parts[:held])}" if held else ""
        lines.setdefault(
            absent, f"{source}: {absent}: missing, but dvc.yaml reads it (stage {stage}); write it back{where}, e.g. {example}"
        )
    return list(lines.values())


def _held(tree: Any, parts: list[str]) -> int:
    """How many leading parts of a dotted key the nested mapping holds (all of them: it has the key)."""
    for depth, part in enumerate(parts):
        if not isinstance(tree, dict) or part not in tree:
            return depth
        tree = tree[part]
    return len(parts)


def _held_value(tree: Any, parts: list[str]) -> Any:
    """The value at a dotted key of a nested mapping, or None."""
    for part in parts:
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def problems(params_file: Path, dvc_file: Path = DVC_FILE) -> list[str]:
    """Every problem of the params file, one line each: keys dvc.yaml reads but the file lacks, then the checks."""
    raw = read_params(params_file)
    lines = missing_keys(raw, keys_dvc_reads(dvc_file), params_file.name) if isinstance(raw, dict) else []
    try:
        check(parse_params(raw, params_file.name))
    except PipelineError as error:
        lines += str(error).splitlines()
    return lines


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "params.yaml")
    try:
        lines = problems(path)
    except PipelineError as error:
        lines = str(error).splitlines()
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    if lines:
        sys.exit(1)


if __name__ == "__main__":
    main()
