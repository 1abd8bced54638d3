"""Checks of `pipeline.training.compute` on a real Ray cluster, run by tests/test_ray_backend.py inside one.

Run as a script (its tasks are pickled by value, so Ray's workers need
not import this file), it prints one JSON object: what each check saw.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pipeline.config import ComputeParams
from pipeline.core.errors import PipelineError
from pipeline.training.compute import run_shards


def _square(shared: int, shard: int) -> int:
    return shared * shard * shard


def _crash_once(marker: str, shard: int) -> int:
    """Kill this worker the first time (a lost worker), succeed when Ray retries it."""
    path = Path(marker)
    if not path.exists():
        path.write_text("crashed once")
        os._exit(1)
    return shard


def _fail(shared: int, shard: int) -> int:
    if shard == 1:
        raise PipelineError("defenses.x: this shard's own one-line error")
    raise ValueError("a bug in shard code")


def main(folder: str) -> None:
    ray = ComputeParams(backend="ray", max_retries=1)
    seen: dict[str, object] = {"squares": run_shards(_square, 3, [1, 2, 3, 4], ray, "squares")}
    seen["retried"] = run_shards(_crash_once, f"{folder}/retry-marker", [7], ray, "crash")
    try:
        run_shards(_crash_once, f"{folder}/no-retry-marker", [7], ComputeParams(backend="ray", max_retries=0), "crash")
    except PipelineError as error:
        seen["lost"] = str(error)
    for shards in ([1], [0]):
        try:
            run_shards(_fail, 0, shards, ray, "failing")
        except PipelineError as error:
            seen[f"failed_{shards[0]}"] = str(error)
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1])
