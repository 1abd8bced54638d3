"""A throwaway local Ray cluster around one command: the Ray backend's test harness, and a laptop's way to try it.

    python -m pipeline.tools.ray_cluster --num-cpus 2 -- dvc repro

starts a Ray head (`ray start --head --block`) in its own process group,
with bounded CPUs and its files in a temporary folder, runs the command
with `RAY_ADDRESS` pointing at it, then stops the head by its process
group (SIGINT, as Ctrl-C would, then SIGKILL if it lingers) and returns
the command's exit code. The head requires Ray's token authentication,
with a random token handed to the command in `RAY_AUTH_TOKEN`. Ray's servers listen on every interface of the
network namespace they run in, whatever address is asked for, so the
tests run this inside a private network namespace holding only loopback
(`private_network`), where nothing outside the machine can reach them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_START_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ray_command() -> str:
    beside = Path(sys.executable).with_name("ray")  # the ray of this interpreter's environment
    return str(beside) if beside.is_file() else "ray"


def stop_group(process: subprocess.Popen, grace_s: float = 30) -> None:
    """Stop a process and its group: SIGINT, then SIGKILL if it has not exited within `grace_s`."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)


def _ready(address: str, env: dict[str, str], timeout_s: float) -> bool:
    """Whether the head at `address` answers `ray status` within the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        probe = subprocess.run([_ray_command(), "status", f"--address={address}"], env=env, capture_output=True, timeout=60)
        if probe.returncode == 0:
            return True
        time.sleep(1)
    return False


@contextlib.contextmanager
def local_cluster(num_cpus: int, folder: Path) -> Iterator[dict[str, str]]:
    """A Ray head with `num_cpus` CPUs (one worker each), files under `folder`.

    Yields the environment a client needs: `RAY_ADDRESS`, and the random
    token of Ray's token authentication, which the head requires.
    """
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    log = open(folder / "head.log", "wb")  # noqa: SIM115 (open while the head runs, closed in the finally below)
    head = subprocess.Popen(
        [
            _ray_command(), "start", "--head", "--block", f"--port={port}", f"--num-cpus={num_cpus}", "--num-gpus=0",
            "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={folder / 'ray'}",
        ],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{port}"
        if not _ready(address, env, _START_TIMEOUT_S):
            raise RuntimeError(f"the Ray head did not start within {_START_TIMEOUT_S} s; see {folder / 'head.log'}")
        yield {**env, "RAY_ADDRESS": address}
    finally:
        stop_group(head)
        log.close()


def private_network(argv: list[str]) -> list[str]:
    """`argv` run in a new network namespace whose only interface is loopback (util-linux unshare, iproute2)."""
    return ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    with tempfile.TemporaryDirectory(prefix="ray-") as folder, local_cluster(args.num_cpus, Path(folder)) as env:
        return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
