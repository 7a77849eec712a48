"""The bot's layering: no torch on a bot-only host, only the engine's client, no import circles."""

import ast
import subprocess
import sys
from pathlib import Path

BOT = Path(__file__).parents[2] / "bot"


def test_the_bot_starts_without_torch():
    code = (
        "import sys, bot.app, bot.console, bot.cli, bot.handlers, bot.chat; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, wherever the import stands (type-checking blocks too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def bot_modules() -> dict[str, set[str]]:
    modules = {}
    for path in BOT.rglob("*.py"):
        name = ".".join(path.relative_to(BOT.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = imports_of(path)
    return {name: {i for i in found if i in modules} - {name} for name, found in modules.items()}


def test_the_bot_reaches_the_engine_only_through_its_client():
    engine = {
        (path.name, module)
        for path in BOT.rglob("*.py")
        for module in imports_of(path)
        if module.split(".")[0] == "engine" and not module.startswith("engine.client")
    }
    assert engine == set()


def test_no_import_circles_inside_the_bot():
    graph = bot_modules()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, " → ".join([*path, name])
        if name in done:
            return
        for imported in graph[name]:
            visit(imported, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])
