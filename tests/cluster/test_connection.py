"""The link to a real valkey-server: bounded calls, the degraded circuit, recovery, and the
replica registry kept by heartbeats."""

from __future__ import annotations

import time

import pytest
from valkey_helpers import ValkeyProcess

from banditroute.cluster.connection import ClusterLink, Degraded
from banditroute.cluster.registry import Registry
from banditroute.config import ClusterSettings

HANG_BOUND_S = 30.0
"""Generous bound that only catches a hang."""


def _settings(url: str, **values: object) -> ClusterSettings:
    return ClusterSettings(url=url, **values)  # type: ignore[arg-type]


def test_link_runs_commands_under_its_prefix(valkey_server: ValkeyProcess) -> None:
    """A link runs commands on the server; its keys start with the configured prefix."""
    link = ClusterLink(_settings(valkey_server.url, key_prefix="t1", replica_id="r1"))
    try:
        key = link.key("a", "b")
        assert key == "t1:a:b"
        assert link.call(lambda client: client.set(key, "1"))
        assert valkey_server.client().get("t1:a:b") == b"1"
        assert not link.degraded
        assert link.replica_id == "r1"
    finally:
        link.close()


def test_server_down_degrades_at_once_and_recovery_is_noticed(
    valkey_server: ValkeyProcess,
) -> None:
    """After the server is killed a call fails with Degraded and the link reports degraded;
    while the circuit is open calls are refused without waiting on the network; once the
    server is back and retry_s has passed, a call succeeds, the link is no longer degraded,
    and listeners hear of both transitions."""
    now = [0.0]
    link = ClusterLink(
        _settings(valkey_server.url, retry_s=5.0, timeout_s=0.5), clock=lambda: now[0]
    )
    changes: list[bool] = []
    link.on_change(changes.append)
    try:
        assert link.ping()
        valkey_server.kill()
        with pytest.raises(Degraded):
            link.call(lambda client: client.ping())
        assert link.degraded
        assert link.status().degraded_since is not None
        assert changes == [True]
        valkey_server.restart()
        # The circuit is open for retry_s: refused without trying, though the server is back.
        with pytest.raises(Degraded):
            link.call(lambda client: client.ping())
        now[0] = 5.0
        assert link.call(lambda client: client.ping())
        assert not link.degraded
        assert changes == [True, False]
        assert link.status().outages == 1
    finally:
        link.close()


def test_a_stalled_server_costs_a_call_at_most_the_timeout(
    valkey_server: ValkeyProcess,
) -> None:
    """A server that keeps its connections but answers nothing (SIGSTOP) makes a call fail
    with Degraded after about timeout_s instead of hanging, and the calls after it are refused
    at once; once it runs again (SIGCONT) and retry_s has passed, calls succeed."""
    now = [0.0]
    link = ClusterLink(
        _settings(valkey_server.url, timeout_s=0.2, retry_s=1.0), clock=lambda: now[0]
    )
    try:
        assert link.ping()
        valkey_server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(Degraded):
                link.call(lambda client: client.ping())
            with pytest.raises(Degraded):
                link.call(lambda client: client.ping())
            assert time.monotonic() - started < HANG_BOUND_S
        finally:
            valkey_server.resume()
        now[0] = 1.0
        assert link.ping()
    finally:
        link.close()


def test_registry_counts_replicas_and_forgets_those_that_leave(
    valkey_server: ValkeyProcess,
) -> None:
    """Replicas that beat are counted and their addresses listed; one that leaves is gone
    from the count at the next beat; the count is kept when the server is unreachable."""
    links = [
        ClusterLink(_settings(valkey_server.url, replica_id=f"r{i}", retry_s=60.0))
        for i in range(3)
    ]
    try:
        registries = [Registry(link, f"127.0.0.1:{5000 + i}") for i, link in enumerate(links)]
        counts = [registry.beat() for registry in registries]
        assert counts == [1, 2, 3]
        assert registries[0].members() == {
            "r0": "127.0.0.1:5000", "r1": "127.0.0.1:5001", "r2": "127.0.0.1:5002",
        }  # fmt: skip
        assert registries[0].address_of("r2") == "127.0.0.1:5002"
        registries[2].leave()
        assert registries[0].beat() == 2
        assert registries[0].address_of("r2") is None
        valkey_server.kill()
        assert registries[0].beat() == 2  # the last count known
        assert registries[0].alive == 2
    finally:
        for link in links:
            link.close()


def test_registry_drops_a_replica_silent_for_three_beats(valkey_server: ValkeyProcess) -> None:
    """A replica that stops beating (killed) is no longer counted once three of its
    heartbeat periods have passed."""
    links = [
        ClusterLink(_settings(valkey_server.url, replica_id=f"r{i}", heartbeat_s=0.1))
        for i in range(2)
    ]
    try:
        live, silent = (Registry(link, "x:1") for link in links)
        silent.beat()
        assert live.beat() == 2
        deadline = time.monotonic() + HANG_BOUND_S
        while live.beat() != 1:
            assert time.monotonic() < deadline, "the silent replica is still counted"
            time.sleep(0.05)
    finally:
        for link in links:
            link.close()
