"""Real replica processes for the cluster tests and benchmarks: a config file per replica
(tenant ``acme`` with a hard cap, one model with a rate limit) and the calls the tests make."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc

from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

ACME_KEY = "acme-secret-key"
ADMIN_KEY = "admin-secret-key"
LIMITED = "mistralai/mistral-7b-chat"
"""The model the replicas' config gives a rate limit (``LIMITED_RPM`` requests/min)."""
LIMITED_RPM = 12
CALL_TIMEOUT_S = 30.0
WAIT_BOUND_S = 60.0
"""Generous bound on waits for shared state to show (catches a hang only)."""


def replica_config(
    tmp_path: Path,
    name: str,
    *,
    cap_usd: float = 1.0,
    cluster: str = "",
    server: str = "",
    named: bool = True,
) -> Path:
    """A config file for replica ``name``: any free port, its log and snapshot under
    ``tmp_path``, fast heartbeats; tenant ``acme`` (key ACME_KEY) capped at ``cap_usd`` a
    day; LIMITED at LIMITED_RPM requests/min (the rest of the catalogue as by default). Its
    replica_id is ``name`` unless ``named`` is false (then the default, from its log)."""
    from importlib import resources

    defaults = resources.files("banditroute").joinpath("default_config.toml").read_text("utf-8")
    models = defaults[defaults.index("[[models]]") :]
    marker = f'id = "{LIMITED}"\n'
    models = models.replace(marker, marker + f"requests_per_minute = {LIMITED_RPM}\n", 1)
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""
[server]
port = 0
grace_s = 2.0
{server}

[log]
path = "{tmp_path / f"{name}.duckdb"}"

[policy]
snapshot_path = "{tmp_path / f"{name}.snapshot"}"

[cluster]
{f'replica_id = "{name}"' if named else ""}
heartbeat_s = 0.2
retry_s = 0.2
# Patient commands: a slow answer on a loaded machine must not make a replica decide alone
# (a killed server refuses connections at once).
timeout_s = 10.0
{cluster}

[auth]
admin_key_sha256 = ["{hash_key(ADMIN_KEY)}"]

[[tenants]]
name = "acme"
api_key_sha256 = ["{hash_key(ACME_KEY)}"]

[tenants.budget]
period = "day"
limit_usd = {cap_usd!r}

{models}
""",
        encoding="utf-8",
    )
    return path


def stub(address: str) -> tuple[grpc.Channel, pb_grpc.RouterServiceStub]:
    """A channel and stub to one replica."""
    channel = grpc.insecure_channel(address)
    return channel, pb_grpc.RouterServiceStub(channel)


def acme(key: str = ACME_KEY) -> tuple[tuple[str, str], ...]:
    """Call metadata with an API key."""
    return (("x-api-key", key),)


def wait_for(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` until it holds (bounded by WAIT_BOUND_S)."""
    deadline = time.monotonic() + WAIT_BOUND_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def cluster_of(stub_: pb_grpc.RouterServiceStub) -> pb.ClusterStatus:
    """GetStats' cluster figures (as the admin)."""
    reply = stub_.GetStats(pb.GetStatsRequest(), metadata=acme(ADMIN_KEY), timeout=CALL_TIMEOUT_S)
    return reply.cluster
