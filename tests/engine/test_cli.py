"""`posterbot generate` and `posterbot demo-model` as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys

from PIL import Image

from engine.diffusion import infotext


def posterbot(*args, env_extra=None, cwd=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "posterbot", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_generate_writes_pngs_with_infotext_and_prints_their_paths(tmp_path, tiny_model):
    run = posterbot(
        "generate", "a cat, (snow:1.2)",
        "--model", str(tiny_model),
        "--width", "64", "--height", "96", "--steps", "3", "--seed", "12",
        "--batch-size", "2", "--sampler", "DPM++ 2M Karras", "--cfg-scale", "6.5",
        "--negative-prompt", "lowres", "--hires", "--hr-scale", "1.5",
        "-o", str(tmp_path / "out"),
        env_extra={"POSTERBOT_DATA_DIR": str(tmp_path / "data")},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    paths = run.stdout.split()
    assert len(paths) == 2 and all(p.endswith(".png") for p in paths)
    assert paths[0].endswith("-12.png") and paths[1].endswith("-13.png")
    with Image.open(paths[1]) as image:
        assert image.size == (96, 144)
        parsed = infotext.parse(image.text["parameters"])
    assert parsed["Prompt"] == "a cat, (snow:1.2)" and parsed["Negative prompt"] == "lowres"
    assert parsed["Seed"] == "13" and parsed["CFG scale"] == "6.5"
    assert parsed["Sampler"] == "DPM++ 2M Karras" and parsed["Hires upscale"] == "1.5"


def test_bad_flags_fail_before_loading_a_model_naming_the_argument(tmp_path):
    run = posterbot(
        "generate", "x", "--sampler", "Fast", env_extra={"POSTERBOT_DATA_DIR": str(tmp_path)}
    )
    assert run.returncode == 2
    assert "sampler_name: unknown sampler 'Fast'; valid: Euler a" in run.stderr
    assert not (tmp_path / "models").exists()  # nothing was loaded or written


def test_demo_model_command_writes_a_loadable_model(tmp_path):
    run = posterbot("demo-model", str(tmp_path / "demo"))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "demo" / "model_index.json").exists()
    assert (tmp_path / "demo" / "tokenizer" / "vocab.json").exists()
    assert (tmp_path / "demo" / "tokenizer" / "merges.txt").read_text().startswith("#version: 0.2")


def test_default_run_uses_the_demo_model_and_warns_loudly(tmp_path):
    run = posterbot(
        "generate", "x", "--width", "64", "--height", "64", "--steps", "2",
        env_extra={"POSTERBOT_DATA_DIR": str(tmp_path)}, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "DEMO MODEL" in run.stderr
    with Image.open(run.stdout.split()[0]) as image:
        assert "Demo model:" in image.text["parameters"]


def test_saved_tokenizer_files_give_the_pipeline_token_ids(tiny_model):
    from transformers import CLIPTokenizer

    folder = tiny_model / "tokenizer"
    from_files = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    from_folder = CLIPTokenizer.from_pretrained(folder)
    text = "dadaknight, a delivery rider in the snow, 圣诞, (christmas:1.2)"
    assert from_files(text).input_ids == from_folder(text).input_ids
    assert len(from_folder(text).input_ids) > 10


def test_poster_prints_a_finished_png_and_svg_per_channel_and_info_reads_it(tmp_path):
    from poster.output import read_poster_chunk
    from tests.poster.conftest import mascot_picture

    picture = tmp_path / "picture.png"
    mascot_picture().save(picture)
    env = {"POSTERBOT_DATA_DIR": str(tmp_path / "data")}
    run = posterbot(
        "poster", str(picture), "--title", "圣诞快乐", "--subtitle", "达达送福到家",
        "--size", "小红书", "--size", "A4", "-o", str(tmp_path / "out"), env_extra=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    printed = run.stdout.split()
    assert [p.rsplit(".", 1)[1] for p in printed] == ["png", "svg", "png", "svg"]
    with Image.open(printed[0]) as xiaohongshu, Image.open(printed[2]) as a4:
        assert xiaohongshu.size == (1242, 1660) and a4.size == (2480, 3508)
        assert round(a4.info["dpi"][0]) == 300
    with open(printed[0], "rb") as file:
        assert read_poster_chunk(file.read())["copy"]["title"] == "圣诞快乐"
    info = posterbot("info", printed[0], env_extra=env)
    assert info.returncode == 0 and "title: 圣诞快乐" in info.stdout and "1242x1660" in info.stdout


def test_poster_refuses_an_unknown_size_in_one_line(tmp_path):
    picture = tmp_path / "picture.png"
    Image.new("RGB", (64, 64)).save(picture)
    run = posterbot("poster", str(picture), "--title", "x", "--size", "huge")
    assert run.returncode != 0 and "size" in run.stderr and "Traceback" not in run.stderr
