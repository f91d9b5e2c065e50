"""A burst of concurrent calls larger than the server's max_concurrent_rpcs, at the default
limits: the calls past the limit are shed with RESOURCE_EXHAUSTED (what the README promises),
none is CANCELLED by gRPC core before the server sees it. Bounded: 4,000 calls, loopback."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import grpc
from fault_helpers import ServerLauncher, write_config

from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

BURST = 4000
"""Concurrent calls in the burst: four times the default max_concurrent_rpcs (1,000)."""
CHANNELS = 8
CALL_TIMEOUT_S = 120.0
"""Deadline of each call of the burst: catches a hang only."""


def test_a_burst_past_the_default_limit_is_shed_not_cancelled(
    tmp_path: Path, launcher: ServerLauncher
) -> None:
    """4,000 Route calls started at once over 8 connections against a server with the default
    max_workers and max_concurrent_rpcs: every call ends OK or RESOURCE_EXHAUSTED ("Concurrent
    RPC limit exceeded!"); before, gRPC core's own pending-call limit (1,000, random drops up
    to 3,000) failed hundreds of them as CANCELLED."""
    config = write_config(
        tmp_path / "config.toml",
        {
            "server": {"port": 0},
            "log": {"path": tmp_path / "log.duckdb"},
            "policy": {"snapshot_path": tmp_path / "policy.snapshot"},
        },
    )
    server = launcher.start(config)
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.insecure_channel(server.address, options=options) for _ in range(CHANNELS)]
    try:
        stubs = [pb_grpc.RouterServiceStub(channel) for channel in channels]
        for stub in stubs:  # connected before the burst
            stub.Route(pb.RouteRequest(prompt="warm up"), timeout=CALL_TIMEOUT_S)
        calls = [
            stubs[index % CHANNELS].Route.future(
                pb.RouteRequest(prompt=f"Question {index}?"), timeout=CALL_TIMEOUT_S
            )
            for index in range(BURST)
        ]
        codes: Counter[str] = Counter()
        for call in calls:
            codes[call.code().name] += 1
            if call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert call.details() == "Concurrent RPC limit exceeded!"
    finally:
        for channel in channels:
            channel.close()
    print(f"\n{BURST} concurrent Route calls: {dict(codes)}")
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, dict(codes)
    assert codes["OK"] > 0
    assert server.terminate() == 0, server.log_text()
