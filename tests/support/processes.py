"""This project's commands as child processes: started, logged, stopped; ports for them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_S = 20.0


def python_process(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[str]:
    """Start `python -m ...` of this project with `env` on top of the current environment."""
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env={**os.environ, **env}, text=True, **kwargs
    )


def logged_process(
    args: list[str], env: dict[str, str], log: Path, stdout: int | None = None
) -> subprocess.Popen[str]:
    """`python_process` with stderr (and stdout unless piped) appended to `log`."""
    with log.open("a") as sink:
        out: int | IO[str] = sink if stdout is None else stdout
        return python_process(args, env, stdout=out, stderr=sink)


def stop(proc: subprocess.Popen[str], grace: float = STOP_GRACE_S) -> int:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(grace)
        except subprocess.TimeoutExpired:
            print(f"pid {proc.pid} ignored SIGTERM for {grace:.0f} s: SIGKILL", flush=True)
            proc.kill()
    return proc.wait()


@contextmanager
def running(
    args: list[str], env: dict[str, str], log: Path, stdout: int | None = None
) -> Iterator[subprocess.Popen[str]]:
    """`logged_process` for the length of a `with` block, stopped (`stop`) when it ends."""
    proc = logged_process(args, env, log, stdout)
    try:
        yield proc
    finally:
        stop(proc)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port (within half a second)."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0
