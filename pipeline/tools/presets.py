"""Named presets: files of parameter overrides under presets/, applied by `dvc exp run` in one command.

    python -m pipeline.tools.presets                 # list the presets
    python -m pipeline.tools.presets run tiny        # dvc exp run -S key=value ... (one -S per override)
    python -m pipeline.tools.presets run tiny --queue -n my-tiny   # further `dvc exp run` options follow
    make exp PRESET=tiny                       # the same as the first run
    python -m pipeline.tools.presets tiny            # print the arguments only

A preset's first line is a `# name: description` comment; the rest is a
mapping of keys as in params.yaml. Each override becomes one `-S` of
`dvc exp run`, so the experiment records exactly which keys the preset
changed. Printing checks the preset first: applied to params.yaml it must
validate, and every value must be one shell word.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import flatten_mapping, parse_params
from pipeline.core.errors import PipelineError

PRESETS = Path("presets")


def available(folder: Path = PRESETS) -> dict[str, str]:
    """Preset name -> its one-line description."""
    out = {}
    for path in sorted(folder.glob("*.yaml")):
        first = path.read_text().splitlines()[0] if path.read_text() else ""
        out[path.stem] = first.lstrip("# ").split(": ", 1)[-1] if first.startswith("#") else ""
    return out


def overrides(name: str, folder: Path = PRESETS) -> dict[str, Any]:
    """The preset's overrides as dotted keys -> values, leaves only (lists are values)."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise PipelineError(f"preset {name!r} not found in {folder}/; presets: {', '.join(available(folder)) or 'none'}")
    tree = yaml.safe_load(path.read_text())
    if not isinstance(tree, dict):
        raise PipelineError(f"{path}: a preset is a mapping of params.yaml keys to values")
    return flatten_mapping(tree)


def _word(value: Any) -> str:
    """A value as DVC's `-S` parses it (YAML), with no spaces so the shell keeps it one word."""
    if isinstance(value, list):
        text = "[" + ",".join(_word(item) for item in value) + "]"
    elif value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    if any(c.isspace() for c in text) or not text:
        raise PipelineError(f"preset value {value!r} is not one shell word; presets hold no spaces")
    return text


def applied(params: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """`params` (a params.yaml mapping) with the dotted overrides set, as `dvc exp run -S` would set them."""
    out = yaml.safe_load(yaml.safe_dump(params))
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def arguments(name: str, params_file: Path = Path("params.yaml"), folder: Path = PRESETS) -> list[str]:
    """The `-S key=value` arguments of `dvc exp run` for the preset, after checking it against params_file."""
    flat = overrides(name, folder)
    parse_params(applied(yaml.safe_load(params_file.read_text()), flat), f"preset {name} on {params_file}")
    words = []
    for key, value in flat.items():
        words += ["-S", f"{key}={_word(value)}"]
    return words


def main(argv: list[str]) -> int:
    """List the presets, print one preset's arguments, or run `dvc exp run` with them; one line and exit 2 on an error."""
    try:
        if not argv:
            for name, description in available().items():
                print(f"{name:14} {description}")
            return 0
        if argv[0] == "run":
            if len(argv) < 2:
                raise PipelineError("usage: python -m pipeline.tools.presets run <preset> [dvc exp run options]")
            command = ["dvc", "exp", "run", *arguments(argv[1]), *argv[2:]]
            print(" ".join(command), file=sys.stderr)
            os.execvp(command[0], command)  # DVC takes over the terminal and the exit code
        print(" ".join(arguments(argv[0])))
        return 0
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
