"""Servers and process groups the tests start: a free port, an MLflow server, a group's
processes, and a headless Chromium to look at a page."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_mlflow_server(project: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``python -m gradlab.mlflow_server`` serving ``project``'s store on a free port, in its own
    process group (its workers go with it), once it answers; the process and its URL."""
    url = f"http://127.0.0.1:{free_port()}"
    # one worker (passed on to `mlflow server`) starts in half the time of the default four
    command = [sys.executable, "-m", "gradlab.mlflow_server", "--port", url.rpartition(":")[2]]
    with log.open("w") as out:
        server = subprocess.Popen(
            [*command, "--workers", "1"],
            cwd=project,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_until_healthy(url, server, log)
    return server, url


def wait_until_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Wait until an MLflow server answers at ``url``; fail with its log if it died or took
    longer than ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert server.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)


def group_members(pgid: int) -> list[int]:
    """Live processes (not zombies) of process group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to a process group, SIGKILL to what is left after 30 s."""
    os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_members(process.pid):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def chromium() -> str:
    """A Chromium on PATH; skips the test where there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("needs a Chromium on PATH (Debian: apt install chromium; .ci/run installs it)")
