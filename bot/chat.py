"""The whole conversation: every feature's table in one router, and the core they work with.

Adapters (bot/app.py for Telegram, bot/console.py for the terminal) call `start_chat` and then
hand each message, button press and file to the router.
"""

from __future__ import annotations

import aiohttp

from bot.core import Core
from bot.features import (
    access,
    datasets,
    finishing,
    grids,
    history,
    pictures,
    posters,
    retouch,
    settings,
    training,
    versions,
)
from bot.replies import Outbox
from bot.router import Router
from bot.store import Store
from engine.service.client import EngineClient
from posterbot.config import Config

# Files go to the first feature that accepts them: a dataset session's PNG is a dataset file
# before it is a PNG to read (/info); a photo outside a dataset session is a picture to draw from.
FEATURES = [
    access,
    settings,
    posters,
    finishing,
    retouch,
    versions,
    datasets,
    pictures,
    history,
    training,
    grids,
]
ROUTER = Router.of(FEATURES)


def start_chat(
    config: Config,
    store: Store,
    engine: EngineClient,
    outbox: Outbox,
    http: aiohttp.ClientSession | None = None,
    origin: str = "",
) -> Core:
    """The core for one adapter (call `core.follower.resume()` once it can send)."""
    return Core(config, store, engine, outbox, ROUTER.deliveries, http, origin)
