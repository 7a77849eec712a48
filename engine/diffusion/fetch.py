"""`posterbot models fetch`: put a model file where the engine looks for it.

A source is a name from the catalogue (`models_catalogue.toml`, what the product is tested to
load), a Hugging Face id `org/name/file` (through `HF_ENDPOINT`'s resolve URLs, so a mirror
works), a ModelScope id `modelscope:org/name/file`, or a plain URL. The file lands in the WebUI
folder of its kind under the data folder. Downloads go to `<file>.part` and resume with an HTTP
Range request after a cut; a known sha256 is checked and a file that does not match is removed.
Only `.safetensors` is accepted (and `.pth` for upscalers and face restorers, which spandrel reads
with a restricted unpickler): pickles run code when loaded.

A fetched single-file base checkpoint is converted once to a diffusers folder beside it
(`models/Stable-diffusion/<name>/`) with the shipped offline configs; `[models] base = "<name>"`
then loads the folder (the registry looks for a folder before a file), `"<name>.safetensors"`
the file. No torch at import.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from posterbot.config import Config
from posterbot.errors import Refusal

CATALOGUE = Path(__file__).with_name("models_catalogue.toml")
KIND_FOLDERS = {  # kind → WebUI's folder under <data_dir>/models
    "checkpoint": "Stable-diffusion",
    "lora": "Lora",
    "vae": "VAE",
    "upscaler": "ESRGAN",
    "controlnet": "ControlNet",
    "face_restorer": "GFPGAN",
}
PTH_KINDS = {"upscaler", "face_restorer"}  # spandrel reads their .pth with a restricted unpickler
HF_ENDPOINT = "https://huggingface.co"
MODELSCOPE_ENDPOINT = "https://modelscope.cn/models"
CHUNK_BYTES = 1 << 20
ATTEMPTS = 5  # a cut connection is resumed this many times before giving up
PROGRESS_EVERY_S = 0.5


@dataclass(frozen=True)
class Source:
    url: str
    filename: str
    kind: str | None = None
    sha256: str = ""


def catalogue() -> dict[str, dict]:
    with open(CATALOGUE, "rb") as file:
        return tomllib.load(file)


def resolve(spec: str) -> Source:
    """Where `spec` (a catalogue name, hub id, `modelscope:` id or URL) is downloaded from."""
    entry = catalogue().get(spec)
    if entry is not None:
        source = resolve(entry["source"])
        return Source(source.url, source.filename, entry["kind"], entry.get("sha256", ""))
    if spec.startswith(("http://", "https://")):
        filename = unquote(urlsplit(spec).path.rpartition("/")[2])
        return Source(spec, filename)
    if spec.startswith("modelscope:"):
        org, name, file = _split_id(spec.removeprefix("modelscope:"), spec)
        return Source(f"{MODELSCOPE_ENDPOINT}/{org}/{name}/resolve/master/{file}", Path(file).name)
    org, name, file = _split_id(spec, spec)
    endpoint = os.environ.get("HF_ENDPOINT", HF_ENDPOINT).rstrip("/")
    return Source(f"{endpoint}/{org}/{name}/resolve/main/{file}", Path(file).name)


def _split_id(text: str, spec: str) -> tuple[str, str, str]:
    parts = text.strip("/").split("/", 2)
    if len(parts) < 3 or not all(parts):
        known = ", ".join(catalogue())
        raise ValueError(
            f"source: {spec!r} is not a catalogue name ({known}), an id org/name/file "
            "(modelscope:org/name/file) or a URL"
        )
    return parts[0], parts[1], parts[2]


def check_file_type(filename: str, kind: str) -> None:
    """Only formats that cannot run code when loaded (see registry.PICKLE_SUFFIXES)."""
    suffix = Path(filename).suffix.lower()
    allowed = {".safetensors", ".pth"} if kind in PTH_KINDS else {".safetensors"}
    if suffix not in allowed:
        raise Refusal(
            "source",
            f"{filename} is not {' or '.join(sorted(allowed))}; pickle files (.ckpt, .pt, .bin) "
            "can run code when loaded, so they are not fetched",
            "model_format",
            filename=filename,
        )


def fetch(
    config: Config,
    spec: str,
    kind: str | None = None,
    sha256: str = "",
    convert: bool = True,
    progress=None,
) -> Path:
    """Download `spec` into its kind's folder and return the file (numbered steps below)."""
    # 1. check inputs: where from, what kind, and a format that is safe to load
    source = resolve(spec)
    kind = kind or source.kind
    if kind not in KIND_FOLDERS:
        raise ValueError(
            f"kind: {kind!r} for {spec!r}; give --kind, one of {', '.join(KIND_FOLDERS)}"
        )
    check_file_type(source.filename, kind)
    expected = (sha256 or source.sha256).lower()
    target = config.data_dir / "models" / KIND_FOLDERS[kind] / source.filename
    # 2. download (resuming a .part), then check it
    if not target.exists():
        part = target.with_name(target.name + ".part")
        asyncio.run(download(source.url, part, progress or _progress_bar(source.filename)))
        _verify(part, source.filename, expected)
        part.replace(target)
    elif expected:
        _verify(target, source.filename, expected, remove=False)
    # 3. a base checkpoint becomes a diffusers folder once, so loads never need the network
    if kind == "checkpoint" and convert and target.suffix == ".safetensors":
        convert_checkpoint(target, config.data_dir / "cache", config.models.single_file_config)
    return target


