"""TensorFlow and Keras, imported once, quietly and deterministically, on first use.

`tf` and `keras` here are stand-ins that import the real modules the first
time an attribute is read (``tf.constant``, ``keras.Model``), so a module
that only defines training code, or a params schema beside it, can be
imported without TensorFlow's 2 to 3 s start-up. Every module that needs
TensorFlow takes it from here: ``from pipeline.core.tf_runtime import tf, keras``.

TensorFlow's C++ start-up writes notices (oneDNN, missing CUDA drivers)
straight to file descriptor 2 before its log settings apply, so they are
silenced by pointing that descriptor at /dev/null during the import and
device discovery only.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pipeline  # noqa: F401  (sets the log-level defaults first)


@contextlib.contextmanager
def _silenced_stderr() -> Iterator[None]:
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") in ("0", "1"):
        yield  # the user asked for TensorFlow's logs
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@functools.cache
def loaded() -> dict[str, ModuleType]:
    """The real modules, imported and configured on the first call."""
    with _silenced_stderr():
        import keras
        import tensorflow

        tensorflow.config.list_physical_devices()
        tensorflow.config.experimental.enable_op_determinism()
        tensorflow.get_logger().setLevel("ERROR")
        keras.utils.disable_interactive_logging()  # no Keras progress bars from libraries' predict calls (MLflow's)
    return {"tf": tensorflow, "keras": keras}


class _OnFirstUse:
    """A module stand-in: the first attribute read imports the real module (see `loaded`)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(loaded()[self._name], attribute)

    def __repr__(self) -> str:
        return f"<{self._name}, imported on first use>"


tf: Any = _OnFirstUse("tf")
keras: Any = _OnFirstUse("keras")

__all__ = ["tf", "keras", "loaded"]
