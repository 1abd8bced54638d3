"""A throwaway local Ray cluster around one command: the Ray backend's test harness, and a laptop's way to try it.

    python -m pipeline.tools.ray_cluster --num-cpus 2 -- dvc repro

starts a Ray head (`ray start --head --block`) in its own process group,
with bounded CPUs and its files in a temporary folder, runs the command
with `RAY_ADDRESS` pointing at it, then stops the head by its process
group (SIGINT, as Ctrl-C would, then SIGKILL if it lingers) and returns
the command's exit code. The head requires Ray's token authentication,
with a random token handed to the command in `RAY_AUTH_TOKEN`.

Ray's servers listen on every interface of the network namespace they run
in, whatever address is asked for. So the launcher runs the head and the
command in a private network namespace holding only loopback
(`private_network`, util-linux's unshare), where nothing outside the
machine can reach them, and refuses to start where it cannot make one,
unless `--reachable` says to start it on this machine's network anyway
(token authentication stays on; keep the machine on a trusted network).
Inside the namespace the command reaches nothing outside the machine
either: a tracking server elsewhere needs `--reachable`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
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
    """`argv` run in a new network namespace whose only interface is loopback (util-linux unshare, iproute2).

    A user other than root gets a user namespace too (`--map-root-user`),
    where Linux allows unprivileged ones.
    """
    owner = [] if os.geteuid() == 0 else ["--map-root-user"]
    return ["unshare", "--net", *owner, "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]


def isolated() -> bool:
    """Whether this process's network namespace holds loopback only, so nothing outside the machine reaches it."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]  # this namespace's interfaces (sysfs may show the host's)
    return {line.split(":")[0].strip() for line in lines} <= {"lo"}


def can_isolate() -> bool:
    """Whether `private_network` works here (unshare and ip present, namespaces allowed)."""
    probe = subprocess.run(private_network(["true"]), capture_output=True) if shutil.which("unshare") else None
    return probe is not None and probe.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--reachable", action="store_true",
        help="start the head on this machine's network, reachable from it (token authentication stays on)",
    )  # fmt: skip
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    if not args.reachable and not isolated():
        if not can_isolate():
            print(
                "error: the Ray head would listen on every network interface of this machine, and no private "
                "network namespace can be made here (util-linux's unshare with namespaces allowed); pass --reachable "
                "to start it anyway, with Ray's token authentication, on a trusted network only",
                file=sys.stderr,
            )
            return 2
        again = [sys.executable, "-m", "pipeline.tools.ray_cluster", "--num-cpus", str(args.num_cpus), "--", *command]
        return subprocess.run(private_network(again)).returncode
    with tempfile.TemporaryDirectory(prefix="ray-") as folder, local_cluster(args.num_cpus, Path(folder)) as env:
        return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
