"""The local Ray launcher starts its head only where nothing outside the machine reaches it, unless told otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from pipeline.tools.ray_cluster import private_network

needs_unshare = pytest.mark.skipif(
    shutil.which("unshare") is None and not os.environ.get("CI"), reason="util-linux's unshare (.ci/run installs it)"
)


def _launch(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ} if path is None else {**os.environ, "PATH": path}
    return subprocess.run([sys.executable, "-m", "pipeline.tools.ray_cluster", *args], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_it_refuses_a_reachable_head_where_no_private_namespace_can_be_made(tmp_path):
    """No unshare on PATH (as on a machine without namespaces): one line, exit 2, no head started."""
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "sh").symlink_to(shutil.which("sh"))
    result = _launch("--num-cpus", "1", "--", "true", path=str(bare))
    assert result.returncode == 2
    assert result.stderr.startswith("error: the Ray head would listen on every network interface of this machine")
    assert "--reachable" in result.stderr and result.stderr.count("\n") == 1


@needs_unshare
def test_its_private_namespace_holds_loopback_only():
    probe = "from pipeline.tools.ray_cluster import isolated; print(isolated())"
    inside = subprocess.run(private_network([sys.executable, "-c", probe]), capture_output=True, text=True, check=True)
    outside = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert inside.stdout.strip() == "True"
    assert outside.stdout.strip() in ("True", "False")  # this machine's own namespace may be either
