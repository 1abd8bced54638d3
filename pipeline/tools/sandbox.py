"""A throwaway copy of this project in its own git repository.

The end-to-end test and the pipeline benchmark run the real `dvc repro`
there, so the working tree, its DVC cache and its MLflow store are never
touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
COPIED = (
    "pipeline", "presets", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore",
    ".dvc/.gitignore", ".dvc/config", ".dvc/plots", "data/raw", "metrics/defenses/.gitkeep",
)  # fmt: skip


def sandbox_env(root: Path) -> dict[str, str]:
    """Environment for commands in the copy: this interpreter's tools, the copy's own store."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "GIT_AUTHOR_NAME": "sandbox",
        "GIT_AUTHOR_EMAIL": "sandbox@localhost",
        "GIT_COMMITTER_NAME": "sandbox",
        "GIT_COMMITTER_EMAIL": "sandbox@localhost",
    }
    env.pop("DVC_EXP_NAME", None)
    for setting in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"):
        env.pop(setting, None)  # as on users' machines: bytecode caches written (.dvcignore), output piped in blocks
    return env


def make_sandbox(root: Path, params_text: str | None = None) -> dict[str, str]:
    """Copy the project's pipeline files into `root`, commit them, return the environment to use."""
    for name in COPIED:
        source = PROJECT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    if params_text is not None:
        (root / "params.yaml").write_text(params_text)
    env = sandbox_env(root)
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "sandbox"]):
        subprocess.run(args, cwd=root, env=env, check=True, capture_output=True)
    return env
