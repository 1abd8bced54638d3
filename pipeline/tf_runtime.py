"""Import TensorFlow and Keras once, quietly and deterministically.

TensorFlow's C++ start-up writes notices (oneDNN, missing CUDA drivers)
straight to file descriptor 2 before its log settings apply, so they are
silenced by pointing that descriptor at /dev/null during the import and
device discovery only. Every module that needs TensorFlow imports it from
here: ``from pipeline.tf_runtime import tf, keras``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

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


with _silenced_stderr():
    import keras
    import tensorflow as tf

    tf.config.list_physical_devices()
    tf.config.experimental.enable_op_determinism()
    tf.get_logger().setLevel("ERROR")
    keras.utils.disable_interactive_logging()  # no Keras progress bars from libraries' predict calls (MLflow's)

__all__ = ["tf", "keras"]
