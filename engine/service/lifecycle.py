"""Starting and stopping the whole service: HTTP, the queue and the worker processes.

`running_service` runs it inside another program's event loop (`posterbot run` hosts the bot
beside it); `serve` runs it alone (`posterbot engine`). Neither imports torch: only the worker
processes do.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator

from aiohttp import web

from engine.service.app import make_app
from engine.service.devices import visible_gpu_count, worker_devices
from engine.service.http import blocking
from engine.service.queue_backend import open_queue
from engine.service.shared_files import collect_outputs, shared_files
from engine.service.state import Service
from engine.service.supervisor import Supervisor
from posterbot.config import Config, ConfigError

log = logging.getLogger(__name__)

TOKEN_ENV = "POSTERBOT_ENGINE_TOKEN"  # bearer token for /v1 and /metrics
API_AUTH_ENV = "POSTERBOT_API_AUTH"  # user:pass for /sdapi/v1, like WebUI's --api-auth
# When the service stops, open event streams and waiting WebUI requests get this long to end;
# then they are cut (event clients reconnect to the next service; the job stays queued).
SHUTDOWN_GRACE_S = 3.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name could resolve to anything


def check_credentials(host: str, environ: dict[str, str]) -> tuple[str | None, str | None]:
    """The bearer token and WebUI api-auth from the environment; no open port without a token."""
    token, api_auth = environ.get(TOKEN_ENV) or None, environ.get(API_AUTH_ENV)
    if not is_loopback(host) and not token:
        raise ValueError(f"engine.host: {host} is not loopback; set {TOKEN_ENV} to listen there")
    if api_auth is not None and ":" not in api_auth:
        raise ValueError(f"{API_AUTH_ENV}: must be user:pass")
    return token, api_auth


@contextlib.asynccontextmanager
async def running_service(
    config: Config, host: str, port: int, environ: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """The service (HTTP, queue, worker processes) running until the block exits; yields its URL.

    Runs in the caller's event loop, so `posterbot run` hosts the bot beside it. On exit HTTP
    stops first, then the workers get SIGTERM (their batches go back to the queue).
    """
    # 1. credentials from the environment only, and a port that is free
    token, api_auth = check_credentials(host, dict(os.environ if environ is None else environ))
    check_port_free(host, port)
    # 2. the queue and one worker process per device, supervised from a thread
    devices = worker_devices(config.engine.devices, visible_gpu_count())
    queue = open_queue(config, workers=len(devices))
    supervisor = Supervisor(config, queue, devices)
    runner = web.AppRunner(
        make_app(Service(config, queue, supervisor, token, api_auth)),
        shutdown_timeout=SHUTDOWN_GRACE_S,
    )
    stop = threading.Event()
    supervising = threading.Thread(
        target=supervisor.run, args=(stop,), name="supervisor", daemon=True
    )
    await blocking(supervisor.start)
    supervising.start()
    files = shared_files(config)  # what workers on other hosts made, filed under outputs/
    collecting = threading.Thread(
        target=collect_outputs, args=(config, files, stop), name="collector", daemon=True
    )
    if files is not None:
        collecting.start()
    try:
        # 3. HTTP
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        url = f"http://{host}:{runner.addresses[0][1]}"  # the port bound, also for port 0
        log.info("engine service on %s, workers on %s", url, ", ".join(devices))
        yield url
    finally:
        await runner.cleanup()
        stop.set()
        await blocking(supervising.join)
        if collecting.is_alive():
            await blocking(collecting.join)
        await blocking(supervisor.stop)
        queue.close()


def check_port_free(host: str, port: int) -> None:
    """ConfigError naming the setting when something already listens on `port`: one line for
    the user, before any worker starts (a bind test; port 0 = any free port)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # as aiohttp binds: a port left in TIME_WAIT by a stopped engine is free, a listener not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise ConfigError(
                "engine.port",
                f"port {port} on {host} is already in use (another posterbot engine?): stop it, "
                "or set [engine] port in config.toml or POSTERBOT_ENGINE__PORT",
            ) from None


def serve(config: Config, host: str, port: int, environ: dict[str, str] | None = None) -> None:
    """Run the service alone until SIGINT/SIGTERM."""

    async def until_signal() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        async with running_service(config, host, port, environ):
            await stopping.wait()

    asyncio.run(until_signal())
