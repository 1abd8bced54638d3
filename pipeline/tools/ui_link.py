"""Print where the MLflow UI shows this project's runs; `make ui` runs it before starting the server.

MLflow 3's UI opens on a GenAI overview unless the browser has chosen
"Model training" once, whatever the experiment's kind tag says, so the
direct link to the training runs is the reliable way in.

    python -m pipeline.tools.ui_link [port]
"""

from __future__ import annotations

import sys

from pipeline.config import load_params
from pipeline.core.errors import PipelineError
from pipeline.core.tracking import experiment_runs_url
from pipeline.stages.common import ROOT


def main() -> None:
    port = sys.argv[1] if len(sys.argv) > 1 else "5000"
    try:
        experiment = load_params(ROOT / "params.yaml").mlflow.experiment
    except PipelineError as error:
        sys.exit(f"error: {error}")
    print(f"MLflow UI: {experiment_runs_url(experiment, ROOT, f'http://127.0.0.1:{port}')}")
    print('(first visit: click "Model training" at the top of the sidebar; the browser remembers it)')


if __name__ == "__main__":
    main()
