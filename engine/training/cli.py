"""`posterbot` subcommands for training: dataset check/import, train, versions, promote,
rollback, register-lora, export, xyz. Each is a thin shell over engine.training / engine.grid
(the bot and the worker call the same functions). torch is imported inside the commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from posterbot.config import Config


def register(commands: argparse._SubParsersAction) -> None:
    dataset = commands.add_parser("dataset", help="check or import a LoRA training dataset")
    actions = dataset.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="report on a zip or folder (keeps nothing)")
    check.add_argument("path", type=Path)
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--ip", help="the IP whose trigger word captions should have")
    check.add_argument("--lang", choices=("zh", "en"), default="zh", help="the report's language")
    check.set_defaults(handler=dataset_check_command)
    load = actions.add_parser("import", help="bring a zip or folder in as datasets/NAME")
    load.add_argument("path", type=Path)
    load.add_argument("--name", required=True)
    load.add_argument("--ip", help="the IP whose trigger word captions should have")
    load.add_argument("--replace", action="store_true", help="replace an existing dataset")
    load.add_argument("--lang", choices=("zh", "en"), default="zh", help="the report's language")
    load.set_defaults(handler=dataset_import_command)

    train = commands.add_parser("train", help="train a LoRA version of an IP (kohya names)")
    train.add_argument("--ip", required=True)
    train.add_argument("--dataset", required=True, help="a dataset name, or a folder/zip to import")
    train.add_argument(
        "params", nargs="*", metavar="KEY=VALUE", help="e.g. epochs=8 network_dim=16"
    )
    train.set_defaults(handler=train_command)

    versions = commands.add_parser("versions", help="list LoRA versions")
    versions.add_argument("--ip")
    versions.add_argument("--json", action="store_true")
    versions.set_defaults(handler=versions_command)
    promote = commands.add_parser("promote", help="make a version what posters use")
    promote.add_argument("ip")
    promote.add_argument("version", help="e.g. dada-v3 or v3")
    promote.set_defaults(handler=promote_command)
    rollback = commands.add_parser("rollback", help="go back to the previously promoted version")
    rollback.add_argument("ip")
    rollback.set_defaults(handler=rollback_command)
    outside = commands.add_parser("register-lora", help="add a .safetensors LoRA as a version")
    outside.add_argument("ip")
    outside.add_argument("file", type=Path)
    outside.set_defaults(handler=register_lora_command)
    export = commands.add_parser("export", help="print the WebUI-layout file of a version")
    export.add_argument("version")
    export.set_defaults(handler=export_command)

    xyz = commands.add_parser("xyz", help="a labelled X/Y/Z grid of versions, weights, seeds")
    xyz.add_argument("--ip", required=True)
    xyz.add_argument("--prompt", help="default: the trigger word, solo, full body")
    xyz.add_argument(
        "axes",
        nargs="+",
        metavar="AXIS=V1,V2",
        help="versions= weights= seeds= sampler= steps= cfg=",
    )
    xyz.add_argument("-o", "--output", type=Path, required=True, help="the grid PNG")
    xyz.set_defaults(handler=xyz_command)


def _ip(config: Config, name: str | None):
    """The IP named by --ip, else the default IP (None when none is configured)."""
    return config.find_ip(name) if name else config.default_ip_config()


def dataset_check_command(args: argparse.Namespace, config: Config) -> int:
    """Print the dataset report (Chinese or `--lang en` text, or JSON with --json); exit 1 if
    files were rejected."""
    from engine.training.intake import check_dataset

    ip = _ip(config, args.ip)
    report = check_dataset(args.path, config, trigger=ip.trigger if ip else "")
    min_side = config.training.min_image_side
    if args.json:
        print(json.dumps(report.to_dict(min_side), ensure_ascii=False, indent=2))
    else:
        print(report.to_text(min_side, args.lang))
    return 1 if report.rejections else 0


def dataset_import_command(args: argparse.Namespace, config: Config) -> int:
    """Import a zip or folder as datasets/NAME and print its report."""
    from engine.training.intake import import_dataset

    ip = _ip(config, args.ip)
    report = import_dataset(args.path, args.name, config, ip.trigger if ip else "", args.replace)
    print(report.to_text(config.training.min_image_side, args.lang))
    return 0


def train_command(args: argparse.Namespace, config: Config) -> int:
    """Train; a path that is not a dataset name is imported first. Prints progress and the
    result as JSON. Run the same command again after a crash to resume."""
    from engine.training.intake import import_dataset, source_digest
    from engine.training.trainer import run_training
    from prompts.syntax import key_values

    params = key_values(args.params)
    dataset = args.dataset
    source = Path(dataset)
    if not (config.datasets_dir / dataset).is_dir() and source.exists():
        # Named by content: the same zip again is the same dataset, so the same command resumes.
        dataset = f"{args.ip}-{source_digest(source)[:12]}"
        if (config.datasets_dir / dataset).is_dir():
            print(f"{source} was imported before as datasets/{dataset}", flush=True)
        else:
            import_dataset(source, dataset, config, config.find_ip(args.ip).trigger)
            print(f"imported {source} as datasets/{dataset}", flush=True)
    params |= {"ip": args.ip, "dataset": dataset}

    def progress(epoch: int, step: int, total: int, loss: float, eta: float) -> None:
        print(f"epoch {epoch} step {step}/{total} loss {loss:.4f} eta {eta:.0f}s", flush=True)

    result = run_training(config, params, progress)
    print(json.dumps(result, ensure_ascii=False, indent=2, default=str))
    return 0


def versions_command(args: argparse.Namespace, config: Config) -> int:
    """List versions with status, final loss, dim/alpha/epochs and which one is promoted."""
    from engine.training.versions import Versions

    rows = Versions(config).list(args.ip)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for v in rows:
        p = v.get("params") or {}
        loss = f"{v['final_loss']:.4f}" if v.get("final_loss") is not None else "-"
        mark = "*" if v["promoted"] else " "
        print(
            f"{mark} {v['name']:<16} {v['status']:<11} loss {loss:<8} "
            f"dim {p.get('network_dim', p.get('ss_network_dim', '?'))} "
            f"alpha {p.get('network_alpha', p.get('ss_network_alpha', '?'))} "
            f"epochs {v.get('epochs_done', p.get('ss_num_epochs', '?'))}"
        )
    return 0


def promote_command(args: argparse.Namespace, config: Config) -> int:
    """Make VERSION what the IP's posters use (its configured LoRA file is replaced)."""
    from engine.training.versions import Versions, version_name

    version = Versions(config).promote(config.find_ip(args.ip), version_name(args.ip, args.version))
    if not version["changed"]:
        print(f"{args.ip}: posters already use {version['name']}; nothing changed")
        return 0
    print(f"{args.ip}: posters now use {version['name']}")
    return 0


