import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OutcomeStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_STATUS_UNSPECIFIED: _ClassVar[OutcomeStatus]
    OUTCOME_STATUS_OK: _ClassVar[OutcomeStatus]
    OUTCOME_STATUS_ERROR: _ClassVar[OutcomeStatus]
    OUTCOME_STATUS_TIMEOUT: _ClassVar[OutcomeStatus]
    OUTCOME_STATUS_RATE_LIMITED: _ClassVar[OutcomeStatus]
    OUTCOME_STATUS_REFUSED: _ClassVar[OutcomeStatus]

class FeedbackDisposition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_DISPOSITION_UNSPECIFIED: _ClassVar[FeedbackDisposition]
    FEEDBACK_DISPOSITION_LEARNED: _ClassVar[FeedbackDisposition]
    FEEDBACK_DISPOSITION_DEFERRED: _ClassVar[FeedbackDisposition]
    FEEDBACK_DISPOSITION_IGNORED_DUPLICATE: _ClassVar[FeedbackDisposition]
    FEEDBACK_DISPOSITION_RECORDED_OFF_POLICY: _ClassVar[FeedbackDisposition]
    FEEDBACK_DISPOSITION_FOR_TRAINER: _ClassVar[FeedbackDisposition]
OUTCOME_STATUS_UNSPECIFIED: OutcomeStatus
OUTCOME_STATUS_OK: OutcomeStatus
OUTCOME_STATUS_ERROR: OutcomeStatus
OUTCOME_STATUS_TIMEOUT: OutcomeStatus
OUTCOME_STATUS_RATE_LIMITED: OutcomeStatus
OUTCOME_STATUS_REFUSED: OutcomeStatus
FEEDBACK_DISPOSITION_UNSPECIFIED: FeedbackDisposition
FEEDBACK_DISPOSITION_LEARNED: FeedbackDisposition
FEEDBACK_DISPOSITION_DEFERRED: FeedbackDisposition
FEEDBACK_DISPOSITION_IGNORED_DUPLICATE: FeedbackDisposition
FEEDBACK_DISPOSITION_RECORDED_OFF_POLICY: FeedbackDisposition
FEEDBACK_DISPOSITION_FOR_TRAINER: FeedbackDisposition

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("prompt", "messages", "candidate_models", "request_id", "objective", "excluded_models", "tags", "data_classification", "max_cost_usd", "max_latency_ms", "required_capabilities", "expected_output_tokens", "session_id")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_MODELS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_MODELS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    candidate_models: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    objective: str
    excluded_models: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.ScalarMap[str, str]
    data_classification: str
    max_cost_usd: float
    max_latency_ms: float
    required_capabilities: _containers.RepeatedScalarFieldContainer[str]
    expected_output_tokens: int
    session_id: str
    def __init__(self, prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., candidate_models: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ..., objective: _Optional[str] = ..., excluded_models: _Optional[_Iterable[str]] = ..., tags: _Optional[_Mapping[str, str]] = ..., data_classification: _Optional[str] = ..., max_cost_usd: _Optional[float] = ..., max_latency_ms: _Optional[float] = ..., required_capabilities: _Optional[_Iterable[str]] = ..., expected_output_tokens: _Optional[int] = ..., session_id: _Optional[str] = ...) -> None: ...

