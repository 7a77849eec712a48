"""`posterbot prompt "<request>" [--json]`."""

from __future__ import annotations

import argparse
import json

import pytest

from prompts import cli


def _run(config, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["prompt", *argv])
    return args.handler(args, config)


def test_json_output(config, capsys):
    assert (
        _run(config, "达达骑士在雪地里送快递，圣诞海报，竖版，来4张，标题「圣诞快乐」", "--json")
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["trigger"] == "dadaknight" and data["title"] == "圣诞快乐"
    assert data["prompt"].endswith("<lora:dada_v3:0.8>")
    assert (data["width"], data["height"], data["batch_size"]) == (512, 768, 4)


def test_text_output_reads_like_webui(config, capsys):
    _run(config, "京东狗在公园 1080x1920", "--preset", "final", "--no-llm")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("joydog, a white cartoon dog mascot")
    assert "Steps: 30, Sampler: DPM++ 2M Karras" in out[1]
    assert "Size: 448x832 -> 1080x1920" in out[1] and "Hires: on" in out[1]


def test_ip_flag_picks_the_ip(config, capsys):
    _run(config, "在公园", "--ip", "joy", "--json")
    assert json.loads(capsys.readouterr().out)["ip"] == "joy"


def test_bad_preset_is_a_value_error(config):
    with pytest.raises(ValueError, match="preset: no preset named 'nope'"):
        _run(config, "达达", "--preset", "nope")
