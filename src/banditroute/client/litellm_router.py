"""banditroute as a LiteLLM Router plugin: ``model="auto"`` asks Route which deployment to call,
and the outcome LiteLLM observes (tokens, cost, latency, errors) goes back as Feedback.

It uses LiteLLM's own extension points: its custom routing strategy interface
(``CustomRoutingStrategyBase``, registered with ``Router.register_plugin`` or, on older LiteLLM,
``set_custom_routing_strategy``) to pick the deployment, and its callback interface
(``CustomLogger``'s success and failure events) to report. Each deployment of the group names
its banditroute catalogue id in ``model_info`` (``banditroute_model``) or through the
``models`` mapping (deployment id or LiteLLM model name -> catalogue id); Route chooses among
those ids only. When banditroute cannot answer, the client's fallback decision picks the
deployment of its ``fallback_model`` and LiteLLM still answers.

Needs the ``litellm`` extra: ``pip install 'banditroute[litellm]'``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

try:
    import litellm
except ModuleNotFoundError as missing:  # the optional extra: say which one
    raise ModuleNotFoundError(
        "banditroute.client.litellm_router needs LiteLLM: pip install 'banditroute[litellm]' "
        "(in a clone: .venv/bin/pip install -e '.[litellm]')",
        name=missing.name,
    ) from missing
from litellm.exceptions import ContentPolicyViolationError, RateLimitError, Timeout
from litellm.integrations.custom_logger import CustomLogger
from litellm.types.router import CustomRoutingStrategyBase

from banditroute.client.client import Client, RouteOptions
from banditroute.client.decision import Decision, FeedbackAck, Outcome, Status

log = logging.getLogger("banditroute.client")

DECISION_KEY = "banditroute_decision_id"
"""The request metadata entry that carries the decision id from the pick to the callbacks."""
SESSION_KEY = "banditroute_session_id"
"""The request metadata entry (``metadata={SESSION_KEY: conversation id}`` on a completion) sent
as Route's ``session_id``, which keeps the conversation on one model (see Sessions)."""
MODEL_INFO_KEY = "banditroute_model"
"""The ``model_info`` entry of a deployment that names its banditroute catalogue id."""

Grader = Callable[[Sequence[Mapping[str, Any]], Any], float | None]
"""A quality hook: (the request's messages, LiteLLM's response) -> quality in [0, 1] or None
(a value outside [0, 1] is logged and left out of the report)."""
ReportHook = Callable[[Decision, Outcome, FeedbackAck], None]
"""Called after each report with the decision, what was reported and its acknowledgement."""


def status_of_exception(error: object) -> Status:
    """The outcome status of a failed LiteLLM call: rate limits are RATE_LIMITED, timeouts
    TIMEOUT, content-policy refusals REFUSED, anything else ERROR."""
    if isinstance(error, RateLimitError):
        return Status.RATE_LIMITED
    if isinstance(error, Timeout | TimeoutError):
        return Status.TIMEOUT
    if isinstance(error, ContentPolicyViolationError):
        return Status.REFUSED
    return Status.ERROR


MAX_PENDING = 100_000
"""Decisions remembered while their calls run; past it the oldest are forgotten (a call whose
callback never came)."""


@dataclass(frozen=True)
class _Pending:
    """A decision waiting for LiteLLM's callback, the strategy that made it, and the catalogue
    id of each deployment of its group (to tell which model served)."""

    owner: BanditrouteStrategy
    decision: Decision
    catalogue_ids: Mapping[str, str]


class _PendingDecisions:
    """Decisions by id until their call's callback takes them, each once. One table for the
    process: LiteLLM keeps one callback object per class (a second strategy's logger is not
    added), so whichever instance LiteLLM calls must find every strategy's decisions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._decisions: OrderedDict[str, _Pending] = OrderedDict()

    def put(self, decision_id: str, pending: _Pending) -> None:
        with self._lock:
            self._decisions[decision_id] = pending
            while len(self._decisions) > MAX_PENDING:
                self._decisions.popitem(last=False)

    def take(self, decision_id: str) -> _Pending | None:
        with self._lock:
            return self._decisions.pop(decision_id, None)


_PENDING = _PendingDecisions()


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _latency_ms(kwargs: Mapping[str, Any], start_time: Any, end_time: Any) -> float | None:
    """The provider call's own duration when LiteLLM measured it, else end minus start."""
    measured = _number(kwargs.get("llm_api_duration_ms"))
    if measured is not None and measured >= 0.0:
        return measured
    if isinstance(start_time, datetime) and isinstance(end_time, datetime):
        return max(0.0, (end_time - start_time).total_seconds() * 1000.0)
    return None


def _deployment_id(deployment: Mapping[str, Any]) -> str | None:
    info = deployment.get("model_info")
    found = info.get("id") if isinstance(info, Mapping) else None
    return found if isinstance(found, str) else None