class ModelExclusion(_message.Message):
    __slots__ = ("model", "constraint", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    constraint: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., constraint: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ModelProbability(_message.Message):
    __slots__ = ("model", "probability")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    model: str
    probability: float
    def __init__(self, model: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("decision_id", "model", "fallback_models", "probability", "ranking", "policy_version", "objective", "decide_time", "replayed", "exclusions", "rule", "experiment_arm", "explored", "data_classification", "language", "sticky")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_MODELS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    DECIDE_TIME_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIONS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ARM_FIELD_NUMBER: _ClassVar[int]
    EXPLORED_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    STICKY_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    model: str
    fallback_models: _containers.RepeatedScalarFieldContainer[str]
    probability: float
    ranking: _containers.RepeatedCompositeFieldContainer[ModelProbability]
    policy_version: str
    objective: str
    decide_time: _timestamp_pb2.Timestamp
    replayed: bool
    exclusions: _containers.RepeatedCompositeFieldContainer[ModelExclusion]
    rule: str
    experiment_arm: str
    explored: bool
    data_classification: str
    language: str
    sticky: bool
    def __init__(self, decision_id: _Optional[str] = ..., model: _Optional[str] = ..., fallback_models: _Optional[_Iterable[str]] = ..., probability: _Optional[float] = ..., ranking: _Optional[_Iterable[_Union[ModelProbability, _Mapping]]] = ..., policy_version: _Optional[str] = ..., objective: _Optional[str] = ..., decide_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replayed: _Optional[bool] = ..., exclusions: _Optional[_Iterable[_Union[ModelExclusion, _Mapping]]] = ..., rule: _Optional[str] = ..., experiment_arm: _Optional[str] = ..., explored: _Optional[bool] = ..., data_classification: _Optional[str] = ..., language: _Optional[str] = ..., sticky: _Optional[bool] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("decision_id", "model", "quality", "cost_usd", "input_tokens", "output_tokens", "latency_ms", "status")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    model: str
    quality: float
    cost_usd: float
    input_tokens: int
    output_tokens: int
    latency_ms: float
    status: OutcomeStatus
    def __init__(self, decision_id: _Optional[str] = ..., model: _Optional[str] = ..., quality: _Optional[float] = ..., cost_usd: _Optional[float] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., latency_ms: _Optional[float] = ..., status: _Optional[_Union[OutcomeStatus, str]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("reward", "disposition", "feedback_count")
    REWARD_FIELD_NUMBER: _ClassVar[int]
    DISPOSITION_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    reward: float
    disposition: FeedbackDisposition
    feedback_count: int
    def __init__(self, reward: _Optional[float] = ..., disposition: _Optional[_Union[FeedbackDisposition, str]] = ..., feedback_count: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model", "provider", "input_usd_per_mtok", "output_usd_per_mtok", "context_window", "capabilities", "languages", "data_classes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    INPUT_USD_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_USD_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASSES_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    context_window: int
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    languages: _containers.RepeatedScalarFieldContainer[str]
    data_classes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., provider: _Optional[str] = ..., input_usd_per_mtok: _Optional[float] = ..., output_usd_per_mtok: _Optional[float] = ..., context_window: _Optional[int] = ..., capabilities: _Optional[_Iterable[str]] = ..., languages: _Optional[_Iterable[str]] = ..., data_classes: _Optional[_Iterable[str]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("since", "tenant")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    tenant: str
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tenant: _Optional[str] = ...) -> None: ...

class UsageStats(_message.Message):
    __slots__ = ("model", "tenant", "calls", "feedback_count", "spend_usd", "mean_quality", "latency_p50_ms", "latency_p95_ms", "error_rate", "quality_count", "latency_count")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    SPEND_USD_FIELD_NUMBER: _ClassVar[int]
    MEAN_QUALITY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_COUNT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_COUNT_FIELD_NUMBER: _ClassVar[int]
    model: str
    tenant: str
    calls: int
    feedback_count: int
    spend_usd: float
    mean_quality: float
    latency_p50_ms: float
    latency_p95_ms: float
    error_rate: float
    quality_count: int
    latency_count: int
    def __init__(self, model: _Optional[str] = ..., tenant: _Optional[str] = ..., calls: _Optional[int] = ..., feedback_count: _Optional[int] = ..., spend_usd: _Optional[float] = ..., mean_quality: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p95_ms: _Optional[float] = ..., error_rate: _Optional[float] = ..., quality_count: _Optional[int] = ..., latency_count: _Optional[int] = ...) -> None: ...

class ModelHealth(_message.Message):
    __slots__ = ("model", "state", "error_rate", "latency_p50_ms", "latency_p95_ms", "requests_last_minute", "in_flight", "drifts_detected", "latency_count")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_LAST_MINUTE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    DRIFTS_DETECTED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_COUNT_FIELD_NUMBER: _ClassVar[int]
    model: str
    state: str
    error_rate: float
    latency_p50_ms: float
    latency_p95_ms: float
    requests_last_minute: int
    in_flight: int
    drifts_detected: int
    latency_count: int
    def __init__(self, model: _Optional[str] = ..., state: _Optional[str] = ..., error_rate: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p95_ms: _Optional[float] = ..., requests_last_minute: _Optional[int] = ..., in_flight: _Optional[int] = ..., drifts_detected: _Optional[int] = ..., latency_count: _Optional[int] = ...) -> None: ...

class BudgetStatus(_message.Message):
    __slots__ = ("tenant", "period", "period_start", "spend_usd", "limit_usd", "target_usd_per_request", "mean_cost_usd", "pacing_multiplier")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    SPEND_USD_FIELD_NUMBER: _ClassVar[int]
    LIMIT_USD_FIELD_NUMBER: _ClassVar[int]
    TARGET_USD_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MEAN_COST_USD_FIELD_NUMBER: _ClassVar[int]
    PACING_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    period: str
    period_start: _timestamp_pb2.Timestamp
    spend_usd: float
    limit_usd: float
    target_usd_per_request: float
    mean_cost_usd: float
    pacing_multiplier: float
    def __init__(self, tenant: _Optional[str] = ..., period: _Optional[str] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spend_usd: _Optional[float] = ..., limit_usd: _Optional[float] = ..., target_usd_per_request: _Optional[float] = ..., mean_cost_usd: _Optional[float] = ..., pacing_multiplier: _Optional[float] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("usage", "health", "budgets", "cluster")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    usage: _containers.RepeatedCompositeFieldContainer[UsageStats]
    health: _containers.RepeatedCompositeFieldContainer[ModelHealth]
    budgets: _containers.RepeatedCompositeFieldContainer[BudgetStatus]
    cluster: ClusterStatus
    def __init__(self, usage: _Optional[_Iterable[_Union[UsageStats, _Mapping]]] = ..., health: _Optional[_Iterable[_Union[ModelHealth, _Mapping]]] = ..., budgets: _Optional[_Iterable[_Union[BudgetStatus, _Mapping]]] = ..., cluster: _Optional[_Union[ClusterStatus, _Mapping]] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ("replica_id", "replicas_alive", "degraded", "degraded_since", "snapshot_version", "snapshot_age", "stream_backlog", "feedback_for_trainer")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_ALIVE_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_SINCE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_AGE_FIELD_NUMBER: _ClassVar[int]
    STREAM_BACKLOG_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FOR_TRAINER_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    replicas_alive: int
    degraded: bool
    degraded_since: _timestamp_pb2.Timestamp
    snapshot_version: str
    snapshot_age: _duration_pb2.Duration
    stream_backlog: int
    feedback_for_trainer: int
    def __init__(self, replica_id: _Optional[str] = ..., replicas_alive: _Optional[int] = ..., degraded: _Optional[bool] = ..., degraded_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., snapshot_version: _Optional[str] = ..., snapshot_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., stream_backlog: _Optional[int] = ..., feedback_for_trainer: _Optional[int] = ...) -> None: ...

class ResetModelHealthRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ResetModelHealthResponse(_message.Message):
    __slots__ = ("health",)
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    health: ModelHealth
    def __init__(self, health: _Optional[_Union[ModelHealth, _Mapping]] = ...) -> None: ...

class ReloadConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadConfigResponse(_message.Message):
    __slots__ = ("models_added", "models_removed", "models_changed", "keys_changed", "config_digest")
    MODELS_ADDED_FIELD_NUMBER: _ClassVar[int]
    MODELS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    MODELS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    KEYS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    models_added: _containers.RepeatedScalarFieldContainer[str]
    models_removed: _containers.RepeatedScalarFieldContainer[str]
    models_changed: _containers.RepeatedScalarFieldContainer[str]
    keys_changed: _containers.RepeatedScalarFieldContainer[str]
    config_digest: str
    def __init__(self, models_added: _Optional[_Iterable[str]] = ..., models_removed: _Optional[_Iterable[str]] = ..., models_changed: _Optional[_Iterable[str]] = ..., keys_changed: _Optional[_Iterable[str]] = ..., config_digest: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class PromotePolicyRequest(_message.Message):
    __slots__ = ("candidate", "margin", "objective", "tolerance")
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    candidate: str
    margin: float
    objective: str
    tolerance: float
    def __init__(self, candidate: _Optional[str] = ..., margin: _Optional[float] = ..., objective: _Optional[str] = ..., tolerance: _Optional[float] = ...) -> None: ...

class PolicyEstimate(_message.Message):
    __slots__ = ("policy", "value", "lower", "upper", "ess")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    ESS_FIELD_NUMBER: _ClassVar[int]
    policy: str
    value: float
    lower: float
    upper: float
    ess: float
    def __init__(self, policy: _Optional[str] = ..., value: _Optional[float] = ..., lower: _Optional[float] = ..., upper: _Optional[float] = ..., ess: _Optional[float] = ...) -> None: ...

class PromotePolicyResponse(_message.Message):
    __slots__ = ("promoted", "reason", "candidate", "live", "decisions", "margin", "log_digest", "policy_version", "audit_seq")
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    LOG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    promoted: bool
    reason: str
    candidate: PolicyEstimate
    live: PolicyEstimate
    decisions: int
    margin: float
    log_digest: str
    policy_version: str
    audit_seq: int
    def __init__(self, promoted: _Optional[bool] = ..., reason: _Optional[str] = ..., candidate: _Optional[_Union[PolicyEstimate, _Mapping]] = ..., live: _Optional[_Union[PolicyEstimate, _Mapping]] = ..., decisions: _Optional[int] = ..., margin: _Optional[float] = ..., log_digest: _Optional[str] = ..., policy_version: _Optional[str] = ..., audit_seq: _Optional[int] = ...) -> None: ...

class RollbackPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RollbackPolicyResponse(_message.Message):
    __slots__ = ("policy_version", "rolled_back_version", "audit_seq")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLLED_BACK_VERSION_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    policy_version: str
    rolled_back_version: str
    audit_seq: int
    def __init__(self, policy_version: _Optional[str] = ..., rolled_back_version: _Optional[str] = ..., audit_seq: _Optional[int] = ...) -> None: ...
