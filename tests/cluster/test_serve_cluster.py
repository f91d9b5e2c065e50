"""``banditroute serve --cluster URL`` as real processes: GetStats reports the cluster, the
health detail ``banditroute.cluster`` follows the server, and Route answers while it is down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from fault_helpers import ServerLauncher, ServerProcess, write_config
from grpc_health.v1 import health_pb2, health_pb2_grpc
from replica_helpers import wait_for
from valkey_helpers import ValkeyProcess

from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 30.0


def replica_config(tmp_path: Path, name: str, **cluster: object) -> Path:
    """A config file for one replica: any free port, its log and snapshot under ``tmp_path``,
    fast heartbeats and retries."""
    return write_config(
        tmp_path / f"{name}.toml",
        {
            "server": {"port": 0, "grace_s": 2.0},
            "log": {"path": str(tmp_path / f"{name}.duckdb")},
            "policy": {"snapshot_path": str(tmp_path / f"{name}.snapshot")},
            "cluster": {"replica_id": name, "heartbeat_s": 0.2, "retry_s": 0.2, **cluster},
        },
    )


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``serve --cluster URL`` replicas (killed at teardown if still running)."""
    launcher = ServerLauncher(tmp_path)

    def start(url: str, name: str, **cluster: object) -> ServerProcess:
        config = replica_config(tmp_path, name, **cluster)
        return launcher.start(config, args=("--cluster", url))

    yield start
    launcher.close_all()


def cluster_stats(channel: grpc.Channel) -> pb.ClusterStatus:
    stub = pb_grpc.RouterServiceStub(channel)
    return stub.GetStats(pb.GetStatsRequest(), timeout=CALL_TIMEOUT_S).cluster


def cluster_health(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="banditroute.cluster")
    return int(stub.Check(request, timeout=CALL_TIMEOUT_S).status)


def test_replicas_count_each_other_and_survive_the_server_going(
    valkey_server: ValkeyProcess, replicas: Callable[..., ServerProcess]
) -> None:
    """Two replicas started with --cluster see each other (replicas_alive 2, not degraded,
    health detail SERVING). With valkey-server killed, Route still answers and GetStats and
    the health detail say degraded (the main service stays SERVING); after a restart the
    replica is no longer degraded."""
    first = replicas(valkey_server.url, "a")
    second = replicas(valkey_server.url, "b")
    with grpc.insecure_channel(first.address) as channel:
        wait_for(lambda: cluster_stats(channel).replicas_alive == 2, "two replicas")
        status = cluster_stats(channel)
        assert status.replica_id == "a"
        assert not status.degraded
        assert cluster_health(channel) == health_pb2.HealthCheckResponse.SERVING

        valkey_server.kill()
        wait_for(lambda: cluster_stats(channel).degraded, "degraded")
        assert cluster_stats(channel).HasField("degraded_since")
        assert cluster_health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        health = health_pb2_grpc.HealthStub(channel)
        overall = health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
        assert overall.status == health_pb2.HealthCheckResponse.SERVING
        stub = pb_grpc.RouterServiceStub(channel)
        for index in range(5):
            decision = stub.Route(
                pb.RouteRequest(prompt=f"question {index}"), timeout=CALL_TIMEOUT_S
            )
            assert decision.model

        valkey_server.restart()
        wait_for(lambda: not cluster_stats(channel).degraded, "recovery")
        wait_for(lambda: cluster_stats(channel).replicas_alive == 2, "two replicas again")
        assert cluster_health(channel) == health_pb2.HealthCheckResponse.SERVING
    assert first.terminate() == 0
    assert second.terminate() == 0


def test_a_replica_that_stops_leaves_the_count(
    valkey_server: ValkeyProcess, replicas: Callable[..., ServerProcess]
) -> None:
    """A replica stopped with SIGTERM leaves the registry: the other counts one replica."""
    first = replicas(valkey_server.url, "a")
    second = replicas(valkey_server.url, "b")
    with grpc.insecure_channel(first.address) as channel:
        wait_for(lambda: cluster_stats(channel).replicas_alive == 2, "two replicas")
        assert second.terminate() == 0
        wait_for(lambda: cluster_stats(channel).replicas_alive == 1, "one replica")


def test_without_cluster_getstats_has_no_cluster(tmp_path: Path) -> None:
    """A server without [cluster] leaves GetStats' cluster unset."""
    launcher = ServerLauncher(tmp_path)
    try:
        config = write_config(
            tmp_path / "lone.toml",
            {"server": {"port": 0}, "log": {"path": str(tmp_path / "lone.duckdb")},
             "policy": {"snapshot_path": str(tmp_path / "lone.snapshot")}},
        )  # fmt: skip
        server = launcher.start(config)
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.RouterServiceStub(channel)
            assert not stub.GetStats(pb.GetStatsRequest(), timeout=CALL_TIMEOUT_S).HasField(
                "cluster"
            )
        assert server.terminate() == 0
    finally:
        launcher.close_all()
