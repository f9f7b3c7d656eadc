"""Run configuration: TOML files, --set overrides, strategy resolution, helpful errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollsift.config import RunConfig, build_config
from rollsift.configlib import ConfigError, explain, parse_value, to_dict
from rollsift.filters.dynamic import DynamicSamplingConfig
from rollsift.filters.pods import PODSConfig
from rollsift.select.greso import GresoConfig
from rollsift.select.uniform import UniformConfig

CONFIGS = sorted((Path(__file__).parents[1] / "src" / "rollsift" / "configs").glob("*.toml"))


def test_defaults_build():
    cfg = build_config()
    assert isinstance(cfg.selector, (UniformConfig, GresoConfig))
    assert isinstance(cfg.filters[0], DynamicSamplingConfig)


def test_toml_then_overrides(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('steps = 7\nfilters = ["dynamic"]\n[selector]\ntype = "greso"\np_easy = 0.3\n[learner]\nlr = 1e-5\n')
    cfg = build_config([str(f)], ["learner.lr=3e-4", "selector.p_hard=0.6", "filters=dynamic,pods", "pods.m=2"])
    assert cfg.steps == 7
    assert cfg.learner.lr == 3e-4
    assert isinstance(cfg.selector, GresoConfig) and cfg.selector.p_easy == 0.3 and cfg.selector.p_hard == 0.6
    assert cfg.filter_names == ["dynamic", "pods"]
    assert isinstance(cfg.filters[1], PODSConfig) and cfg.filters[1].m == 2


def test_unknown_key_names_the_key_and_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lrr'\] in \[learner\]"):
        build_config(overrides=["learner.lrr=1"])
    with pytest.raises(ConfigError, match="p_eazy"):
        build_config(overrides=["selector.type=greso", "selector.p_eazy=0.1"])


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="learner.lr must be a number"):
        build_config(overrides=["learner.lr=fast"])
    with pytest.raises(ConfigError, match="selector.type = 'magic'"):
        build_config(overrides=["selector.type=magic"])
    with pytest.raises(ConfigError, match="filters: 'nope'"):
        build_config(overrides=["filters=nope"])
    with pytest.raises(ConfigError, match="n must be >= 2"):
        build_config(overrides=["n=1"])
    with pytest.raises(ConfigError, match="learner.loss_agg = 'avg'"):
        build_config(overrides=["learner.loss_agg=avg"])


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_config([str(tmp_path / "nope.toml")])


def test_set_values_parse_as_toml_literals():
    assert parse_value("3") == 3 and parse_value("1e-4") == 1e-4 and parse_value("true") is True
    assert parse_value("greso") == "greso" and parse_value("[1, 2]") == [1, 2]


def test_resolved_config_round_trips_through_toml(tmp_path):
    from rollsift.configlib import dumps_toml

    cfg = build_config(overrides=["selector.type=greso", "filters=dynamic,pods", "pods.m=3"])
    f = tmp_path / "resolved.toml"
    f.write_text(dumps_toml(to_dict(cfg)))
    again = build_config([str(f)])
    assert to_dict(again) == to_dict(cfg)


def test_every_field_is_documented():
    for key, _, text in explain(RunConfig):
        assert text, f"config key {key} has no documentation"
    for cls in (GresoConfig, DynamicSamplingConfig, PODSConfig):
        for key, _, text in explain(cls):
            assert text, f"{cls.__name__}.{key} has no documentation"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path):
    build_config([str(path)])
