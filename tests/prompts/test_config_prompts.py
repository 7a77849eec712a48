"""The config sections the prompt builder reads: [[ips]], [llm], [prompts], [presets.NAME]."""

from __future__ import annotations

from pathlib import Path

import pytest

from posterbot.config import ConfigError, load_config

EXAMPLE = Path(__file__).parents[2] / "config.example.toml"


def _load(tmp_path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, environ={})


def test_example_config_has_presets_and_a_described_ip():
    config = load_config(EXAMPLE, environ={})
    assert config.presets["final"].settings["enable_hr"] is True
    draft = config.presets["draft"].settings
    assert draft["steps"] == 20 and "seed" not in draft
    assert config.ips[0].description and config.ips[0].quality_tags


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[presets.x]\nsteps = "many"\n', "presets.x.steps"),
        ("[presets.x]\nwidth = 500\n", "presets.x.width"),
        ("[presets.x]\ncfg_scale = 0\n", "presets.x.cfg_scale"),
        ("[presets.x]\ncolour = 1\n", "presets.x.colour"),
        ("[presets.x]\nhires = true\n", "presets.x.hires"),
        ("[generation]\nwidth = 500\n", "generation.width"),
        ('[[ips]]\nname = "a"\ntrigger = "x, y"\n', "ips[a].trigger"),
        ('[[ips]]\nname = "a"\ntrigger = "x"\nlora = "../evil"\n', "ips[a].lora"),
        ('[[ips]]\nname = "a"\ntrigger = "x"\nlora_weight = 3.0\n', "ips[a].lora_weight"),
        ('[llm]\nmodel = ""\n', "llm.model"),
        ("[prompts]\nglossary_dir = 3\n", "prompts.glossary_dir"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as error:
        _load(tmp_path, text)
    assert error.value.key == key


def test_a_setting_from_an_earlier_release_names_its_new_name(tmp_path):
    with pytest.raises(ConfigError, match=r"generation\.sampler'.*it is now 'sampler_name'"):
        _load(tmp_path, '[generation]\nsampler = "Euler a"\n')
    with pytest.raises(ConfigError, match=r"presets\.final\.hires'.*it is now 'enable_hr'"):
        _load(tmp_path, "[presets.final]\nhires = true\n")
