"""Route's steps that ask the models' health (and, in a cluster, the other replicas): which
models a request may go to now, and admitting the one chosen.

They live apart from the Router so that choosing reads as its steps (:meth:`Router._choose
<banditroute.router.Router._choose>`: eligibility, score, pick, admit); they take the health
tracker and the shared admission explicitly, since a cluster replaces the router's
``shared`` after it is built.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from banditroute.admission import SharedAdmission, Ticket
from banditroute.catalog import ModelSpec
from banditroute.eligibility import Eligibility, eligible_models
from banditroute.health import HealthTracker
from banditroute.route_request import RouteRequest


class _Refusing:
    """A health view that also refuses the models a route's admission found full."""

    def __init__(self, health: HealthTracker, refused: Mapping[str, str]) -> None:
        self._health = health
        self._refused = refused

    def unavailable_reason(self, model: str, tokens: int = 0) -> str | None:
        return self._refused.get(model) or self._health.unavailable_reason(model, tokens)


def eligibility(
    request: RouteRequest, health: HealthTracker, refused: Mapping[str, str]
) -> Eligibility:
    """The models the request may go to (its constraints, tenant, rule, and the models'
    health), less those ``refused`` by admission (with its reason)."""
    settings = request.settings
    return eligible_models(
        settings.catalog,
        request.features,
        request.constraints,
        tenant=request.tenant,
        rule=request.rule,
        language_tagged=settings.language_tagged,
        health=_Refusing(health, refused) if refused else health,
        expected_latency_ms=functools.partial(
            _expected_latency, health, min_samples=settings.health.min_samples
        ),
    )


def admit(
    request: RouteRequest,
    model: ModelSpec,
    health: HealthTracker,
    shared: SharedAdmission | None,
) -> str | Ticket | None:
    """Admit the chosen model here (in-flight and rate limits) and, in a cluster, with the
    other replicas' share (their spend, load and breakers: one round trip). Returns why
    it was refused, else the cluster's ticket (None without a cluster)."""
    output = request.query.expected_output_tokens
    output = model.typical_output_tokens if output is None else output
    tokens = request.features.conversation_tokens
    why = health.try_admit(model.id, tokens, expected_output_tokens=output)
    if why is not None:
        return f"{why} (filled by concurrent routes)"
    if shared is None:
        return None
    try:
        admitted = shared.admit(request.tenant, model, tokens, output, request.now)
    except BaseException:
        health.release(model.id)
        raise
    if isinstance(admitted, str):
        health.release(model.id)
    return admitted


def _expected_latency(
    health: HealthTracker, model: ModelSpec, output_tokens: int, *, min_samples: int
) -> float:
    """Median latency measured from feedback once there are ``min_samples`` outcomes (the
    route's own settings'); the prior before."""
    p50 = health.latency_p50(model.id, min_samples)
    return model.expected_latency_ms(output_tokens) if p50 is None else float(p50)
