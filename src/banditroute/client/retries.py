"""Deadlines and retries of one logical call: every attempt gets what is left of one overall
deadline, and only failures that mean "the call was not served, try again" are retried, with
jittered exponential backoff.

Which status codes are retried (UNAVAILABLE, RESOURCE_EXHAUSTED, and a CANCELLED the caller did
not cause: the server's gRPC core sheds calls past ``server.max_pending_rpcs`` that way) and which
end the call with a fallback decision are decided here, once, for Route and Feedback alike. A
tenant's hard budget cap is RESOURCE_EXHAUSTED too, but it is a refusal of the request, not
shedding: it is neither retried nor answered with a fallback (whose call would spend past the
cap).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)
"""Codes after which the call was not served and an idempotent call may be sent again."""

SERVICE_DOWN = RETRYABLE | {
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}
"""Codes that mean the service could not answer (down, shedding, too slow or broken), as
opposed to an answer about the request itself (INVALID_ARGUMENT, PERMISSION_DENIED, ...): the
client falls back on these instead of raising."""

BUDGET_REFUSAL = "budget:"
"""How the details of the server's refusal past a tenant's hard budget cap begin (the field it
names, as every banditroute error's message does)."""

Request = TypeVar("Request")
Response = TypeVar("Response")
Metadata = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call is retried within its deadline."""

    attempts: int = 3
    """Attempts in all, the first included (1: never retry)."""
    backoff_s: float = 0.05
    """Pause before the first retry; it doubles for each further one (with jitter)."""
    max_backoff_s: float = 1.0
    """Longest pause between two attempts."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if not 0.0 <= self.backoff_s <= self.max_backoff_s:
            raise ValueError("backoff_s must be between 0 and max_backoff_s")

    def pause_s(self, retry: int, uniform: Callable[[], float] = random.random) -> float:
        """The pause before retry number ``retry`` (1 for the first): exponential, capped, and
        jittered down to half so that shed clients do not come back in step."""
        base = min(self.max_backoff_s, self.backoff_s * 2.0 ** (retry - 1))
        return base * (0.5 + 0.5 * uniform())


def status_of(error: grpc.RpcError) -> grpc.StatusCode:
    """The status code of a failed call (UNKNOWN when the error carries none)."""
    if isinstance(error, DeadlineSpent):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(error, grpc.Call):
        code = error.code()
        if isinstance(code, grpc.StatusCode):
            return code
    return grpc.StatusCode.UNKNOWN


def refused_by_budget(error: grpc.RpcError) -> bool:
    """True for the server's refusal past the tenant's hard budget cap (RESOURCE_EXHAUSTED
    naming ``budget``), as opposed to a server shedding load with the same code."""
    if status_of(error) != grpc.StatusCode.RESOURCE_EXHAUSTED or not isinstance(error, grpc.Call):
        return False
    details = error.details()
    return isinstance(details, str) and details.startswith(BUDGET_REFUSAL)


def retryable(error: grpc.RpcError) -> bool:
    """True when the call was not served and may be sent again (see RETRYABLE)."""
    return status_of(error) in RETRYABLE and not refused_by_budget(error)


def service_down(error: grpc.RpcError) -> bool:
    """True when the service could not answer (see SERVICE_DOWN): the caller falls back."""
    return status_of(error) in SERVICE_DOWN and not refused_by_budget(error)


def call_with_retries(
    method: Callable[..., Response],
    request: Request,
    *,
    deadline: float,
    metadata: Metadata,
    policy: RetryPolicy,
    gave_up: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Response:
    """Call the unary ``method`` until it succeeds, fails in a way not :func:`retryable`, runs
    out of attempts, or the monotonic ``deadline`` would pass before the next attempt; the
    last error is raised then. ``gave_up()`` true means the caller cancelled (it closed the
    channel): that CANCELLED is raised, not retried. Only for calls that are safe to send
    twice."""
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - clock()
        if remaining <= 0.0:
            # No time left for even one attempt: say so as gRPC would have.
            raise DeadlineSpent()
        try:
            return method(request, timeout=remaining, metadata=tuple(metadata))
        except grpc.RpcError as error:
            if not retryable(error) or attempt >= policy.attempts or gave_up():
                raise
            pause = policy.pause_s(attempt)
            if clock() + pause >= deadline:
                raise
            sleep(pause)


class DeadlineSpent(grpc.RpcError):
    """The deadline passed before an attempt could start: a DEADLINE_EXCEEDED of our own."""
