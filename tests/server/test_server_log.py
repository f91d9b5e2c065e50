"""The DuckDB log a stopped service leaves behind: one row per decision with the whole
distribution, one row per acknowledged feedback with its fragments, reward and disposition."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
import grpc
import pytest

from banditroute.config import load_settings
from banditroute.server.app import Service
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

CATALOGUE = load_settings().catalog.ids
STATUS_NAMES = {
    pb.OUTCOME_STATUS_UNSPECIFIED: "OK",
    pb.OUTCOME_STATUS_OK: "OK",
    pb.OUTCOME_STATUS_ERROR: "ERROR",
    pb.OUTCOME_STATUS_TIMEOUT: "TIMEOUT",
}
FEEDBACK_COLUMNS = (
    "decision_id, model, quality, cost_usd, input_tokens, output_tokens, latency_ms, status, "
    "reward, disposition"
)


def _expected_row(
    decision: pb.RouteResponse,
    request: pb.FeedbackRequest,
    ack: pb.FeedbackResponse,
    cost_usd: float | None,
) -> tuple[Any, ...]:
    def opt(name: str) -> Any:
        return getattr(request, name) if request.HasField(name) else None

    return (
        decision.decision_id,
        request.model or decision.model,
        opt("quality"),
        cost_usd,
        opt("input_tokens"),
        opt("output_tokens"),
        opt("latency_ms"),
        STATUS_NAMES[request.status],
        ack.reward,
        pb.FeedbackDisposition.Name(ack.disposition).removeprefix("FEEDBACK_DISPOSITION_"),
    )


def _check_decision_row(row: tuple[Any, ...], decision: pb.RouteResponse) -> None:
    eligible, probabilities, model, probability, version, objective, epoch = row
    assert len(eligible) == len(probabilities)
    assert list(eligible) == [m for m in CATALOGUE if m in eligible]  # catalogue order
    assert math.isclose(sum(probabilities), 1.0, abs_tol=1e-9)
    assert dict(zip(eligible, probabilities, strict=True)) == {
        e.model: e.probability for e in decision.ranking
    }
    assert (model, probability) == (decision.model, decision.probability)
    assert probabilities[list(eligible).index(model)] == probability
    assert version == decision.policy_version
    assert objective == decision.objective
    assert epoch == pytest.approx(decision.decide_time.ToNanoseconds() / 1e9, abs=1e-5)


def test_log_holds_every_decision_and_acknowledged_feedback(
    service: Service,
    stub: pb_grpc.RouterServiceStub,
    stopped_log: Callable[[Service], duckdb.DuckDBPyConnection],
) -> None:
    """After stop, the log has one row per routed decision (a replayed request_id adds none)
    with the eligible list, a probability vector summing to 1 and the chosen model and its
    probability as answered, and one row per acknowledged feedback with the fragments, reward,
    status and disposition answered; a rejected feedback leaves no row."""
    decisions: dict[str, pb.RouteResponse] = {}
    acknowledged: list[tuple[Any, ...]] = []

    def route(**fields: Any) -> pb.RouteResponse:
        fields.setdefault("prompt", "Explain why the sky is blue.")
        response: pb.RouteResponse = stub.Route(pb.RouteRequest(**fields), timeout=10)
        decisions[response.decision_id] = response
        return response

    def feedback(
        decision: pb.RouteResponse, priced: float | None = None, **fields: Any
    ) -> pb.FeedbackResponse:
        """Send feedback; the log's cost is the given cost_usd, else ``priced`` from tokens."""
        request = pb.FeedbackRequest(decision_id=decision.decision_id, **fields)
        ack: pb.FeedbackResponse = stub.Feedback(request, timeout=10)
        cost = request.cost_usd if request.HasField("cost_usd") else priced
        acknowledged.append(_expected_row(decision, request, ack, cost))
        return ack

    plain = route()
    feedback(plain, quality=0.9, latency_ms=800.0)
    feedback(plain, quality=0.2)  # duplicate
    priced = route(candidate_models=["gpt-4-1106-preview"])
    feedback(
        priced,
        priced=(1000 * 10.0 + 500 * 30.0) / 1e6,  # GPT-4: $10 / $30 per million tokens
        quality=1.0,
        input_tokens=1000,
        output_tokens=500,
        status=pb.OUTCOME_STATUS_OK,
    )
    chat = route(
        prompt="",
        messages=[pb.ChatMessage(role="user", content="Solve 2x + 3 = 7 for x.")],
        objective="economy",
    )
    feedback(chat, status=pb.OUTCOME_STATUS_ERROR, cost_usd=0.001)
    keyed = route(request_id="req-1", tags={"team": "search"})
    assert route(request_id="req-1", tags={"team": "search"}).replayed
    off = route()
    feedback(off, model=off.fallback_models[0], quality=1.0, status=pb.OUTCOME_STATUS_TIMEOUT)
    silent = route()
    with pytest.raises(grpc.RpcError):
        stub.Feedback(pb.FeedbackRequest(decision_id=silent.decision_id, quality=2.0), timeout=10)

    log = stopped_log(service)

    rows = log.execute(
        "SELECT decision_id, eligible, probabilities, model, probability, policy_version, "
        "objective, epoch(time) FROM decisions"
    ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(decisions)
    for row in rows:
        _check_decision_row(row[1:], decisions[row[0]])
    (request_id, tags, request_hash) = log.execute(
        "SELECT request_id, tags, request_hash FROM decisions WHERE decision_id = ?",
        [keyed.decision_id],
    ).fetchone() or (None, None, None)
    assert request_id == "req-1"
    assert len(request_hash or "") == 32
    assert json.loads(tags) == {"team": "search"}

    logged = log.execute(f"SELECT {FEEDBACK_COLUMNS} FROM feedback ORDER BY time").fetchall()
    assert logged == acknowledged
    assert logged[2][3] == 0.025
    dispositions = [row[-1] for row in logged]
    assert dispositions == [
        "LEARNED", "IGNORED_DUPLICATE", "LEARNED", "LEARNED", "RECORDED_OFF_POLICY",
    ]  # fmt: skip
    assert log.execute("SELECT count(*) FROM settlements").fetchone() == (0,)


def test_concurrent_feedback_is_all_logged(
    service: Service,
    stub: pb_grpc.RouterServiceStub,
    stopped_log: Callable[[Service], duckdb.DuckDBPyConnection],
) -> None:
    """Feedback sent from 8 threads at once is each acknowledged once and each in the log."""
    count = 64

    def round_trip(index: int) -> tuple[str, float]:
        decision = stub.Route(pb.RouteRequest(prompt=f"Question number {index}?"), timeout=10)
        quality = (index % 11) / 10
        ack = stub.Feedback(
            pb.FeedbackRequest(decision_id=decision.decision_id, quality=quality), timeout=10
        )
        assert ack.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
        return decision.decision_id, ack.reward

    with ThreadPoolExecutor(max_workers=8) as pool:
        acknowledged = dict(pool.map(round_trip, range(count)))
    assert len(acknowledged) == count

    log = stopped_log(service)
    logged = dict(log.execute("SELECT decision_id, reward FROM feedback").fetchall())
    assert logged == acknowledged
    assert log.execute("SELECT count(*) FROM decisions").fetchone() == (count,)
