"""Where shards of attacker models train: one after another in the stage's process, or as Ray tasks.

A shard is one batched computation of `compute.shard_size` models (see
`attacker.train_shard`). With `compute.backend: local` (the default) the
shards run here in order and Ray is never imported. With `ray` each
shard is a Ray task on the cluster at `compute.address` (or
`RAY_ADDRESS`; with neither, Ray starts a local instance for the stage),
asking for one CPU, and one GPU when the cluster has GPUs. The shared
arrays travel once, through Ray's object store. Ray retries a task whose
worker dies up to `compute.max_retries` times; a shard whose own code
fails stops the stage with one line naming it. Results come back in
shard order, so both backends return the same arrays for the same seeds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pipeline.config import ComputeParams
from pipeline.core.errors import PipelineError

Result = TypeVar("Result")


def run_shards(
    task: Callable[[Any, Any], Result], shared: Any, shards: Sequence[Any], settings: ComputeParams, label: str
) -> list[Result]:
    """`task(shared, shard)` for every shard, in shard order, on the configured backend."""
    if settings.backend == "ray":
        return _on_ray(task, shared, shards, settings, label)
    results = []
    for number, shard in enumerate(shards, start=1):
        results.append(task(shared, shard))
        _report(label, number, len(shards))
    return results


def _report(label: str, done: int, total: int) -> None:
    if total > 1:
        print(f"{label}: {done}/{total} shards done", file=sys.stderr, flush=True)


def _failure(label: str, number: int, total: int, error: Exception) -> PipelineError:
    """One line naming the shard; a PipelineError raised in the shard keeps its own message."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, PipelineError):
        return PipelineError(str(cause))
    reason = " ".join(str(cause or error).split())[:300]
    return PipelineError(
        f"compute: shard {number}/{total} of {label} failed on Ray ({type(cause or error).__name__}: {reason}); "
        "see `ray logs` on the cluster, or run it with compute.backend: local"
    )


def _on_ray(
    task: Callable[[Any, Any], Result], shared: Any, shards: Sequence[Any], settings: ComputeParams, label: str
) -> list[Result]:
    import ray

    address = settings.address or os.environ.get("RAY_ADDRESS")
    try:
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise PipelineError(f"compute.address: cannot reach the Ray cluster at {address!r} ({error})") from None
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=settings.max_retries)(task)
        shared_ref = ray.put(shared)
        pending = {remote.remote(shared_ref, shard): number for number, shard in enumerate(shards)}
        results: list[Any] = [None] * len(shards)
        done = 0
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            number = pending.pop(ready)
            try:
                results[number] = ray.get(ready)
            except ray.exceptions.RayError as error:
                raise _failure(label, number + 1, len(shards), error) from None
            done += 1
            _report(f"{label} (Ray)", done, len(shards))
        return results
    finally:
        ray.shutdown()
