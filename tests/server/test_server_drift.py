"""GetStats shows when the default policy detected a model's quality changing (drift)."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from banditroute.server.app import Service
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

MODEL = "zero-one-ai/Yi-34B-Chat"


def test_a_model_whose_quality_collapses_shows_a_drift_in_get_stats(
    make_service: Callable[..., Service], connect: Callable[[Service], grpc.Channel]
) -> None:
    """After 80 good and then 80 bad outcomes of one model, GetStats' health row for it counts
    at least one drift detection, and the other models none."""
    stub = pb_grpc.RouterServiceStub(connect(make_service()))
    for i in range(160):
        decision = stub.Route(
            pb.RouteRequest(prompt=f"Question {i}: A or B?", candidate_models=[MODEL]),
            timeout=10.0,
        )
        quality = 0.95 if i < 80 else 0.05
        stub.Feedback(
            pb.FeedbackRequest(decision_id=decision.decision_id, quality=quality), timeout=10.0
        )
    health = {h.model: h for h in stub.GetStats(pb.GetStatsRequest(), timeout=10.0).health}
    assert health[MODEL].drifts_detected >= 1
    assert all(h.drifts_detected == 0 for m, h in health.items() if m != MODEL)
