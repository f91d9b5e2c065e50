"""The semantic features in a served process on the default settings: on from the first Route,
from the table shipped in the package, with no model package or cache file in reach."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import grpc
import pytest
from fault_helpers import ServerLauncher, write_config

from banditroute.policies.costaware import SEMANTIC_DIMS
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc


def test_a_default_server_routes_with_the_shipped_embedding_from_its_first_request(
    launcher: ServerLauncher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve` on the default [features] says in its listening line that the shipped table is
    used, starts without distilling anything (the user's cache directory is an empty one and
    stays empty), and logs the embedding's 16 components with its very first decision."""
    cache_home = tmp_path / "cache-home"
    cache_home.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))  # inherited by the server process
    config = write_config(
        tmp_path / "banditroute.toml",
        {"server": {"port": 0, "grace_s": 1.0}, "log": {"path": str(tmp_path / "log.duckdb")},
         "policy": {"snapshot_path": str(tmp_path / "policy.snapshot")}},
    )  # fmt: skip
    server = launcher.start(config)
    assert "semantic_features=shipped" in server.listening_line(), server.log_text()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.RouterServiceStub(channel)
        decision = stub.Route(pb.RouteRequest(prompt="Sort a list in python"), timeout=30)
    assert server.terminate() == 0, server.log_text()
    assert "embedding_distil" not in server.log_text()
    assert list(cache_home.iterdir()) == []
    with duckdb.connect(str(tmp_path / "log.duckdb"), read_only=True) as log:
        (features,) = log.execute(
            "SELECT features FROM decisions WHERE decision_id = ?", [decision.decision_id]
        ).fetchone() or (None,)
    assert features is not None
    embedding = json.loads(features)["embedding"]
    assert len(embedding) == SEMANTIC_DIMS
    assert any(value != 0.0 for value in embedding)
