"""Where log lines go: always `<data_dir>/logs/posterbot.log`; the terminal too, unless the
terminal is the conversation (`posterbot console`, or `posterbot run` without a Telegram token),
where only the chat may appear on screen.

Worker processes (spawned, so they start with no logging set up) receive the main process's
`LogSetup` and call `setup_worker`: their lines go to the same file, and when the terminal is the
chat their stdout and stderr too, so a library's progress bar or a C-level warning never lands
between two chat lines. Progress bars are switched off everywhere: in a log file they are noise.
Stdlib only: every layer may call it.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

LOG_NAME = "posterbot.log"
# Past this size the file is renamed to posterbot.log.1 when a command starts: a log a person
# can still open and send, and at most two of them on the data disk.
MAX_LOG_BYTES = 20 * 2**20
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries read these before they draw a progress bar (huggingface_hub, tqdm >= 4.66).
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}


@dataclass(frozen=True)
class LogSetup:
    path: Path
    terminal: bool  # whether log lines also go to stderr
    level: int = logging.INFO


_active: LogSetup | None = None


def active() -> LogSetup | None:
    """The setup of this process (None before `setup_logging`), handed on to worker processes."""
    return _active


def log_path(data_dir: Path) -> Path:
    return Path(data_dir) / "logs" / LOG_NAME


def setup_logging(data_dir: Path, *, terminal: bool, verbose: bool = False) -> LogSetup:
    """Send this process's log lines to `<data_dir>/logs/posterbot.log` (and stderr if
    `terminal`); rotate an oversized file first."""
    global _active
    path = log_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > MAX_LOG_BYTES:
        path.replace(path.with_name(LOG_NAME + ".1"))
    _active = LogSetup(path, terminal, logging.DEBUG if verbose else logging.INFO)
    _install(_active, FORMAT)
    return _active


def setup_worker(setup: LogSetup | None, worker_id: str) -> None:
    """A worker process's logging, from the main process's setup (None: stderr only)."""
    fmt = f"%(asctime)s %(levelname)s worker {worker_id}: %(message)s"
    if setup is None:
        os.environ.update(QUIET_ENV)
        logging.basicConfig(level=logging.INFO, format=fmt)
        return
    if not setup.terminal:  # the terminal is a chat: whatever a library prints goes to the file
        with open(setup.path, "ab") as log_file:
            os.dup2(log_file.fileno(), sys.stdout.fileno())
            os.dup2(log_file.fileno(), sys.stderr.fileno())
    _install(setup, fmt)


def _install(setup: LogSetup, fmt: str) -> None:
    os.environ.update(QUIET_ENV)
    handlers: list[logging.Handler] = [logging.FileHandler(setup.path, encoding="utf-8")]
    if setup.terminal:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=setup.level, format=fmt, handlers=handlers, force=True)
