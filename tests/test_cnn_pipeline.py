"""A tiny CNN pipeline in a real `dvc repro`, with oneDNN off, then its training again with oneDNN on: same metrics.

TensorFlow's default CPU kernels (oneDNN off) cannot differentiate the
grouped convolution the stack's CNN uses where it can, and TensorFlow turns
oneDNN on by default only on some CPUs; `pipeline.stack.conv` then splits
the convolution per model (test_kernels.py shows each kernel set takes its
own path). Each kernel set stands in for one kind of CPU.

The scenario (fixture `cnn`), in a fresh sandbox with the tiny preset,
`target.architecture: cnn` and the shadow classifier's family fixed:

1. with `TF_ENABLE_ONEDNN_OPTS=0`: `dvc repro train_attack`, which trains
   the target, shadow and reference CNNs and attacks the target (DP-SGD's
   CNN paths run under both kernel sets in `tests/test_kernels.py`);
2. the metrics it wrote are kept; then with `TF_ENABLE_ONEDNN_OPTS=1` the
   same training is forced again (`dvc repro -f -s` of its three training
   stages) and `dvc repro train_attack` redoes what follows from it.

Written metrics stop at 6 significant digits (`pipeline.core.io.rounded`),
beyond the float32 differences between the kernel sets, so they must agree.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import yaml
from scenarios import Sandbox, ran_stages

from pipeline.tools.presets import applied, overrides
from pipeline.tools.sandbox import PROJECT

pytestmark = pytest.mark.slow

TRAINING = ("train_target", "train_shadows", "train_reference")


@dataclass(frozen=True)
class KernelRuns:
    box: Sandbox
    off_log: str  # step 1, oneDNN off
    off_metrics: dict[str, str]
    on_logs: str  # step 2, oneDNN on
    on_metrics: dict[str, str]


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> KernelRuns:
    params = applied(
        yaml.safe_load((PROJECT / "params.yaml").read_text()),
        {
            **overrides("tiny", PROJECT / "presets"), "target.architecture": "cnn",
            "attack.shadow_classifier.classifier": "logistic_regression",  # one family, not the search: the kernels are the point
        },
    )  # fmt: skip
    box = Sandbox.create(tmp_path_factory.mktemp("cnn") / "repo", yaml.safe_dump(params, sort_keys=False))
    off = Sandbox(box.root, {**box.env, "TF_ENABLE_ONEDNN_OPTS": "0"})
    off_log = off.repro("train_attack").stdout
    off_metrics = box.metrics()
    on = Sandbox(box.root, {**box.env, "TF_ENABLE_ONEDNN_OPTS": "1"})
    on_logs = on.repro("-f", "-s", *TRAINING).stdout + on.repro("train_attack").stdout
    return KernelRuns(box, off_log, off_metrics, on_logs, box.metrics())


def test_a_tiny_cnn_pipeline_trains_and_attacks_with_onednn_off(cnn: KernelRuns) -> None:
    assert ran_stages(cnn.off_log) == {
        "validate", "prepare", "train_target", "train_shadows", "train_reference", "build_attack_dataset", "train_attack",
    }  # fmt: skip
    params = cnn.box.params()
    target = json.loads(cnn.off_metrics["metrics/target.json"])
    assert target["test_accuracy"] > 0.2  # ten classes: it learned
    assert list(json.loads(cnn.off_metrics["metrics/attacks.json"])) == params["attack"]["enabled"]
    shadows = json.loads(cnn.off_metrics["metrics/shadows.json"])
    assert shadows["n_models"] == params["shadows"]["n_models"] and shadows["in_accuracy"] > shadows["out_accuracy"]


def _leaves(tree: object, where: str = "") -> dict[str, object]:
    """A parsed metrics file's values by dotted path."""
    if isinstance(tree, dict):
        return {path: value for key, item in tree.items() for path, value in _leaves(item, f"{where}.{key}").items()}
    return {where: tree}


def _agree(path: str, off: object, on: object) -> bool:
    """Equal, but for an attack's raw score threshold, which agrees to 1e-3 relative or 1e-12 absolute."""
    if path.endswith(".threshold") and isinstance(off, float) and isinstance(on, float):
        return math.isclose(off, on, rel_tol=1e-3, abs_tol=1e-12)
    return off == on


def test_the_written_metrics_agree_with_onednn_on_and_off(cnn: KernelRuns) -> None:
    """Every metric the training and the attacks wrote, to the last written digit, but the attacks' raw score thresholds.

    A threshold is one point's score in the score's own units: where the
    score is tiny (the entropy of a confident prediction, 1e-4) or zero,
    float32 differences in the logits move it in the 5th significant digit,
    or off zero to 1e-17, so it is compared to 1e-3 relative and 1e-12
    absolute; every other value exactly.
    """
    assert set(TRAINING) <= ran_stages(cnn.on_logs)  # the training reran with oneDNN on
    assert set(cnn.off_metrics) == set(cnn.on_metrics)
    differences = []
    for name in sorted(cnn.off_metrics):
        off, on = (_leaves(json.loads(files[name]), name) for files in (cnn.off_metrics, cnn.on_metrics))
        assert list(off) == list(on), name
        differences += [(path, off[path], on[path]) for path in off if not _agree(path, off[path], on[path])]
    assert differences == []
