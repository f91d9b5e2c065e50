"""Settings: embedded defaults, user files overriding them, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from banditroute.config import (
    Settings,
    as_policy_kind,
    config_path_from_environment,
    load_settings,
    settings_from_mapping,
)
from banditroute.errors import ConfigError, InvalidArgument

ROUTERBENCH_MODELS = {
    "gpt-4-1106-preview",
    "gpt-3.5-turbo-1106",
    "claude-v1",
    "claude-v2",
    "claude-instant-v1",
    "meta/llama-2-70b-chat",
    "meta/code-llama-instruct-34b-chat",
    "mistralai/mixtral-8x7b-chat",
    "mistralai/mistral-7b-chat",
    "zero-one-ai/Yi-34B-Chat",
    "WizardLM/WizardLM-13B-V1.2",
}


def test_defaults_load(default_settings: Settings) -> None:
    """The embedded defaults give the 11 RouterBench models and the 'balanced' objective."""
    assert len(default_settings.catalog) == 11
    assert set(default_settings.catalog.ids) == ROUTERBENCH_MODELS
    assert default_settings.default_objective == "balanced"
    assert {"balanced", "quality", "economy", "fast"} <= set(default_settings.objectives)
    assert default_settings.objective("").name == "balanced"
    assert default_settings.policy.kind == "costaware"
    assert default_settings.reward.combine == "first"
    assert default_settings.server.max_prompt_chars == 400_000
    assert default_settings.source == "<embedded defaults>"


def test_user_file_overrides_only_its_keys(tmp_path: Path) -> None:
    """A user TOML file overrides the keys it sets and keeps every other default."""
    path = tmp_path / "banditroute.toml"
    path.write_text(
        """
[server]
port = 6000

[reward]
combine = "mean"
window_s = 30

[policy]
kind = "linucb"
vw_args = ["--cb_explore_adf", "--epsilon", "0.2"]
snapshot_path = "snap/policy.bin"

[objective]
default = "thrifty"