def _verify(path: Path, filename: str, expected: str, remove: bool = True) -> None:
    if filename.endswith(".safetensors"):
        from engine.diffusion.single_file import read_header

        try:
            read_header(path)
        except ValueError:
            if remove:
                path.unlink()
            raise ValueError(
                f"source: {filename}: the download is not a .safetensors file (an error page?); "
                "removed"
            ) from None
    if not expected:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(CHUNK_BYTES):
            digest.update(block)
    if digest.hexdigest() != expected:
        if remove:
            path.unlink()
        raise Refusal(
            "sha256",
            f"{filename} has sha256 {digest.hexdigest()}, not {expected}"
            + ("; the download was removed" if remove else ""),
            "model_sha256",
            filename=filename,
        )


async def download(url: str, part: Path, progress=None) -> None:
    """Download `url` into `part`, appending to what an earlier try left there."""
    import aiohttp

    part.parent.mkdir(parents=True, exist_ok=True)
    headers = {}
    token = os.environ.get("HF_TOKEN")
    if token and url.startswith(os.environ.get("HF_ENDPOINT", HF_ENDPOINT)):
        headers["Authorization"] = f"Bearer {token}"  # gated repositories
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await _download_once(session, url, part, headers, progress)
                return
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                if attempt == ATTEMPTS:
                    raise ValueError(
                        f"source: {url}: the connection broke {ATTEMPTS} times ({exc}); run "
                        "the same command again to resume"
                    ) from None
            except aiohttp.ClientError as exc:
                raise ValueError(f"source: {url}: {exc}") from None


async def _download_once(session, url: str, part: Path, headers: dict, progress) -> None:
    done = part.stat().st_size if part.exists() else 0
    ranged = {**headers, "Range": f"bytes={done}-"} if done else headers
    async with session.get(url, headers=ranged) as response:
        if response.status == 416 and done:  # nothing left: the .part is whole
            return
        if response.status not in (200, 206):
            raise ValueError(f"source: {url}: HTTP {response.status} {response.reason}")
        if response.status == 200:
            done = 0  # the server ignored the Range: start again
        total = done + (response.content_length or 0) if response.content_length else None
        with open(part, "ab" if done else "wb") as file:
            async for block in response.content.iter_chunked(CHUNK_BYTES):
                file.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)


def _progress_bar(name: str):
    """A one-line progress bar on stderr, only when it is a terminal."""
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()
    shown = [0.0]

    def show(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - shown[0] < PROGRESS_EVERY_S and done != total:
            return
        shown[0] = now
        rate = done / max(now - started, 1e-6) / 2**20
        share = f"{100 * done / total:5.1f}% of {total / 2**30:.2f} GB" if total else ""
        print(f"\r{name}: {done / 2**30:.2f} GB {share} {rate:.1f} MB/s", end="", file=sys.stderr)
        if done == total:
            print(file=sys.stderr)

    return show


def convert_checkpoint(path: Path, cache_dir: Path, config: str = "") -> Path:
    """`models/Stable-diffusion/<name>/`: the diffusers folder of single-file checkpoint `path`,
    written once (temp folder + rename) with the shipped offline configs (or `config`)."""
    import torch

    from engine.diffusion import single_file

    folder = path.with_suffix("")
    if (folder / "model_index.json").exists():
        return folder
    tensors = single_file.read_header(path)
    half = any(t.dtype == "F16" for n, t in tensors.items() if n.startswith("model.diffusion_"))
    dtype = torch.float16 if half else torch.float32  # keep the file's precision (and size)
    pipe = single_file.load(path, cache_dir, dtype, config=config, txt2img=False)
    staging = folder.with_name(f".{folder.name}.converting")
    shutil.rmtree(staging, ignore_errors=True)
    pipe.save_pretrained(staging, safe_serialization=True)
    # save_pretrained writes every scheduler default (timestep_spacing ...), but a sampler built
    # from the config keeps only what the config names: keep the file's, so both draw alike.
    scheduler = pipe.scheduler.config
    named = {
        k: v for k, v in scheduler.items() if k not in scheduler.get("_use_default_values", [])
    }
    named.pop("_use_default_values", None)
    (staging / "scheduler" / "scheduler_config.json").write_text(json.dumps(named, indent=2))
    staging.rename(folder)
    return folder


# --- the command -------------------------------------------------------------------------------


def register(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="model files: fetch, list the catalogue")
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    fetch_parser = actions.add_parser(
        "fetch", help="download a model into its WebUI folder", description=fetch_command.__doc__
    )
    fetch_parser.add_argument(
        "source", nargs="?", help="catalogue name, org/name/file, modelscope:org/name/file or URL"
    )
    fetch_parser.add_argument("--list", action="store_true", help="print the catalogue")
    fetch_parser.add_argument("--kind", choices=list(KIND_FOLDERS), help="(catalogue: known)")
    fetch_parser.add_argument("--sha256", default="", help="expected sha256 of the file")
    fetch_parser.add_argument(
        "--convert",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write a diffusers folder beside a fetched base checkpoint (default: yes)",
    )
    fetch_parser.set_defaults(handler=fetch_command)


def fetch_command(args: argparse.Namespace, config: Config) -> int:
    """Download a model file (resumable, sha256 checked when known) and print its path."""
    if args.list:
        for name, entry in catalogue().items():
            print(
                f"{name:26} {entry['kind']:13} {entry['size']:>8}  {entry['licence']:24} "
                f"{entry['source']}"
            )
        return 0
    if not args.source:
        raise ValueError("source: give a catalogue name, id or URL (or --list)")
    print(fetch(config, args.source, args.kind, args.sha256, args.convert))
    return 0
