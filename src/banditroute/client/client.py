"""A Python client of banditroute: every caller otherwise re-implements the same deadlines,
retries, fallback to a default model when the service is down or shedding, and feedback
reporting.

``Client.route`` never fails because banditroute is unavailable, overloaded, slow or broken
when a ``fallback_model`` is configured: it answers a :class:`Decision` marked ``fallback``
instead. It does raise ``grpc.RpcError`` for answers about the request itself
(INVALID_ARGUMENT, PERMISSION_DENIED, FAILED_PRECONDITION, the tenant's hard budget cap's
RESOURCE_EXHAUSTED "budget: ..."), which a retry cannot fix.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypedDict, Unpack

import grpc

from banditroute.client.channels import open_channel
from banditroute.client.decision import (
    Decision,
    DecisionHandle,
    FeedbackAck,
    Outcome,
    Status,
)
from banditroute.client.messages import to_proto
from banditroute.client.retries import (
    Metadata,
    RetryPolicy,
    call_with_retries,
    service_down,
    status_of,
)
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

log = logging.getLogger("banditroute.client")


class RouteOptions(TypedDict, total=False):
    """Optional fields of a Route call (the API's RouteRequest fields of the same names)."""

    candidate_models: Sequence[str]
    excluded_models: Sequence[str]
    objective: str
    tags: Mapping[str, str]
    data_classification: str
    max_cost_usd: float
    max_latency_ms: float
    required_capabilities: Sequence[str]
    expected_output_tokens: int
    session_id: str
    """Routes with the same session id stay on one model (see the README's Sessions)."""


class Client:
    """A connection to a banditroute server.

    ``target`` is ``host:port``. ``api_key`` is sent as ``x-api-key`` on every call. ``tls``:
    False for plaintext, True for TLS with the system's roots, or ``grpc.ChannelCredentials``
    (client certificates for mutual TLS). ``timeout_s`` bounds each logical call, retries
    included. ``fallback_model`` (and ``fallback_models``, tried after it) is what ``route``
    answers when banditroute cannot; without one, ``route`` raises the last ``grpc.RpcError``
    instead. ``retry`` says how often a call is retried. ``retry_feedback``: retry a Feedback
    whose answer was lost; safe under the server's ``reward.combine`` rules ``first`` (the
    default: a repeat is recorded as IGNORED_DUPLICATE), ``last``, ``min`` and ``max``; set it
    False under ``mean`` or ``sum``, where a repeat would count twice.
    """

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        tls: bool | grpc.ChannelCredentials = False,
        timeout_s: float = 1.0,
        fallback_model: str | None = None,
        fallback_models: Sequence[str] = (),
        retry: RetryPolicy | None = None,
        retry_feedback: bool = True,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if not timeout_s > 0.0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        if fallback_models and fallback_model is None:
            raise ValueError("fallback_models needs a fallback_model to come first")
        self.target = target
        self.timeout_s = timeout_s
        self.fallback_model = fallback_model
        self.fallback_models = tuple(fallback_models)
        self.retry = retry or RetryPolicy()
        self.retry_feedback = retry_feedback
        self._metadata: Metadata = () if api_key is None else (("x-api-key", api_key),)
        self._channel = open_channel(target, tls, channel_options)
        self._stub = pb_grpc.RouterServiceStub(self._channel)
        self._closed = False

    # -- Route -------------------------------------------------------------------------------

    def route(
        self,
        prompt: str | None = None,
        *,
        messages: Iterable[Mapping[str, Any] | pb.ChatMessage] | None = None,
        request_id: str | None = None,
        timeout_s: float | None = None,
        **options: Unpack[RouteOptions],
    ) -> Decision:
        """Ask which model should answer ``prompt`` (or the chat ``messages``).

        Each logical call carries a ``request_id`` (a fresh random one unless given), so a
        retry after a lost answer returns the same decision instead of making a second one.
        """
        if (prompt is None) == (messages is None):
            raise ValueError("give exactly one of prompt and messages")
        request_id = request_id or uuid.uuid4().hex
        request = pb.RouteRequest(
            prompt=prompt or "",
            messages=to_proto(messages or ()),
            request_id=request_id,
            **options,
        )
        try:
            response = call_with_retries(
                self._stub.Route,
                request,
                deadline=self._deadline(timeout_s),
                metadata=self._metadata,
                policy=self.retry,
                gave_up=self._is_closed,
            )
        except grpc.RpcError as error:
            code = status_of(error)
            if not service_down(error) or self.fallback_model is None or self._closed:
                raise
            log.warning(
                "banditroute unavailable (%s): falling back to %s", code.name, self.fallback_model
            )
            return Decision.fallback_to(
                self.fallback_model, self.fallback_models, code.name, request_id
            )
        return Decision.from_response(response, request_id)

    def decide(
        self,
        prompt: str | None = None,
        *,
        messages: Iterable[Mapping[str, Any] | pb.ChatMessage] | None = None,
        request_id: str | None = None,
        timeout_s: float | None = None,
        **options: Unpack[RouteOptions],
    ) -> DecisionHandle:
        """``route``, as a handle that reports the outcome exactly once (see
        :class:`DecisionHandle`)."""
        decision = self.route(
            prompt, messages=messages, request_id=request_id, timeout_s=timeout_s, **options
        )
        return DecisionHandle(self, decision)

    # -- Feedback ----------------------------------------------------------------------------

    def feedback(
        self,
        decision: Decision,
        *,
        timeout_s: float | None = None,
        **outcome: Unpack[Outcome],
    ) -> FeedbackAck:
        """Report how the call to ``decision``'s model went (:class:`Outcome`'s fields;
        ``model``: the one that served, if a fallback did). A fallback decision has nothing to
        report: nothing is sent. When banditroute cannot take the report (down, shedding, too
        slow) it is logged and the acknowledgement says ``delivered=False``; an invalid report
        raises ``grpc.RpcError`` (INVALID_ARGUMENT naming the field, NOT_FOUND for an expired
        decision)."""
        if decision.decision_id is None:
            return FeedbackAck(delivered=False, reason="fallback decision")
        fields: dict[str, Any] = {**outcome, "status": Status(outcome.get("status", "OK")).proto}
        request = pb.FeedbackRequest(decision_id=decision.decision_id, **fields)
        policy = self.retry if self.retry_feedback else RetryPolicy(attempts=1)
        try:
            response = call_with_retries(
                self._stub.Feedback,
                request,
                deadline=self._deadline(timeout_s),
                metadata=self._metadata,
                policy=policy,
                gave_up=self._is_closed,
            )
        except grpc.RpcError as error:
            code = status_of(error)
            if not service_down(error) or self._closed:
                raise
            log.warning("banditroute feedback not delivered (%s)", code.name)
            return FeedbackAck(delivered=False, reason=code.name)
        return FeedbackAck(
            delivered=True,
            reward=response.reward,
            disposition=pb.FeedbackDisposition.Name(response.disposition).removeprefix(
                "FEEDBACK_DISPOSITION_"
            ),
            feedback_count=response.feedback_count,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def _deadline(self, timeout_s: float | None) -> float:
        return time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)

    def _is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the connection: calls in progress end with CANCELLED, raised (not retried,
        no fallback), and later calls raise ``ValueError``."""
        self._closed = True
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
