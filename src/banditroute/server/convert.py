"""The one module that converts between proto messages and domain objects.

Proto3 scalars cannot say "absent", so optional fields (quality, cost, latency, tokens) are
declared ``optional`` in the proto and read with HasField. Enum values the domain does not
know (a newer client) are rejected with INVALID_ARGUMENT naming the field. Every string and
list a client sends is bounded here by the ``[server]`` limits (a size the core does not
check itself), before it reaches the router, the log or an error message; a rejection says
how big the field was, never what it held.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from banditroute.budgets import BudgetStatus
from banditroute.catalog import ModelSpec
from banditroute.cluster.replica import ReplicaStatus
from banditroute.config import ServerSettings
from banditroute.decisions import (
    Decision,
    Disposition,
    FeedbackReport,
    FeedbackResult,
    RouteQuery,
)
from banditroute.errors import InvalidArgument
from banditroute.features import ChatTurn
from banditroute.model_state import ModelHealth
from banditroute.outcomes import OutcomeStatus
from banditroute.usage import ModelTenantStats
from banditroute.v1 import router_pb2 as pb

if TYPE_CHECKING:
    from banditroute.promotion import Estimate, Evidence

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
    Disposition.FOR_TRAINER: pb.FEEDBACK_DISPOSITION_FOR_TRAINER,
}


def _set_time(stamp: Timestamp, seconds: float) -> Timestamp:
    """Set ``stamp`` (a message's field, set in place) to ``seconds`` since the epoch, as
    ``Timestamp.FromNanoseconds`` would, field by field (cheaper on Route's path)."""
    stamp.seconds, stamp.nanos = divmod(int(seconds * 1e9), 10**9)
    return stamp


def _timestamp(seconds: float) -> Timestamp:
    return _set_time(Timestamp(), seconds)


def check_chars(field: str, value: str, limit: int) -> None:
    """INVALID_ARGUMENT naming ``field`` (``messages[2].role``; its ``field`` attribute without
    the index) if ``value`` is longer than ``limit`` characters."""
    if len(value) > limit:
        raise InvalidArgument(
            f"{field}: {len(value)} characters, limit is {limit}",
            field=re.sub(r"\[\d+\]", "", field),
        )


def _check_names(field: str, names: Sequence[str], limits: ServerSettings) -> None:
    """A list of names: at most ``max_listed`` of them, each at most ``max_name_chars``."""
    if len(names) > limits.max_listed:
        raise InvalidArgument(
            f"{field}: {len(names)} listed, at most {limits.max_listed} may be", field=field
        )
    for index, name in enumerate(names):
        if len(name) > limits.max_name_chars:  # the field's name is built only for the error
            check_chars(f"{field}[{index}]", name, limits.max_name_chars)


def _check_tags(tags: Mapping[str, str], limits: ServerSettings) -> None:
    """At most ``max_tags`` tags, keys and values within their lengths (neither echoed)."""
    if len(tags) > limits.max_tags:
        raise InvalidArgument(
            f"tags: {len(tags)} tags, at most {limits.max_tags} may be given", field="tags"
        )
    for key, value in tags.items():
        if len(key) > limits.max_tag_key_chars:
            raise InvalidArgument(
                f"tags: a key of {len(key)} characters, limit is {limits.max_tag_key_chars}",
                field="tags",
            )
        if len(value) > limits.max_tag_value_chars:
            raise InvalidArgument(
                f"tags: a value of {len(value)} characters, limit is {limits.max_tag_value_chars}",
                field="tags",
            )


def check_route(request: pb.RouteRequest, limits: ServerSettings) -> None:
    """Bound every string and list of a RouteRequest (the prompt's size is the router's)."""
    if len(request.messages) > limits.max_messages:
        raise InvalidArgument(
            f"messages: {len(request.messages)} turns, at most {limits.max_messages} may be",
            field="messages",
        )
    for index, turn in enumerate(request.messages):
        if len(turn.role) > limits.max_name_chars:  # the field's name is built only for the error
            check_chars(f"messages[{index}].role", turn.role, limits.max_name_chars)
    check_chars("request_id", request.request_id, limits.max_request_id_chars)
    check_chars("session_id", request.session_id, limits.max_request_id_chars)
    check_chars("objective", request.objective, limits.max_name_chars)
    check_chars("data_classification", request.data_classification, limits.max_name_chars)
    _check_names("candidate_models", request.candidate_models, limits)
    _check_names("excluded_models", request.excluded_models, limits)
    _check_names("required_capabilities", request.required_capabilities, limits)
    _check_tags(request.tags, limits)


def route_query(
    request: pb.RouteRequest, *, limits: ServerSettings, tenant: str = "default"
) -> RouteQuery:
    """RouteRequest -> RouteQuery, once :func:`check_route` found it within ``limits``."""
    check_route(request, limits)
    return RouteQuery(
        prompt=request.prompt,
        messages=tuple(ChatTurn(m.role, m.content) for m in request.messages),
        candidate_models=tuple(request.candidate_models),
        excluded_models=tuple(request.excluded_models),
        request_id=request.request_id,
        objective=request.objective,
        tags=dict(request.tags),
        tenant=tenant,
        data_classification=request.data_classification,
        max_cost_usd=request.max_cost_usd if request.HasField("max_cost_usd") else None,
        max_latency_ms=request.max_latency_ms if request.HasField("max_latency_ms") else None,
        required_capabilities=tuple(request.required_capabilities),
        expected_output_tokens=(
            request.expected_output_tokens if request.HasField("expected_output_tokens") else None
        ),
        session_id=request.session_id,
    )


def route_response(decision: Decision) -> pb.RouteResponse:
    """Decision -> RouteResponse.

    Repeated messages are added in place and the timestamp set field by field: building a
    message per ranking entry and copying it in took twice as long (Route's hot path).
    """
    response = pb.RouteResponse(
        decision_id=decision.decision_id,
        model=decision.model,
        fallback_models=decision.fallback_models,
        probability=decision.probability,
        policy_version=decision.policy_version,
        objective=decision.objective,
        replayed=decision.replayed,
        rule=decision.rule,
        experiment_arm=decision.arm,
        explored=decision.explored,
        data_classification=decision.data_class,
        language=decision.language,
        sticky=decision.sticky,
    )
    add_ranked = response.ranking.add
    for model, probability in decision.ranking:
        add_ranked(model=model, probability=probability)
    add_excluded = response.exclusions.add
    for model, constraint, reason in decision.exclusions:
        add_excluded(model=model, constraint=constraint, reason=reason)
    _set_time(response.decide_time, decision.time)
    return response


def feedback_report(
    request: pb.FeedbackRequest, *, limits: ServerSettings, tenant: str = "default"
) -> FeedbackReport:
    """FeedbackRequest -> FeedbackReport (range checks happen in the domain; sizes here)."""
    check_chars("decision_id", request.decision_id, limits.max_name_chars)
    check_chars("model", request.model, limits.max_name_chars)
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
        tenant=tenant,
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
        languages=sorted(model.languages),
        data_classes=sorted(model.data_classes),
    )


def _counted(value: float | None, count: int) -> float:
    """A figure over ``count`` values (a mean, a percentile, a rate): 0 when there were none,
    never NaN, which JSON renders as the string "NaN"; the message's count field says which."""
    return float(value) if count > 0 and value is not None and math.isfinite(value) else 0.0


def model_health(health: ModelHealth, drifts: int = 0) -> pb.ModelHealth:
    """Health snapshot (and the policy's drift detections for the model) -> ModelHealth."""
    return pb.ModelHealth(
        model=health.model,
        state=str(health.state),
        error_rate=_counted(health.error_rate, health.recent),
        latency_p50_ms=_counted(health.latency_p50_ms, health.latency_count),
        latency_p95_ms=_counted(health.latency_p95_ms, health.latency_count),
        latency_count=health.latency_count,
        requests_last_minute=health.requests_last_minute,
        in_flight=health.in_flight,
        drifts_detected=drifts,
    )


def usage_stats(stats: ModelTenantStats) -> pb.UsageStats:
    """Usage summary row -> UsageStats."""
    return pb.UsageStats(
        model=stats.model or "",
        tenant=stats.tenant or "",
        calls=stats.calls,
        feedback_count=stats.feedback,
        spend_usd=stats.spend_usd,
        mean_quality=_counted(stats.mean_quality, stats.quality_count),
        quality_count=stats.quality_count,
        latency_p50_ms=_counted(stats.latency_p50_ms, stats.latency_count),
        latency_p95_ms=_counted(stats.latency_p95_ms, stats.latency_count),
        latency_count=stats.latency_count,
        error_rate=_counted(stats.error_rate, stats.feedback),
    )


def budget_status(status: BudgetStatus) -> pb.BudgetStatus:
    """Budget figures -> BudgetStatus."""
    return pb.BudgetStatus(
        tenant=status.tenant,
        period=status.period,
        period_start=_timestamp(status.period_start),
        spend_usd=status.spend_usd,
        limit_usd=status.limit_usd or 0.0,
        target_usd_per_request=status.target_usd_per_request or 0.0,
        mean_cost_usd=status.mean_cost_usd,
        pacing_multiplier=status.pacing_multiplier,
    )


def cluster_status(status: ReplicaStatus) -> pb.ClusterStatus:
    """A replica's cluster figures -> ClusterStatus."""
    message = pb.ClusterStatus(
        replica_id=status.replica_id,
        replicas_alive=status.replicas_alive,
        degraded=status.degraded,
        snapshot_version=status.snapshot_version,
        stream_backlog=status.stream_backlog,
        feedback_for_trainer=status.feedback_for_trainer,
    )
    if status.degraded_since is not None:
        _set_time(message.degraded_since, status.degraded_since)
    if status.snapshot_age_s is not None:
        message.snapshot_age.FromNanoseconds(int(status.snapshot_age_s * 1e9))
    return message


def since_time(request: pb.GetStatsRequest) -> float | None:
    """GetStatsRequest.since as epoch seconds (None when unset)."""
    if not request.HasField("since"):
        return None
    try:
        return float(request.since.ToNanoseconds()) / 1e9
    except ValueError as exc:  # outside 0001-01-01..9999-12-31, or bad nanos
        raise InvalidArgument(f"since: {exc}", field="since") from None


def promote_response(
    evidence: Evidence, policy_version: str, audit_seq: int
) -> pb.PromotePolicyResponse:
    """A promotion's verdict and evidence as the RPC returns them."""

    def estimate(found: Estimate) -> pb.PolicyEstimate:
        return pb.PolicyEstimate(
            policy=found.policy, value=found.value, lower=found.lower, upper=found.upper,
            ess=found.ess,
        )  # fmt: skip

    return pb.PromotePolicyResponse(
        promoted=evidence.promoted,
        reason=evidence.reason,
        candidate=estimate(evidence.candidate),
        live=estimate(evidence.live),
        decisions=evidence.decisions,
        margin=evidence.margin,
        log_digest=evidence.log_digest,
        policy_version=policy_version,
        audit_seq=audit_seq,
    )
