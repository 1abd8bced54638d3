"""A team tracking server: `mlflow server` on a PostgreSQL store, artifacts proxied through the server.

Used by `tests/test_tracking_server.py`, and for a local demo:

    python -m pipeline.tools.tracking_server /tmp/mlflow-team   # prints the MLFLOW_TRACKING_URI to export

`postgres_cluster` starts a throwaway cluster of Debian's `postgresql`
(`.ci/run` installs it) in a given folder: data, log and unix socket there,
TCP on 127.0.0.1 only, trust authentication. PostgreSQL refuses to run as
root, so under root it runs as Debian's `postgres` user, which must be
able to reach the folder (one under /tmp is). `tracking_server` starts
`mlflow server` on 127.0.0.1; the server needs `psycopg2-binary` (the
`dev` extra), the pipeline only talks HTTP to it. Both are stopped on
exit, by the PIDs and process groups they started, also when the block fails.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.tools.ui_check import free_port

DEBIAN_POSTGRES = Path("/usr/lib/postgresql")
SUPERUSER = "mlflow"  # the cluster's superuser and the database's name


@dataclass(frozen=True)
class Postgres:
    """A running cluster: its SQLAlchemy URI (naming the psycopg2 driver), TCP port and postmaster PID."""

    uri: str
    port: int
    pid: int


@dataclass(frozen=True)
class TrackingServer:
    """A running `mlflow server`: its base URL (the MLFLOW_TRACKING_URI), PID and artifacts folder."""

    url: str
    port: int
    pid: int
    artifacts: Path


def postgres_bin() -> Path | None:
    """The newest `/usr/lib/postgresql/<version>/bin` holding initdb and postgres, or None."""
    found = [p.parent for p in DEBIAN_POSTGRES.glob("*/bin/initdb") if (p.parent / "postgres").is_file()]
    numbers = [(int(m.group()) if (m := re.match(r"\d+", b.parent.name)) else -1, b) for b in found]
    return max(numbers, key=lambda pair: pair[0])[1] if numbers else None


def _as_server_user() -> dict[str, Any]:
    """Popen arguments that drop root to Debian's `postgres` user; none when not root."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")  # created by Debian's postgresql package
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _checked(args: list[str], **popen: Any) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, **popen)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def _stop(process: subprocess.Popen, sig: signal.Signals, group: bool) -> None:
    """Send `sig` (to the process group if `group`), then SIGKILL the group if it has not exited in 30 s."""
    with contextlib.suppress(ProcessLookupError):
        (os.killpg if group else os.kill)(process.pid, sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.is_file() else ""


@contextlib.contextmanager
def postgres_cluster(directory: Path, timeout_s: float = 60.0) -> Iterator[Postgres]:
    """A fresh cluster in `directory` with database `mlflow`; stopped (fast shutdown) on exit."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError(f"no PostgreSQL under {DEBIAN_POSTGRES} (apt-get install postgresql; .ci/run does)")
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    owner = _as_server_user()
    if owner:
        os.chown(directory, owner["user"], owner["group"])
    data, log, port = directory / "data", directory / "postgres.log", free_port()
    _checked(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
        cwd=directory, **owner,
    )  # fmt: skip
    options = ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={directory}", "-c", "fsync=off"]
    with open(log, "wb") as log_file:
        postmaster = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), *options],
            cwd=directory, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, **owner,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        ready = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
        while subprocess.run(ready, timeout=30).returncode != 0:
            if postmaster.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not come up on port {port}:\n{_tail(log)}")
            time.sleep(0.2)
        _checked([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, SUPERUSER])
        yield Postgres(f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{port}/{SUPERUSER}", port, postmaster.pid)
    finally:
        # Backends call setsid(), so the postmaster itself shuts them down: SIGINT is its fast shutdown.
        _stop(postmaster, signal.SIGINT, group=False)


@contextlib.contextmanager
def tracking_server(backend_uri: str, artifacts: Path, log: Path, timeout_s: float = 120.0) -> Iterator[TrackingServer]:
    """`mlflow server` on 127.0.0.1, storing artifacts under `artifacts`; its process group is stopped on exit."""
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow), "server", "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts.resolve()),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # GenAI job workers: seven processes unused here
    with open(log, "wb") as log_file:
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not come up on {url} (exit code {server.poll()}):\n{_tail(log)}")
            time.sleep(0.5)
        yield TrackingServer(url, port, server.pid, artifacts.resolve())
    finally:
        _stop(server, signal.SIGTERM, group=True)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def main(argv: list[str]) -> int:
    """Start PostgreSQL and `mlflow server` under the folder argv[0] until Ctrl-C."""
    if len(argv) != 1:
        print("usage: python -m pipeline.tools.tracking_server <folder>", file=sys.stderr)
        return 2
    folder = Path(argv[0]).resolve()
    (folder / "artifacts").mkdir(parents=True, exist_ok=True)
    with postgres_cluster(folder / "postgres") as db:
        with tracking_server(db.uri, folder / "artifacts", folder / "mlflow-server.log") as server:
            print(f"export MLFLOW_TRACKING_URI={server.url}   # then: make run   (Ctrl-C stops both)", flush=True)
            for sig in (signal.SIGINT, signal.SIGTERM):  # either one stops both servers
                signal.signal(sig, signal.default_int_handler)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
