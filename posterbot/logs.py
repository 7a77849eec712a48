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
import typing
from dataclasses import dataclass
from pathlib import Path

LOG_NAME = "posterbot.log"
# Past this size the file is renamed to posterbot.log.1 when a command starts: a log a person
# can still open and send, and at most two of them on the data disk.
MAX_LOG_BYTES = 20 * 2**20
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Environment variables holding secrets; no log line may show their values.
SECRET_ENV = (
    "TELEGRAM_BOT_TOKEN",
    "POSTERBOT_ENGINE_TOKEN",
    "POSTERBOT_LLM_API_KEY",
    "POSTERBOT_API_AUTH",  # user:pass of the WebUI API
)
REDACTED = "[secret]"
MIN_SECRET_CHARS = 6  # shorter values would blank ordinary words in every line
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


class Redacting(logging.Formatter):
    """Every secret this process holds is replaced in each formatted line, tracebacks included:
    the HTTP client logs request URLs, and Telegram's carry the bot token."""

    def __init__(self, fmt: str, secrets: list[str]) -> None:
        super().__init__(fmt)
        # Longest first: a token that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len)[::-1]

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in [*self.secrets, *_protected]:
            line = line.replace(secret, REDACTED)
        return line


_protected: list[str] = []


def protect(secret: str) -> None:
    """A secret made at run time (e.g. the webhook's) is redacted from log lines too."""
    if len(secret) >= MIN_SECRET_CHARS and secret not in _protected:
        _protected.append(secret)


def secrets_in(environ: typing.Mapping[str, str]) -> list[str]:
    """The secret values of SECRET_ENV (and the password part of user:pass values)."""
    found = []
    for name in SECRET_ENV:
        if value := environ.get(name, "").strip():
            found += [value, value.partition(":")[2]]
    return found


def _install(setup: LogSetup, fmt: str) -> None:
    os.environ.update(QUIET_ENV)
    handlers: list[logging.Handler] = [logging.FileHandler(setup.path, encoding="utf-8")]
    if setup.terminal:
        handlers.append(logging.StreamHandler(sys.stderr))
    formatter = Redacting(fmt, secrets_in(os.environ))
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=setup.level, handlers=handlers, force=True)
    # One INFO line per Bot API request is noise (and carried the token in its URL).
    logging.getLogger("httpx").setLevel(logging.WARNING)
