"""config.toml + POSTERBOT_SECTION__KEY overrides; bad values stop start-up naming the key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from posterbot.config import ConfigError, GenerationSettings, QueueConfig, load_config

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


def test_the_example_config_loads_and_matches_the_defaults():
    config = load_config(EXAMPLE, environ={})
    assert config.engine.port == 7861 and config.generation.sampler_name == "DPM++ 2M Karras"
    assert config.ips and config.ips[0].trigger


def test_the_example_lists_every_generation_setting_with_its_default():
    """[generation] is where defaults live: the example shows each one, equal to the code's."""
    table = tomllib.loads(EXAMPLE.read_text("utf-8"))["generation"]
    assert table == GenerationSettings().settings()


def test_without_a_config_file_the_example_is_used_but_a_named_missing_one_stops(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config.data_dir == Path("./data")
    assert config == load_config(EXAMPLE, environ={})  # a first run has the example's mascot
    assert config.ips[0].name == "dada" and "达达" in config.ips[0].aliases
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(environ={"POSTERBOT_CONFIG": str(tmp_path / "nope.toml")})


def test_env_overrides_with_json_lists_and_numbers(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[engine]\nport = 9000\n[generation]\nsampler_name = "Euler a"\n', "utf-8")
    config = load_config(
        path,
        environ={
            "POSTERBOT_ENGINE__PORT": "9100",
            "POSTERBOT_ENGINE__DEVICES": '["cuda:0", "cuda:1"]',
            "POSTERBOT_GENERATION__NEGATIVE_PROMPT": "123",  # a string field keeps the text
            "POSTERBOT_DATA_DIR": str(tmp_path / "d"),
        },
    )
    assert config.engine.port == 9100
    assert config.engine.devices == ["cuda:0", "cuda:1"]
    assert config.generation.negative_prompt == "123"
    assert config.generation.sampler_name == "Euler a"
    assert config.data_dir == tmp_path / "d"
    assert config.loras_dir == tmp_path / "d" / "models" / "Lora"


@pytest.mark.parametrize(
    ("text", "environ", "key", "reason"),
    [
        ("[engine]\nport = 70000\n", {}, "engine.port", "between 1 and 65535"),
        ('[engine]\nport = "x"\n', {}, "engine.port", "must be an integer"),
        ("[generation]\nwidth = 500\n", {}, "generation.width", "multiple of 8"),
        ("[engine]\nprot = 1\n", {}, "engine.prot", "unknown key"),
        ("", {"POSTERBOT_ENGINE__PORT": "many"}, "engine.port", "must be an integer"),
        ("", {"POSTERBOT_NOPE__X": "1"}, "nope.x", "unknown section"),
        ('[models]\ndevice = "tpu"\n', {}, "models.device", "auto, cpu, cuda"),
        ("port = [", {}, "config.toml", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key_and_the_reason(tmp_path, text, environ, key, reason):
    path = tmp_path / "config.toml"
    path.write_text(text, "utf-8")
    with pytest.raises(ConfigError, match=reason) as caught:
        load_config(path, environ=environ)
    assert key in str(caught.value)


def test_the_example_lists_every_queue_setting_with_its_default():
    """[queue]: the embedded SQLite file unless a Valkey/Redis URL is given."""
    table = tomllib.loads(EXAMPLE.read_text("utf-8"))["queue"]
    assert table == dataclasses.asdict(QueueConfig())


def test_a_queue_url_of_another_scheme_is_refused_by_name(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[queue]\nurl = "amqp://mq/1"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"queue\.url"):
        load_config(path, environ={})
