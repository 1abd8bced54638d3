"""Atomic writes and safe loads for the files that pass between stages.

Every write goes to a temporary sibling first (named `.~tmp-<pid>-...`)
and is renamed into place, so a failed stage never leaves a half-written
output behind. Inside `staged_outputs()` (every stage body runs in one)
the renames wait until the whole body has succeeded: a stage that fails,
for any reason, changes none of its outputs. A temporary left by a killed
process is removed by `sweep_stale_temporaries` on the next run.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.processes import interrupts_ignored, pid_alive

TEMP_PREFIX = ".~tmp-"
_pending: contextvars.ContextVar[list[tuple[Path, Path]] | None] = contextvars.ContextVar("pending", default=None)


def _replace(tmp: Path, path: Path) -> None:
    """Move `tmp` onto `path` (a file or a folder) and drop its temporary folder.

    A folder is swapped with two renames (the old one moves into the
    temporary folder first), so no moment exists without a complete `path`
    but the instant between them.
    """
    if path.is_dir() and not path.is_symlink():
        os.replace(path, tmp.parent / f"{TEMP_PREFIX}old")
    os.replace(tmp, path)
    shutil.rmtree(tmp.parent, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces `path` (file or folder).

    Inside `staged_outputs()` the replacement waits for the end of the
    whole staged block.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=path.parent)) / path.name
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp.parent, ignore_errors=True)
        raise
    pending = _pending.get()
    if pending is None:
        _replace(tmp, path)
    else:
        for earlier, _ in [(t, p) for t, p in pending if p == path]:
            shutil.rmtree(earlier.parent, ignore_errors=True)
        pending[:] = [(t, p) for t, p in pending if p != path] + [(tmp, path)]


@contextlib.contextmanager
def staged_outputs() -> Iterator[None]:
    """Hold back every `atomic_path` rename in the block; apply all of them only if it succeeds."""
    pending: list[tuple[Path, Path]] = []
    token = _pending.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            shutil.rmtree(tmp.parent, ignore_errors=True)
        raise
    finally:
        _pending.reset(token)
    with interrupts_ignored():  # Ctrl-C cannot leave some outputs new and others old
        for tmp, path in pending:
            _replace(tmp, path)


def staged_path(path: str | Path) -> Path:
    """Where `path`'s new content is now: its staged temporary (same file name) inside `staged_outputs()`, else itself."""
    path = Path(path)
    for tmp, final in _pending.get() or []:
        if final == path:
            return tmp
    return path


def sweep_stale_temporaries(folders: list[Path]) -> list[Path]:
    """Remove temporaries that killed processes left under `folders`; returns what was removed."""
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for tmp in folder.rglob(f"{TEMP_PREFIX}*"):
            pid = tmp.name[len(TEMP_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
    return removed


SIGNIFICANT_DIGITS = 6  # float32 kernels differ between CPUs in the 7th digit; outputs stop at the 6th


def rounded(obj: Any, digits: int = SIGNIFICANT_DIGITS) -> Any:
    """`obj` with every float (NumPy's too) at `digits` significant digits, in nested dicts and lists.

    Metrics and plot values are written this way, so the same run on
    another CPU writes the same files unless a value sits at a rounding
    boundary (or float noise reorders two tied scores).
    """
    if isinstance(obj, dict):
        return {key: rounded(value, digits) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(value, digits) for value in obj]
    if isinstance(obj, (float, np.floating)):
        return float(f"{float(obj):.{digits}g}")
    return obj


def json_text(obj: Any) -> str:
    """`obj` as the project writes JSON: indented, keys in the order given, floats `rounded`."""
    return json.dumps(rounded(obj), indent=2, sort_keys=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(obj))


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write arrays to an uncompressed .npz, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def read_json(path: str | Path) -> Any:
    """Load a JSON file, or raise PipelineError naming the file."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise PipelineError(f"{path}: not valid JSON: {error}") from None


def read_text(path: str | Path) -> str:
    """A text file's content, or PipelineError naming the missing file."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (run the stage that writes it: dvc repro)")
    return path.read_text()


def load_npz(path: str | Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Load the named arrays from an .npz without pickles, checking they exist."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (run the stage that writes it: dvc repro)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise PipelineError(
                    f"{path}: missing array(s) {', '.join(missing)}; found {', '.join(archive.files) or 'none'}"
                )
            return {key: archive[key] for key in keys}
    except (ValueError, OSError) as error:
        raise PipelineError(f"{path}: not a readable .npz file: {error}") from None
