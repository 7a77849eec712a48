"""The bot's features, one module each; the router merges their tables (bot/router.py)."""
