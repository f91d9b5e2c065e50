"""The ``[cluster]`` section and ``serve --cluster URL``: typed, validated, and off by default."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from banditroute.cli import main
from banditroute.cluster.connection import replica_name
from banditroute.config import ClusterSettings, load_settings, settings_from_mapping
from banditroute.errors import ConfigError, FailedPrecondition
from banditroute.reload import config_change


def test_cluster_is_off_by_default() -> None:
    """Without [cluster] the settings say no cluster (a lone server, as before)."""
    settings = load_settings()
    assert settings.cluster == ClusterSettings()
    assert not settings.cluster.enabled


def test_cluster_section_is_read_into_typed_settings() -> None:
    """Every key of [cluster] is read into ClusterSettings."""
    settings = settings_from_mapping({
        "cluster": {
            "url": "redis://10.0.0.5:6380/2", "replica_id": "eu-1", "key_prefix": "prod",
            "timeout_s": 0.1, "connect_timeout_s": 0.5, "retry_s": 2, "heartbeat_s": 0.5,
            "snapshot_period_s": 3,
        }
    })  # fmt: skip
    cluster = settings.cluster
    assert cluster.enabled
    assert (cluster.url, cluster.replica_id, cluster.key_prefix) == (
        "redis://10.0.0.5:6380/2", "eu-1", "prod",
    )  # fmt: skip
    assert (cluster.timeout_s, cluster.retry_s, cluster.snapshot_period_s) == (0.1, 2, 3)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"url": "http://host:6379"}, "cluster.url"),
        ({"url": "redis://"}, "cluster.url"),
        ({"url": "redis://host:99999/0"}, "cluster.url"),
        ({"url": "redis://host:6379/zero"}, "cluster.url"),
        ({"url": "unix://"}, "cluster.url"),
        ({"url": 6379}, "cluster.url"),
        ({"timeout_s": 0}, "cluster.timeout_s"),
        ({"retry_s": float("nan")}, "cluster.retry_s"),
        ({"heartbeat_s": -1}, "cluster.heartbeat_s"),
        ({"key_prefix": ""}, "cluster.key_prefix"),
        ({"key_prefix": "a b"}, "cluster.key_prefix"),
        ({"replica_id": "x" * 129}, "cluster.replica_id"),
        ({"replica_id": "a\nb"}, "cluster.replica_id"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_cluster_values_are_refused_naming_the_key(values: dict[str, Any], key: str) -> None:
    """A bad [cluster] value raises ConfigError naming the key."""
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"cluster": values})
    assert key in info.value.message


def test_a_refused_url_is_not_repeated() -> None:
    """The error for a bad URL does not quote it (it may hold a password)."""
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"cluster": {"url": "redis://user:s3cret@host:6379/db"}})
    assert "s3cret" not in info.value.message


def test_cluster_option_overrides_the_config() -> None:
    """``--cluster URL`` (with_overrides) sets cluster.url, survives a re-read, and is
    validated, naming --cluster."""
    settings = load_settings().with_overrides(cluster_url="redis://127.0.0.1:7000/1")
    assert settings.cluster.url == "redis://127.0.0.1:7000/1"
    assert settings.overrides["cluster_url"] == "redis://127.0.0.1:7000/1"
    with pytest.raises(ConfigError, match="--cluster"):
        load_settings().with_overrides(cluster_url="nope")


def test_cluster_with_several_workers_is_refused() -> None:
    """A replica is one serving process: [cluster] with server.workers > 1 is refused."""
    with pytest.raises(ConfigError, match=r"server\.workers"):
        settings_from_mapping({"cluster": {"url": "redis://h:1/0"}, "server": {"workers": 2}})


def test_changing_the_cluster_needs_a_restart() -> None:
    """A reload that changes [cluster] is refused, naming the key."""
    old = load_settings()
    new = settings_from_mapping({"cluster": {"url": "redis://h:1/0"}})
    with pytest.raises(FailedPrecondition, match=r"cluster\.url"):
        config_change(old, new)


def test_serve_with_a_bad_cluster_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """``serve --cluster`` with a bad URL prints one line naming --cluster and exits 2."""
    assert main(["serve", "--cluster", "ftp://x"]) == 2
    err = capsys.readouterr().err
    assert "--cluster" in err
    assert "Traceback" not in err


def test_the_default_replica_id_follows_the_log() -> None:
    """Without replica_id a replica is named after its host and its log path: the same after
    a restart on the same log (its spend replaces its old figures), another for another log;
    a configured replica_id wins."""
    base = {"cluster": {"url": "redis://h:1/0"}}
    first = replica_name(
        settings_from_mapping(base).with_overrides(log_path=Path("a.duckdb")).cluster
    )
    again = replica_name(
        settings_from_mapping(base).with_overrides(log_path=Path("a.duckdb")).cluster
    )
    other = replica_name(
        settings_from_mapping(base).with_overrides(log_path=Path("b.duckdb")).cluster
    )
    assert first == again != other
    assert first.startswith(socket.gethostname())
    named = settings_from_mapping({"cluster": {"url": "redis://h:1/0", "replica_id": "eu-1"}})
    assert replica_name(named.cluster) == "eu-1"
    with pytest.raises(ConfigError, match="log_path"):
        settings_from_mapping({"cluster": {"log_path": "x"}})
