"""The layer table of docs/architecture.md, checked by walking every import in the source,
and the processes that must start without torch, checked by starting them.

Imports point down only (prompts, poster → engine → bot), the bot reaches the engine only through
its HTTP client, and no module imports itself back through others. Imports inside functions count
too: a lazy import keeps torch out of a process, it does not make a circle acceptable.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("posterbot", "prompts", "poster", "engine", "bot")
# What each package may import from the others (module name prefixes); stdlib and third-party
# libraries are checked separately below.
# The wiring package: its version, config, errors and files sit below everything; the CLI and
# `run` wire everything.
BELOW_EVERYTHING = ("posterbot.config", "posterbot.errors", "posterbot.files", "posterbot.logs")
ALLOWED = {
    "prompts": (*BELOW_EVERYTHING, "prompts"),
    "poster": (*BELOW_EVERYTHING, "poster"),
    "engine": (*BELOW_EVERYTHING, "prompts", "poster", "engine"),
    "bot": (*BELOW_EVERYTHING, "prompts", "bot", "engine.service.client"),
}
FORBIDDEN_LIBRARIES = {
    "prompts": ("torch", "diffusers", "telegram", "PIL", "numpy"),
    "poster": ("torch", "diffusers", "telegram", "aiohttp"),
    "bot": ("torch", "diffusers", "peft", "transformers", "numpy"),
    "engine": ("telegram",),
}
VERSION = "posterbot"  # posterbot/__init__.py: the version string, importable from anywhere


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imports_of(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every module `path` imports (`from a import b` yields a.b when b is a module)."""
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            for alias in node.names:
                if f"{node.module}.{alias.name}" in known:
                    yield f"{node.module}.{alias.name}"


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {target for target in imports_of(path, known) if target in known}
        for name, path in known.items()
    }


def third_party(path: Path) -> set[str]:
    known = modules()
    return {target.split(".")[0] for target in imports_of(path, known)}


def test_imports_point_down_the_layer_table():
    wrong = []
    for name, targets in graph().items():
        package = name.split(".")[0]
        if name in BELOW_EVERYTHING:
            allowed: tuple[str, ...] = BELOW_EVERYTHING
        elif package == "posterbot":
            continue  # the CLI and run wiring import every package
        else:
            allowed = ALLOWED[package]
        for target in targets:
            if target not in (name, VERSION) and not any(
                target == prefix or target.startswith(prefix + ".") for prefix in allowed
            ):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_layer_imports_the_libraries_of_another():
    wrong = [
        f"{name} imports {library}"
        for name, path in modules().items()
        for library in third_party(path)
        if library in FORBIDDEN_LIBRARIES.get(name.split(".")[0], ())
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_circles():
    edges = graph()
    circles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    assert not circles, circles


def test_the_walk_sees_the_imports_it_checks():
    edges = graph()
    assert "prompts.syntax" in edges["prompts.template"]
    assert len(edges) > 50


def starts_without_torch(modules: str) -> None:
    code = f"import sys, {modules}; assert not {{'torch', 'diffusers'}} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_bot_only_host_starts_the_bot_without_torch():
    starts_without_torch("bot.app, bot.console, bot.cli, bot.handlers, bot.chat")


def test_the_service_process_and_poster_finishing_never_import_torch():
    starts_without_torch("engine.service.lifecycle, engine.cli, poster.compose, poster.output")