def _metadata(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    params = kwargs.get("litellm_params")
    metadata = params.get("metadata") if isinstance(params, Mapping) else None
    return metadata if isinstance(metadata, Mapping) else {}


class BanditrouteStrategy(CustomRoutingStrategyBase, CustomLogger):
    """Routes LiteLLM's ``model_group`` (default ``"auto"``) with banditroute and reports each
    call's outcome; other groups get a random deployment of their own.

    ``client`` is a :class:`~banditroute.client.Client` whose ``fallback_model`` is the
    catalogue id of the deployment to call when banditroute is unreachable. ``grade`` scores a
    response (default: no quality is reported). ``route_options`` are sent with every Route
    (objective, tags...), and a request's ``metadata[SESSION_KEY]`` as its ``session_id``.
    Call :meth:`install` with the Router.
    """

    def __init__(
        self,
        client: Client,
        *,
        model_group: str = "auto",
        models: Mapping[str, str] | None = None,
        grade: Grader | None = None,
        on_report: ReportHook | None = None,
        route_options: RouteOptions | None = None,
    ) -> None:
        CustomLogger.__init__(self)
        self.client = client
        self.model_group = model_group
        self.models = dict(models or {})
        self.grade = grade
        self.on_report = on_report
        self.route_options: RouteOptions = route_options or {}
        self._router: Any = None

    def install(self, router: Any) -> None:
        """Make this the Router's routing strategy and one of LiteLLM's callbacks."""
        self._router = router
        if hasattr(router, "register_plugin"):
            router.register_plugin(self)
        else:  # LiteLLM before register_plugin
            router.set_custom_routing_strategy(self)
        if self not in litellm.callbacks:
            litellm.callbacks.append(self)

    def uninstall(self) -> None:
        """Remove this strategy from LiteLLM's callbacks (the Router keeps routing with it until
        its strategy is changed). Decisions it made are still reported by any instance."""
        if self in litellm.callbacks:
            litellm.callbacks.remove(self)
        manager = getattr(litellm, "logging_callback_manager", None)
        if manager is not None and hasattr(manager, "remove_callback_from_all_lists"):
            manager.remove_callback_from_all_lists(self)

    # -- choosing a deployment ---------------------------------------------------------------

    def _deployments(self, model: str) -> list[dict[str, Any]]:
        router = self._router
        if router is None:
            raise RuntimeError("BanditrouteStrategy.install(router) was not called")
        if hasattr(router, "registry"):
            found = router.registry().deployments(model)
        else:  # LiteLLM before registry()
            found = router.get_model_list(model_name=model)
        return [dict(deployment) for deployment in found or ()]

    def catalogue_id(self, deployment: Mapping[str, Any]) -> str | None:
        """A deployment's banditroute model: ``models[deployment id]``, ``models[LiteLLM model
        name]``, or its ``model_info["banditroute_model"]``."""
        info = deployment.get("model_info") or {}
        params = deployment.get("litellm_params") or {}
        for key in (info.get("id"), params.get("model")):
            if isinstance(key, str) and key in self.models:
                return self.models[key]
        named = info.get(MODEL_INFO_KEY)
        return named if isinstance(named, str) else None

    def _route_request(
        self, model: str, messages: Any, input: Any, request_kwargs: Any
    ) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, Any]]:
        """The group's deployments, their catalogue ids (by deployment id) and the arguments
        of the Route call."""
        deployments = self._deployments(model)
        ids: dict[str, str] = {}
        for deployment in deployments:
            catalogue = self.catalogue_id(deployment)
            deployment_id = _deployment_id(deployment)
            if catalogue is not None and deployment_id is not None:
                ids[deployment_id] = catalogue
        if not ids:
            raise ValueError(
                f"no deployment of model group {model!r} names a banditroute model "
                f"(model_info {MODEL_INFO_KEY!r} or the models mapping)"
            )
        arguments: dict[str, Any] = dict(self.route_options)
        arguments["candidate_models"] = sorted(set(ids.values()))
        metadata = (request_kwargs or {}).get("metadata")
        session = metadata.get(SESSION_KEY) if isinstance(metadata, Mapping) else None
        if session is not None:
            arguments["session_id"] = str(session)
        if messages:
            arguments["messages"] = messages
        elif isinstance(input, str) and input:
            arguments["prompt"] = input
        else:
            prompt = (request_kwargs or {}).get("prompt")
            if not isinstance(prompt, str) or not prompt:
                raise ValueError(f"a request to {model!r} has no messages or prompt to route")
            arguments["prompt"] = prompt
        return deployments, ids, arguments

    def _chosen(
        self,
        decision: Decision,
        deployments: list[dict[str, Any]],
        ids: dict[str, str],
        request_kwargs: Any,
    ) -> dict[str, Any]:
        """The deployment of the decided model, remembered for the callbacks."""
        matching = [d for d in deployments if ids.get(_deployment_id(d) or "") == decision.model]
        if not matching:
            raise ValueError(
                f"banditroute chose {decision.model!r}, which no deployment of "
                f"{self.model_group!r} serves (is the client's fallback_model one of them?)"
            )
        if decision.decision_id is not None and isinstance(request_kwargs, dict):
            metadata = request_kwargs.get("metadata")
            if not isinstance(metadata, dict):
                metadata = request_kwargs["metadata"] = {}
            metadata[DECISION_KEY] = decision.decision_id
            _PENDING.put(decision.decision_id, _Pending(self, decision, ids))
        return random.choice(matching)

    def _other_group(self, model: str) -> dict[str, Any] | None:
        deployments = self._deployments(model)
        return random.choice(deployments) if deployments else None

    async def async_get_available_deployment(  # type: ignore[override]  # typed None in LiteLLM
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[object] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, object] | None = None,
    ) -> dict[str, Any] | None:
        """LiteLLM's async pick: the sync pick in a worker thread, so that the event loop keeps
        running while Route is called."""
        return await asyncio.to_thread(
            self.get_available_deployment,
            model,
            messages,
            input,
            specific_deployment,
            request_kwargs,
        )

    def get_available_deployment(  # type: ignore[override]  # typed None in LiteLLM
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[object] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, object] | None = None,
    ) -> dict[str, Any] | None:
        """LiteLLM's sync pick."""
        if model != self.model_group:
            return self._other_group(model)
        deployments, ids, arguments = self._route_request(model, messages, input, request_kwargs)
        decision = self.client.route(**arguments)
        return self._chosen(decision, deployments, ids, request_kwargs)

    # -- reporting ---------------------------------------------------------------------------

    def _take(self, kwargs: Mapping[str, Any]) -> tuple[_Pending, str | None] | None:
        """The pending decision of a call (removed: each is reported once) and the catalogue id
        of the deployment that served it."""
        metadata = _metadata(kwargs)
        decision_id = metadata.get(DECISION_KEY)
        if not isinstance(decision_id, str):
            return None
        pending = _PENDING.take(decision_id)
        if pending is None:
            return None
        served = (metadata.get("model_info") or {}).get("id")
        return pending, pending.catalogue_ids.get(served) if isinstance(served, str) else None

    @staticmethod
    def _success_outcome(
        owner: BanditrouteStrategy,
        kwargs: Mapping[str, Any],
        response: Any,
        start_time: Any,
        end_time: Any,
    ) -> Outcome:
        outcome: Outcome = {"status": Status.OK}
        usage = getattr(response, "usage", None)
        for field, name in (
            ("input_tokens", "prompt_tokens"),
            ("output_tokens", "completion_tokens"),
        ):
            tokens = getattr(usage, name, None)
            if isinstance(tokens, int) and tokens >= 0:
                outcome[field] = tokens  # type: ignore[literal-required]
        cost = _number(kwargs.get("response_cost"))
        if cost is not None and cost > 0.0:
            outcome["cost_usd"] = cost  # else banditroute prices the tokens from its catalogue
        latency = _latency_ms(kwargs, start_time, end_time)
        if latency is not None:
            outcome["latency_ms"] = latency
        if owner.grade is not None:
            try:
                quality = owner.grade(kwargs.get("messages") or [], response)
            except Exception:
                log.exception("the quality grader failed; reporting no quality")
                quality = None
            if quality is not None and not 0.0 <= quality <= 1.0:  # NaN too
                # banditroute would refuse the whole report (status, tokens, cost) for it.
                log.warning("the quality grader gave a value outside [0, 1]; reporting none")
                quality = None
            if quality is not None:
                outcome["quality"] = quality
        return outcome

    @staticmethod
    def _failure_outcome(kwargs: Mapping[str, Any], start_time: Any, end_time: Any) -> Outcome:
        outcome: Outcome = {"status": status_of_exception(kwargs.get("exception"))}
        latency = _latency_ms(kwargs, start_time, end_time)
        if latency is not None:
            outcome["latency_ms"] = latency
        return outcome

    @staticmethod
    def _report(taken: tuple[_Pending, str | None], outcome: Outcome) -> None:
        """Send the outcome with the client of the strategy that made the decision."""
        pending, served = taken
        if served is not None and served != pending.decision.model:
            outcome["model"] = served
        owner = pending.owner
        ack = owner.client.feedback(pending.decision, **outcome)
        if owner.on_report is not None:
            owner.on_report(pending.decision, outcome, ack)

    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """A sync call succeeded: report OK with its tokens, cost, latency and grade."""
        if (taken := self._take(kwargs)) is not None:
            outcome = self._success_outcome(
                taken[0].owner, kwargs, response_obj, start_time, end_time
            )
            self._report(taken, outcome)

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """An async call succeeded: report as ``log_success_event`` does, in a worker thread."""
        if (taken := self._take(kwargs)) is not None:
            outcome = self._success_outcome(
                taken[0].owner, kwargs, response_obj, start_time, end_time
            )
            await asyncio.to_thread(self._report, taken, outcome)

    def log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """A sync call failed: report its status (see :func:`status_of_exception`)."""
        if (taken := self._take(kwargs)) is not None:
            self._report(taken, self._failure_outcome(kwargs, start_time, end_time))

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """An async call failed: report as ``log_failure_event`` does, in a worker thread."""
        if (taken := self._take(kwargs)) is not None:
            outcome = self._failure_outcome(kwargs, start_time, end_time)
            await asyncio.to_thread(self._report, taken, outcome)
