"""Admission shared with other replicas: the contract the router calls, without transport.

A router alone checks budgets, load limits and breakers on its own state. Replicas of a
cluster must check them together: a $100 cap over four replicas must not let $400 through.
:class:`SharedAdmission` is what the router asks once per admitted Route (after its own
checks passed for the chosen model) and tells when an admission ends or a tenant's spend
changes; :mod:`banditroute.cluster.limits` implements it over Valkey/Redis. The router never
imports that implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from banditroute.budgets import BudgetStatus
from banditroute.catalog import ModelSpec
from banditroute.tenancy import Tenant


@dataclass
class Ticket:
    """One admission held in the shared state until :meth:`SharedAdmission.release`: the
    model's in-flight slot and the tenant's reserved expected cost (if any)."""

    tenant: str
    model: str
    period_start: float | None
    reserved_usd: float
    in_flight: bool


class SharedAdmission(Protocol):
    """Budgets, load limits and breakers checked across replicas."""

    def admit(
        self, tenant: Tenant, model: ModelSpec, tokens: int, output_tokens: int, now: float
    ) -> Ticket | str:
        """Admit a route of ``tenant`` to ``model`` (``tokens`` in, ``output_tokens``
        expected out): a ticket, or why the model cannot take it (a breaker open or a load
        limit reached elsewhere). ResourceExhausted when the tenant's hard cap is reached."""
        ...

    def release(self, ticket: Ticket) -> None:
        """The admitted route is over (its first feedback came, or its reward window closed,
        or it was dropped): free its in-flight slot and its reservation."""
        ...

    def spent(self, tenant: str) -> None:
        """``tenant``'s spend here changed (a feedback was charged)."""
        ...

    def totals(self, status: BudgetStatus) -> BudgetStatus:
        """``status`` (this replica's figures) with the spend and requests of every replica
        in its period; ``status`` unchanged when they cannot be read."""
        ...


__all__ = ["SharedAdmission", "Ticket"]
