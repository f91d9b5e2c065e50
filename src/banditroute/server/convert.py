"""The one module that converts between proto messages and domain objects.

Proto3 scalars cannot say "absent", so optional fields (quality, cost, latency, tokens) are
declared ``optional`` in the proto and read with HasField. Enum values the domain does not
know (a newer client) are rejected with INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from banditroute.catalog import ModelSpec
from banditroute.decisions import (
    Decision,
    Disposition,
    FeedbackReport,
    FeedbackResult,
    RouteQuery,
)
from banditroute.errors import InvalidArgument
from banditroute.features import ChatTurn
from banditroute.outcomes import OutcomeStatus
from banditroute.v1 import router_pb2 as pb

_STATUS_FROM_PROTO: dict[int, OutcomeStatus] = {
    pb.OUTCOME_STATUS_UNSPECIFIED: OutcomeStatus.OK,
    pb.OUTCOME_STATUS_OK: OutcomeStatus.OK,
    pb.OUTCOME_STATUS_ERROR: OutcomeStatus.ERROR,
    pb.OUTCOME_STATUS_TIMEOUT: OutcomeStatus.TIMEOUT,
    pb.OUTCOME_STATUS_RATE_LIMITED: OutcomeStatus.RATE_LIMITED,
    pb.OUTCOME_STATUS_REFUSED: OutcomeStatus.REFUSED,
}
_DISPOSITION_TO_PROTO: dict[Disposition, pb.FeedbackDisposition] = {
    Disposition.LEARNED: pb.FEEDBACK_DISPOSITION_LEARNED,
    Disposition.DEFERRED: pb.FEEDBACK_DISPOSITION_DEFERRED,
    Disposition.IGNORED_DUPLICATE: pb.FEEDBACK_DISPOSITION_IGNORED_DUPLICATE,
    Disposition.RECORDED_OFF_POLICY: pb.FEEDBACK_DISPOSITION_RECORDED_OFF_POLICY,
}


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def route_query(request: pb.RouteRequest, *, tenant: str = "default") -> RouteQuery:
    """RouteRequest -> RouteQuery."""
    return RouteQuery(
        prompt=request.prompt,
        messages=tuple(ChatTurn(m.role, m.content) for m in request.messages),
        candidate_models=tuple(request.candidate_models),
        excluded_models=tuple(request.excluded_models),
        request_id=request.request_id,
        objective=request.objective,
        tags=dict(request.tags),
        tenant=tenant,
    )


def route_response(decision: Decision) -> pb.RouteResponse:
    """Decision -> RouteResponse."""
    return pb.RouteResponse(
        decision_id=decision.decision_id,
        model=decision.model,
        fallback_models=list(decision.fallback_models),
        probability=decision.probability,
        ranking=[pb.ModelProbability(model=m, probability=p) for m, p in decision.ranking],
        policy_version=decision.policy_version,
        objective=decision.objective,
        decide_time=_timestamp(decision.time),
        replayed=decision.replayed,
    )


def feedback_report(request: pb.FeedbackRequest) -> FeedbackReport:
    """FeedbackRequest -> FeedbackReport (range checks happen in the domain)."""
    status = _STATUS_FROM_PROTO.get(request.status)
    if status is None:
        raise InvalidArgument(f"status: unknown value {request.status}", field="status")
    return FeedbackReport(
        decision_id=request.decision_id,
        model=request.model,
        quality=request.quality if request.HasField("quality") else None,
        cost_usd=request.cost_usd if request.HasField("cost_usd") else None,
        input_tokens=request.input_tokens if request.HasField("input_tokens") else None,
        output_tokens=request.output_tokens if request.HasField("output_tokens") else None,
        latency_ms=request.latency_ms if request.HasField("latency_ms") else None,
        status=status,
    )


def feedback_response(result: FeedbackResult) -> pb.FeedbackResponse:
    """FeedbackResult -> FeedbackResponse."""
    return pb.FeedbackResponse(
        reward=result.reward,
        disposition=_DISPOSITION_TO_PROTO[result.disposition],
        feedback_count=result.feedback_count,
    )


def model_info(model: ModelSpec) -> pb.ModelInfo:
    """Catalogue entry -> ModelInfo."""
    return pb.ModelInfo(
        model=model.id,
        provider=model.provider,
        input_usd_per_mtok=model.input_usd_per_mtok,
        output_usd_per_mtok=model.output_usd_per_mtok,
        context_window=model.context_window,
        capabilities=sorted(model.capabilities),
    )
