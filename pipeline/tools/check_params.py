"""Check params.yaml before DVC reads it: `python -m pipeline.tools.check_params [path]`.

DVC resolves dvc.yaml's `foreach` over `defense.run` and `canaries.defenses`
before any stage runs, so some mistakes (an empty file, `defense.run`
written as a string, a defense listed but not configured) would otherwise
get DVC's message, not the project's. `make run` runs this first; it runs
the same checks as stage `validate` and prints one line per problem.
"""

from __future__ import annotations

import sys

from pipeline.checks import check
from pipeline.config import load_params
from pipeline.core.errors import PipelineError


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "params.yaml"
    try:
        check(load_params(path))
    except PipelineError as error:
        for line in str(error).splitlines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
