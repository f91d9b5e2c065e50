"""A real ``banditroute serve`` process: SIGTERM shuts it down cleanly with every acknowledged
feedback in the log, and a restart on the same files carries on learning where it stopped
(policy snapshot restored) and accepts feedback for decisions made before the restart (pending
decisions restored from the log)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import grpc
import pytest
from fault_helpers import ServerLauncher, ServerProcess

from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 30.0
FAVOURED = "mistralai/mixtral-8x7b-chat"
PROMPTS = (
    "Write a Python function that reverses a string.",
    "What is the capital of Australia?",
    "Solve 12 * 7 + 3 and explain each step.",
    "Summarize the plot of Hamlet in two sentences.",
    "Translate 'good morning' into Spanish.",
)
ROUNDS = 200
_VERSION = re.compile(r"^costaware:[0-9a-f]+:(\d+)$")


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """A config TOML with port 0 and the log and snapshot under tmp_path, and a long window."""
    path = tmp_path / "banditroute.toml"
    path.write_text(
        f"""
[server]
port = 0
grace_s = 2.0

[log]
path = "{tmp_path / "log.duckdb"}"

[policy]
snapshot_path = "{tmp_path / "policy.snapshot"}"

[reward]
window_s = 3600.0
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def start_server(tmp_path: Path, config_path: Path) -> Iterator[Callable[[], ServerProcess]]:
    """Start ``python -m banditroute.cli serve`` on the config and learn its address; every
    process started is killed at teardown if still running."""
    launcher = ServerLauncher(tmp_path)
    yield lambda: launcher.start(config_path)
    launcher.close_all()


def _updates(version: str) -> int:
    match = _VERSION.match(version)
    assert match, version
    return int(match.group(1))


def _favoured_probability(response: pb.RouteResponse) -> float:
    return {e.model: e.probability for e in response.ranking}[FAVOURED]


def _feedback_rows(path: Path) -> list[tuple[str, float, str]]:
    with duckdb.connect(str(path), read_only=True) as log:
        return [
            (str(d), float(r), str(s))
            for d, r, s in log.execute(
                "SELECT decision_id, reward, disposition FROM feedback ORDER BY time"
            ).fetchall()
        ]


@pytest.mark.slow
def test_sigterm_and_restart_keep_learning_and_pending(
    tmp_path: Path, start_server: Callable[[], ServerProcess]
) -> None:
    """Train 200 rounds (favoured model reward 1, others 0), route one decision without
    feedback, SIGTERM: exit code 0 and every acknowledged feedback is in the log. Restart on the
    same files: the policy version's update count continues from the learned count, the
    favoured model stays most probable, the pre-restart decision is replayed for its request_id
    and accepts its feedback, and a decision learned before the restart recognises a repeated
    feedback as a duplicate."""
    first = start_server()
    acknowledged: list[tuple[str, float, str]] = []
    with grpc.insecure_channel(first.address) as channel:
        stub = pb_grpc.RouterServiceStub(channel)
        for index in range(ROUNDS):
            decision = stub.Route(
                pb.RouteRequest(prompt=PROMPTS[index % len(PROMPTS)]), timeout=CALL_TIMEOUT_S
            )
            quality = 1.0 if decision.model == FAVOURED else 0.0
            ack = stub.Feedback(
                pb.FeedbackRequest(decision_id=decision.decision_id, quality=quality),
                timeout=CALL_TIMEOUT_S,
            )
            assert ack.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
            acknowledged.append((decision.decision_id, ack.reward, "LEARNED"))
        trained = stub.Route(
            pb.RouteRequest(prompt=PROMPTS[0], request_id="before-restart"),
            timeout=CALL_TIMEOUT_S,
        )
    assert _updates(trained.policy_version) == ROUNDS
    assert trained.ranking[0].model == FAVOURED
    assert _favoured_probability(trained) > 0.5
    assert first.terminate() == 0, first.log_text()
    assert _feedback_rows(tmp_path / "log.duckdb") == acknowledged

    second = start_server()
    assert "snapshot_restored=True" in second.log_text()
    # Every decision is still inside its reward window: the learned ones come back too, so a
    # repeated feedback is still recognised as a duplicate.
    assert f"pending_restored={ROUNDS + 1}" in second.log_text()
    with grpc.insecure_channel(second.address) as channel:
        stub = pb_grpc.RouterServiceStub(channel)
        restarted = stub.Route(pb.RouteRequest(prompt=PROMPTS[0]), timeout=CALL_TIMEOUT_S)
        assert restarted.policy_version == trained.policy_version
        assert restarted.ranking[0].model == FAVOURED
        assert _favoured_probability(restarted) > 0.5
        replayed = stub.Route(
            pb.RouteRequest(prompt=PROMPTS[0], request_id="before-restart"),
            timeout=CALL_TIMEOUT_S,
        )
        assert replayed.replayed
        assert (replayed.decision_id, replayed.model) == (trained.decision_id, trained.model)
        late = stub.Feedback(
            pb.FeedbackRequest(decision_id=trained.decision_id, quality=1.0),
            timeout=CALL_TIMEOUT_S,
        )
        assert late.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
        assert late.feedback_count == 1
        duplicate = stub.Feedback(
            pb.FeedbackRequest(decision_id=acknowledged[-1][0], quality=1.0),
            timeout=CALL_TIMEOUT_S,
        )
        assert duplicate.disposition == pb.FEEDBACK_DISPOSITION_IGNORED_DUPLICATE
        assert duplicate.feedback_count == 2
        after = stub.Route(pb.RouteRequest(prompt=PROMPTS[1]), timeout=CALL_TIMEOUT_S)
        assert _updates(after.policy_version) == ROUNDS + 1
    assert second.terminate() == 0, second.log_text()
    rows = _feedback_rows(tmp_path / "log.duckdb")
    assert rows == [
        *acknowledged,
        (trained.decision_id, late.reward, "LEARNED"),
        (acknowledged[-1][0], duplicate.reward, "IGNORED_DUPLICATE"),
    ]
