"""What the client hands back: a routing decision (real or fallback), the acknowledgement of a
feedback, and a handle that reports a decision's outcome exactly once."""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypedDict, Unpack

import grpc

from banditroute.client.retries import status_of
from banditroute.v1 import router_pb2 as pb

log = logging.getLogger("banditroute.client")


class Status(enum.StrEnum):
    """How the call to the chosen model ended (``OutcomeStatus`` in the API)."""

    OK = "OK"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    RATE_LIMITED = "RATE_LIMITED"
    REFUSED = "REFUSED"

    @property
    def proto(self) -> str:
        """The name of this status's ``OutcomeStatus`` value."""
        return f"OUTCOME_STATUS_{self.value}"


@dataclass(frozen=True)
class Decision:
    """The model to call for one request.

    A fallback decision (``fallback`` true) is what the client answers when banditroute could
    not (down, shedding load, past the deadline): the configured fallback model, no
    ``decision_id``, and feedback for it is a no-op.
    """

    model: str
    """The model to call."""
    fallback_models: tuple[str, ...]
    """Models to try next if ``model`` fails, most probable first."""
    decision_id: str | None
    """The id to quote in Feedback; None for a fallback decision."""
    probability: float
    """Probability with which ``model`` was chosen (1.0 for a fallback decision)."""
    fallback: bool = False
    """True when banditroute did not decide and the configured fallback model is used."""
    fallback_reason: str | None = None
    """For a fallback decision, the status that caused it (for example ``UNAVAILABLE``)."""
    request_id: str | None = None
    """The idempotency key the Route call was sent with."""
    response: pb.RouteResponse | None = None
    """The full RouteResponse (ranking, exclusions, policy version...); None for a fallback."""

    @classmethod
    def from_response(cls, response: pb.RouteResponse, request_id: str | None) -> Decision:
        """The decision a RouteResponse describes."""
        return cls(
            model=response.model,
            fallback_models=tuple(response.fallback_models),
            decision_id=response.decision_id,
            probability=response.probability,
            request_id=request_id,
            response=response,
        )

    @classmethod
    def fallback_to(
        cls, model: str, others: tuple[str, ...], reason: str, request_id: str | None
    ) -> Decision:
        """A fallback decision for ``model`` made because of ``reason``."""
        return cls(
            model=model,
            fallback_models=others,
            decision_id=None,
            probability=1.0,
            fallback=True,
            fallback_reason=reason,
            request_id=request_id,
        )


@dataclass(frozen=True)
class FeedbackAck:
    """What became of one feedback report."""

    delivered: bool
    """True when banditroute acknowledged it (it is then durable)."""
    reward: float | None = None
    """The reward learned from (or combined so far), when delivered."""
    disposition: str | None = None
    """``LEARNED``, ``DEFERRED``, ``IGNORED_DUPLICATE`` or ``RECORDED_OFF_POLICY``, when
    delivered."""
    feedback_count: int = 0
    """Feedbacks recorded for the decision, this one included, when delivered."""
    reason: str | None = None
    """Why it was not delivered: ``fallback decision`` (nothing to report) or the status of the
    last failed attempt (for example ``UNAVAILABLE``)."""


class Outcome(TypedDict, total=False):
    """What a feedback report says about the call to the model (FeedbackRequest's fields)."""

    status: Status | str
    """How the call ended (default OK)."""
    quality: float
    """Quality of the answer in [0, 1]."""
    cost_usd: float
    """Realised cost; without it banditroute prices the tokens from its catalogue."""
    input_tokens: int
    output_tokens: int
    latency_ms: float
    model: str
    """The model that served, when it was not the decision's (a fallback)."""


class _Reporter(Protocol):
    def feedback(self, decision: Decision, **outcome: Unpack[Outcome]) -> FeedbackAck: ...


class DecisionHandle:
    """A decision whose outcome is reported exactly once.

    Use it as a context manager around the call to the model::

        with client.decide("Summarise this...") as d:
            answer = call_model(d.model)
            d.report(quality=grade(answer), cost_usd=0.0004)

    The latency is measured from when the handle was made to :meth:`report` unless given. A
    second ``report`` raises ``RuntimeError``. Leaving the block without reporting reports for
    you: status ``TIMEOUT`` if a ``TimeoutError`` escaped, ``ERROR`` if another exception did
    (the exception still propagates), and ``OK`` (no quality) if none did; call
    :meth:`discard` first to report nothing (the model was never called).
    """

    def __init__(
        self,
        reporter: _Reporter,
        decision: Decision,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.decision = decision
        self._reporter = reporter
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._done = False
        self.ack: FeedbackAck | None = None
        """The acknowledgement of the report, once made."""

    @property
    def model(self) -> str:
        """The model to call."""
        return self.decision.model

    @property
    def reported(self) -> bool:
        """True once the outcome was reported or discarded."""
        return self._done

    def report(self, **outcome: Unpack[Outcome]) -> FeedbackAck:
        """Report the outcome (``model``: the one that served, when a fallback did); the
        latency defaults to the time since the handle was made."""
        with self._lock:
            if self._done:
                raise RuntimeError("this decision's outcome was already reported")
            self._done = True
        outcome.setdefault("latency_ms", (self._clock() - self._started) * 1000.0)
        self.ack = self._reporter.feedback(self.decision, **outcome)
        return self.ack

    def discard(self) -> None:
        """Report nothing for this decision (its reward window settles it)."""
        with self._lock:
            self._done = True

    def __enter__(self) -> DecisionHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._done:
            return
        if exc is None:
            self.report(status=Status.OK)
            return
        status = Status.TIMEOUT if isinstance(exc, TimeoutError) else Status.ERROR
        try:
            self.report(status=status)
        except grpc.RpcError as error:
            # The caller's exception is what matters here: a refused report must not hide it.
            log.warning("banditroute feedback refused: %s", status_of(error).name)
        except ValueError:  # the client was closed: nothing can be sent any more
            log.warning("banditroute feedback not sent: the client is closed")
