"""Shared test set-up: keep TensorFlow quiet and MLflow pointed at temp stores."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