[objectives.thrifty]
cost = 500.0
budget = 0.001
""",
        encoding="utf-8",
    )
    settings = load_settings(path)
    assert settings.source == str(path)
    assert settings.server.port == 6000
    assert settings.server.host == "127.0.0.1"
    assert settings.reward.combine == "mean"
    assert settings.reward.window_s == 30
    assert settings.reward.on_missing == "skip"
    assert settings.policy.kind == "linucb"
    assert settings.policy.vw_args == ("--cb_explore_adf", "--epsilon", "0.2")
    assert settings.policy.snapshot_path == Path("snap/policy.bin")
    assert settings.default_objective == "thrifty"
    thrifty = settings.objective("")
    assert thrifty.cost == 500.0
    assert thrifty.quality == 1.0
    assert thrifty.budget_usd == 0.001
    assert "balanced" in settings.objectives
    assert len(settings.catalog) == 11


def test_models_list_replaces_the_catalogue() -> None:
    """A [[models]] list replaces the whole catalogue; its sets become frozensets."""
    settings = settings_from_mapping(
        {
            "models": [
                {
                    "id": "local",
                    "provider": "me",
                    "input_usd_per_mtok": 0,
                    "output_usd_per_mtok": 0,
                    "capabilities": ["code"],
                }
            ],
            "policy": {"kind": "fixed", "fixed_model": "local"},
        }
    )
    assert settings.catalog.ids == ("local",)
    assert settings.catalog.get("local").capabilities == frozenset({"code"})


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"server": {"prot": 1}}, "prot"),
        ({"reward": {"windw_s": 1.0}}, "windw_s"),
        ({"sever": {"port": 1}}, "sever"),
        ({"objective": {"defualt": "fast"}}, "defualt"),
        ({"objectives": {"mine": {"qualiti": 1.0}}}, "qualiti"),
        ({"languages": {"require_taged": ["fr"]}}, "require_taged"),
        (
            {
                "models": [
                    {
                        "id": "x",
                        "provider": "p",
                        "input_usd_per_mtok": 1,
                        "output_usd_per_mtok": 1,
                        "colour": "red",
                    }
                ]
            },
            "colour",
        ),
    ],
)
def test_unknown_key_is_rejected_naming_it(data: dict[str, Any], key: str) -> None:
    """A misspelt key or section raises ConfigError whose message names it."""
    with pytest.raises(ConfigError, match=key):
        settings_from_mapping(data)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"port": "abc"}}, "server.port"),
        ({"server": {"max_workers": 0}}, "max_workers"),
        ({"server": {"max_concurrent_rpcs": 0}}, "max_concurrent_rpcs"),
        ({"server": {"max_prompt_chars": -5}}, "max_prompt_chars"),
        ({"log": {"batch_size": 0}}, "batch_size"),
        ({"log": {"sync_feedback": "yes"}}, "log.sync_feedback"),
        ({"policy": {"kind": "bandit"}}, "policy.kind"),
        ({"policy": {"kind": "fixed", "fixed_model": "gpt-5"}}, "policy.fixed_model"),
        ({"policy": {"vw_args": ["--epsilon", 0.1]}}, "policy.vw_args"),
        ({"reward": {"combine": "median"}}, "reward.combine"),
        ({"reward": {"on_missing": "guess"}}, "reward.on_missing"),
        ({"reward": {"window_s": 0}}, "window_s"),
        ({"reward": {"default_reward": float("nan")}}, "reward.default_reward"),
        ({"reward": {"clock_skew_s": -1.0}}, "reward.clock_skew_s"),
        ({"policy": {"snapshot_interval_s": 0}}, "snapshot_interval_s"),
        ({"policy": {"snapshot_interval_s": float("nan")}}, "snapshot_interval_s"),
        ({"policy": {"price_prior": -1.0}}, "policy.price_prior"),
        ({"policy": {"price_prior": float("inf")}}, "policy.price_prior"),
        ({"policies": {"mine": {"price_prior": float("nan")}}}, "policies.mine.price_prior"),
        ({"policy": {"joint_thompson": "yes"}}, "policy.joint_thompson"),
        ({"reward": {"clock_skew_s": "5s"}}, "reward.clock_skew_s"),
        ({"objective": {"default": "nope"}}, "objective.default"),
        ({"objectives": {"mine": {"cost": -1.0}}}, "objectives.mine"),
        ({"objectives": {"mine": {"cost": "cheap"}}}, "objectives.mine"),
        ({"objectives": {"mine": {"cost": "cheap"}}}, "cost"),
        ({"objectives": {"mine": {"cost": "5"}}}, "cost"),
        ({"objectives": {"mine": {"latency": True}}}, "latency"),
        ({"objectives": {"mine": {"budget": "0.001"}}}, "budget"),
        ({"models": "gpt-4"}, "models"),
        ({"models": [{"id": "x", "provider": "p", "input_usd_per_mtok": "free",
                      "output_usd_per_mtok": 1}]}, "input_usd_per_mtok"),
        ({"models": [{"id": "x", "provider": "p", "input_usd_per_mtok": -1,
                      "output_usd_per_mtok": 1}]}, "input_usd_per_mtok"),
        ({"models": []}, "models"),
        ({"models": [{"id": "x", "provider": "p", "input_usd_per_mtok": 1,
                      "output_usd_per_mtok": 1, "capabilities": "code"}]}, "models.capabilities"),
        ({"models": [{"id": "x", "provider": "p", "input_usd_per_mtok": 1,
                      "output_usd_per_mtok": 1, "data_classes": "pii"}]}, "models.data_classes"),
        ({"server": "fast"}, "server"),
    ],
)  # fmt: skip
def test_bad_value_is_rejected_naming_the_key(data: dict[str, Any], key: str) -> None:
    """A value of the wrong type or range raises ConfigError (never TypeError) naming the key."""
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data)
    assert key in info.value.message
    assert info.value.status == "INVALID_ARGUMENT"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist raises ConfigError naming the file."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml") as info:
        load_settings(missing)
    assert info.value.field == "config"


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not TOML raises ConfigError saying so."""
    path = tmp_path / "broken.toml"
    path.write_text("[server\nport = ", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_settings(path)
    assert info.value.field == "config"


def test_unknown_objective_name_is_invalid_argument(default_settings: Settings) -> None:
    """Asking the settings for an unknown objective raises InvalidArgument on 'objective'."""
    with pytest.raises(InvalidArgument, match="nope") as info:
        default_settings.objective("nope")
    assert info.value.field == "objective"


def test_with_overrides_replaces_port_and_log_path(default_settings: Settings) -> None:
    """with_overrides applies --port and --log and leaves the rest unchanged."""
    changed = default_settings.with_overrides(port=7000, log_path=Path("x.duckdb"))
    assert changed.server.port == 7000
    assert changed.log.path == Path("x.duckdb")
    assert changed.server.host == default_settings.server.host
    assert default_settings.server.port == 50051


def test_log_override_moves_the_default_snapshot_beside_the_log(default_settings: Settings) -> None:
    """--log PATH puts the policy snapshot beside PATH when the config left it at its default,
    so two servers with different --log do not share one snapshot; a configured snapshot path
    stays where the config put it."""
    moved = default_settings.with_overrides(log_path=Path("/srv/a/router.duckdb"))
    assert moved.policy.snapshot_path == Path("/srv/a/router.policy.snapshot")
    assert default_settings.with_overrides(port=1).policy == default_settings.policy
    custom = settings_from_mapping({"policy": {"snapshot_path": "/data/mine.snapshot"}})
    kept = custom.with_overrides(log_path=Path("/srv/b/log.duckdb"))
    assert kept.policy.snapshot_path == Path("/data/mine.snapshot")
    none = settings_from_mapping({"policy": {"snapshot_path": None}})
    assert none.with_overrides(log_path=Path("l.duckdb")).policy.snapshot_path is None


def test_as_policy_kind_validates() -> None:
    """A policy kind from the command line is checked against the known kinds."""
    assert as_policy_kind("linucb") == "linucb"
    with pytest.raises(ConfigError, match="--policy"):
        as_policy_kind("greedy")


def test_config_path_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """BANDITROUTE_CONFIG names the config file; unset or empty means none."""
    monkeypatch.setenv("BANDITROUTE_CONFIG", "/etc/banditroute.toml")
    assert config_path_from_environment() == Path("/etc/banditroute.toml")
    monkeypatch.setenv("BANDITROUTE_CONFIG", "")
    assert config_path_from_environment() is None
    monkeypatch.delenv("BANDITROUTE_CONFIG")
    assert config_path_from_environment() is None
