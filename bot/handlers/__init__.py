"""Telegram handlers: each turns an Update into the core's `Incoming`/`Press` and calls it."""
