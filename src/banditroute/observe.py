"""What the router reports while it works, for whoever watches it (the server's Prometheus
metrics): a protocol with a do-nothing default, so the core never imports a metrics library."""

from __future__ import annotations

from typing import Protocol

from banditroute.decisions import Decision


class RouterObserver(Protocol):
    """Told of every new decision and of every charge to a tenant's spend."""

    def decided(self, decision: Decision) -> None:
        """A Route made ``decision`` (a replayed one is not reported again)."""

    def charged(self, tenant: str, usd: float) -> None:
        """A feedback charged ``usd`` to ``tenant``'s spend (a served model's first report)."""


class NoObserver:
    """The observer of a router nobody watches."""

    def decided(self, decision: Decision) -> None:
        """Nothing to do."""

    def charged(self, tenant: str, usd: float) -> None:
        """Nothing to do."""
