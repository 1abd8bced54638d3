"""Membership-inference risk pipeline: train, attack, defend, report.

Importing the package keeps TensorFlow's start-up chatter out of the
user's terminal; the variables are only defaults, so a user can still
turn the logs back on.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
