"""`make cluster` for real: the repo's Makefile target, a scheduler and two workers (each with its
nanny) that listen on 127.0.0.1 only, and that Ctrl-C ends, all of them."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers.projects import REPO
from tests.helpers.servers import free_port

pytestmark = pytest.mark.slow  # `make cluster`: a Dask scheduler and workers

WORKERS = 2
# the scheduler's comm and HTTP ports, then per worker its nanny's, its comm and its HTTP ports
PORTS = 2 + 3 * WORKERS


def _tree(root: int) -> list[psutil.Process]:
    """``root`` and every process under it, now."""
    try:
        process = psutil.Process(root)
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _listening(processes: list[psutil.Process]) -> set[tuple[str, int, int]]:
    """``(ip, port, pid)`` of every listening TCP socket of ``processes``."""
    found = set()
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        for connection in connections:
            if connection.status == psutil.CONN_LISTEN:
                found.add((connection.laddr.ip, connection.laddr.port, process.pid))
    return found


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _wait(condition, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def test_make_cluster_listens_on_localhost_only_and_ctrl_c_ends_it(tmp_path):
    make = shutil.which("make")
    if make is None:
        pytest.skip("needs GNU make on PATH")
    port, dashboard = free_port(), free_port()
    command = [
        make,
        "-s",
        "-C",
        str(REPO),
        "-o",
        ".venv/.installed",  # never reinstall from here: this environment is the one to test
        "cluster",
        f"BIN={Path(sys.executable).parent}",
        f"DASK_PORT={port}",
        f"DASK_DASHBOARD_PORT={dashboard}",
        f"DASK_WORKERS={WORKERS}",
    ]
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        # a background `make test &` ignores SIGINT, which its children would keep
        signal.signal(signal.SIGINT, signal.default_int_handler)
    log = tmp_path / "cluster.log"
    with log.open("w") as out:
        cluster = subprocess.Popen(
            command,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal makes it for Ctrl-C
        )
    processes: list[psutil.Process] = []
    try:
        _wait(lambda: _accepts(port), 90, "the scheduler never accepted connections", log)

        def all_listening() -> bool:
            assert cluster.poll() is None, log.read_text()[-3000:]
            return len({(ip, port) for ip, port, _ in _listening(_tree(cluster.pid))}) >= PORTS

        _wait(all_listening, 90, f"fewer than {PORTS} listening ports", log)
        processes = _tree(cluster.pid)
        sockets = _listening(processes)
        addresses = sorted({(ip, port) for ip, port, _ in sockets})
        assert {ip for ip, _ in addresses} == {"127.0.0.1"}, addresses
        assert {("127.0.0.1", port), ("127.0.0.1", dashboard)} <= set(addresses), addresses
        assert len(addresses) == PORTS, addresses
        # the scheduler, the `dask worker` process (its nannies) and each worker process
        assert len({pid for _, _, pid in sockets}) == 2 + WORKERS, sockets

        os.killpg(cluster.pid, signal.SIGINT)  # Ctrl-C
        cluster.wait(timeout=30)
        _wait(lambda: not _alive(processes), 30, f"left running: {_alive(processes)}", log)
        assert not _accepts(port)
    finally:
        if cluster.poll() is None:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
        for process in _alive(processes):
            process.kill()
