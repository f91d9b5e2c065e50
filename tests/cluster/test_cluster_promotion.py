"""Promotion and rollback across a cluster, as real processes on 127.0.0.1: two ``serve
--cluster`` replicas, a leader trainer and a standby, one real valkey-server. The promoted
policy becomes the trainer's learner and reaches every replica through the snapshots; it
survives the leader's kill -9; a rollback returns every replica to the policy it replaced."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest
from fault_helpers import ServerLauncher, write_config
from replica_helpers import ADMIN_KEY, CALL_TIMEOUT_S, acme, cluster_of, wait_for
from test_cluster_learning import Cluster, acknowledged

from banditroute.audit import open_audit_log, verify
from banditroute.cli import main
from banditroute.cluster.central import source_file
from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

MODELS = ("alpha", "beta", "gamma")
QUALITY = {"alpha": 1.0, "beta": 0.1, "gamma": 0.1}
DECISIONS = 240  # fixed:alpha under uniform logging of 3 models: ESS about 80
PROMOTED = "fixed:alpha"


def cluster_config(tmp_path: Path, name: str, replica_id: str = "") -> Path:
    """Replica (or trainer) ``name``: uniform logging over three models (alpha clearly best
    in the tests' feedback), its own log, snapshots every second, the admin key."""
    models = "".join(
        f'\n[[models]]\nid = "{model}"\nprovider = "p{index}"\ninput_usd_per_mtok = 0.1\n'
        f'output_usd_per_mtok = 0.1\ndata_classes = ["public", "internal", "pii"]\n'
        for index, model in enumerate(MODELS)
    )
    path = write_config(
        tmp_path / f"{name}.toml",
        {
            "server": {"port": 0, "grace_s": 2.0},
            "log": {"path": str(tmp_path / f"{name}.duckdb"), "sync_feedback": True},
            "policy": {"kind": "uniform", "snapshot_path": str(tmp_path / f"{name}.snapshot")},
            "cluster": {"replica_id": replica_id or name, "heartbeat_s": 0.2, "retry_s": 0.2,
                        "snapshot_period_s": 1.0, "timeout_s": 10.0},
            "auth": {"admin_key_sha256": [hash_key(ADMIN_KEY)]},
        },
    )  # fmt: skip
    with path.open("a", encoding="utf-8") as handle:
        handle.write(models)
    return path


@pytest.fixture
def cluster(tmp_path: Path, valkey_server: Any) -> Iterator[Cluster]:
    started = Cluster(tmp_path, valkey_server.url, ServerLauncher(tmp_path), config=cluster_config)
    yield started
    started.close()


def served_version(to: pb_grpc.RouterServiceStub) -> str:
    """The policy version of a fresh Route on a replica."""
    decision = to.Route(pb.RouteRequest(prompt="What is 2 plus 2?"), timeout=CALL_TIMEOUT_S)
    return str(decision.policy_version)


def feed(to: pb_grpc.RouterServiceStub) -> None:
    """DECISIONS decisions with feedback in which alpha is clearly best."""
    for index in range(DECISIONS):
        decision = to.Route(
            pb.RouteRequest(prompt=f"Question {index}: what is {index} plus {index}?"),
            timeout=CALL_TIMEOUT_S,
        )
        to.Feedback(
            pb.FeedbackRequest(decision_id=decision.decision_id,
                               quality=QUALITY[decision.model], cost_usd=0.0001),
            timeout=CALL_TIMEOUT_S,
        )  # fmt: skip


def audit_rows(con: duckdb.DuckDBPyConnection) -> list[tuple[str, dict[str, Any]]]:
    rows = con.execute(
        "SELECT kind, CAST(payload AS VARCHAR) FROM audit "
        "WHERE kind IN ('promotion', 'rollback') ORDER BY seq"
    ).fetchall()
    return [(str(kind), json.loads(payload)) for kind, payload in rows]


def test_a_promotion_reaches_every_replica_survives_failover_and_rolls_back(
    cluster: Cluster, valkey_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PromotePolicy on replica A (fixed:alpha clears the gate on A's log) answers only once
    the trainer has made it its learner and published it: A serves it at once and B after
    the next snapshot. The leader trainer is killed (-9); the standby takes over from the
    committed state and publishes a newer snapshot that still carries the promoted policy.
    ``promote --rollback`` then returns both replicas to the uniform policy. A's audit log
    (and its file in the trainer's central log) holds the promotion with its evidence."""
    a, b = cluster.replica("a"), cluster.replica("b")
    leader = cluster.trainer()
    wait_for(lambda: leader.leading, "the trainer to lead")
    standby = cluster.trainer()
    with grpc.insecure_channel(a.address) as to_a, grpc.insecure_channel(b.address) as to_b:
        stub_a, stub_b = pb_grpc.RouterServiceStub(to_a), pb_grpc.RouterServiceStub(to_b)
        wait_for(lambda: cluster_of(stub_b).snapshot_version != "", "B's first snapshot")
        before = served_version(stub_b)
        assert before.startswith("uniform:")
        feed(stub_a)

        response = stub_a.PromotePolicy(
            pb.PromotePolicyRequest(candidate=PROMOTED, margin=0.05),
            metadata=acme(ADMIN_KEY), timeout=CALL_TIMEOUT_S * 4,
        )  # fmt: skip
        assert response.promoted, response.reason
        assert response.policy_version == PROMOTED
        assert response.audit_seq > 0
        assert served_version(stub_a) == PROMOTED  # no revert by a later snapshot
        wait_for(lambda: served_version(stub_b) == PROMOTED, "B to serve the promoted policy")
        decision = stub_b.Route(pb.RouteRequest(prompt="Hello"), timeout=CALL_TIMEOUT_S)
        assert decision.model == "alpha"

        # The promotion record is acknowledged by the trainer (in the central log) ...
        # (GetStats' backlog is as of A's last heartbeat: wait on the trainer's acknowledgement
        # of A's outbox instead.)
        acks = valkey_server.client()
        wait_for(lambda: acknowledged(acks, cluster.tmp_path / "a.duckdb", "a"),
                 "A's rows acknowledged")  # fmt: skip
        # ... and the leader dies: the standby restores the promoted learner.
        version = int(cluster_of(stub_b).snapshot_version)
        leader.kill()
        wait_for(lambda: standby.leading, "the standby to lead")
        wait_for(lambda: int(cluster_of(stub_b).snapshot_version) > version,
                 "a snapshot from the new leader")  # fmt: skip
        assert served_version(stub_a) == PROMOTED
        assert served_version(stub_b) == PROMOTED

        monkeypatch.setenv("BANDITROUTE_API_KEY", ADMIN_KEY)
        assert main(["promote", "--server", b.address, "--rollback"]) == 0
        assert served_version(stub_b).startswith("uniform:")
        wait_for(lambda: served_version(stub_a).startswith("uniform:"), "A to roll back")
        with pytest.raises(grpc.RpcError) as refused:
            stub_b.RollbackPolicy(
                pb.RollbackPolicyRequest(), metadata=acme(ADMIN_KEY), timeout=CALL_TIMEOUT_S * 4
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no promotion to roll back" in (refused.value.details() or "")

    assert a.terminate() == 0
    assert b.terminate() == 0
    assert standby.terminate() == 0
    source = open_audit_log(cluster.tmp_path / "a.duckdb")
    try:
        assert verify(source.connection).ok
        rows = audit_rows(source.connection)
    finally:
        source.connection.close()
    assert [kind for kind, _ in rows] == ["promotion"]
    evidence = rows[0][1]
    assert evidence["verdict"] == "promoted"
    assert evidence["candidate"]["policy"] == PROMOTED
    assert evidence["previous_version"].startswith("uniform:")
    assert evidence["snapshot_version"] > 0
    with duckdb.connect(str(source_file(cluster.central, "a")), read_only=True) as con:
        assert [kind for kind, _ in audit_rows(con)] == ["promotion"]
    source_b = open_audit_log(cluster.tmp_path / "b.duckdb")
    try:
        assert [kind for kind, _ in audit_rows(source_b.connection)] == ["rollback"]
    finally:
        source_b.connection.close()