def rollback_command(args: argparse.Namespace, config: Config) -> int:
    """Promote the version that was promoted before the current one."""
    from engine.training.versions import Versions

    version = Versions(config).rollback(config.find_ip(args.ip))
    print(f"{args.ip}: posters now use {version['name']}")
    return 0


def register_lora_command(args: argparse.Namespace, config: Config) -> int:
    """Register a LoRA .safetensors made elsewhere as a new version (pickles refused)."""
    from engine.training.versions import Versions

    print(Versions(config).register(config.find_ip(args.ip), args.file)["name"])
    return 0


def export_command(args: argparse.Namespace, config: Config) -> int:
    """Print the path of the version's WebUI-layout file."""
    from engine.training.versions import Versions

    print(Versions(config).export(args.version))
    return 0


def xyz_command(args: argparse.Namespace, config: Config) -> int:
    """Render an X/Y/Z grid PNG through the engine and print its path."""
    from engine.diffusion.generate import Engine
    from engine.diffusion.grid import render_xyz, xyz_request
    from prompts.syntax import key_values

    request = xyz_request(config, args.ip, key_values(args.axes), args.prompt)
    engines: dict[str | None, Engine] = {}

    def engine_for(model: str | None) -> Engine:
        if model not in engines:
            engines.clear()  # one pipeline in memory at a time
            engines[model] = Engine(config, model=model)
        return engines[model]

    axes, base, lora = request["axes"], request["base"], request["lora"]
    grid = render_xyz(engine_for(None), request["prompt"], axes, base, lora, engine_for)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(grid.png())
    print(args.output)
    return 0
