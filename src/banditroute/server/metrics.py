"""Prometheus metrics of a serving process (prometheus-client), observed from the server layer.

Counted as they happen: every RouterService call by method and final status code, with its
latency (a gRPC interceptor, :class:`MetricsInterceptor`; calls one worker makes to another are
not counted again), each decision's model and objective, and each tenant's spend (the router's
:class:`~banditroute.observe.RouterObserver`). Read from the live state when refreshed: every
catalogue model's breaker state, each policy's version and update count, the decision log's
unwritten backlog, the decisions awaiting feedback and the live sessions.

Label values come only from the configuration (tenant names, catalogue model ids, objective and
policy names, the service's method names, gRPC status names): never a string a client sent, so
the number of series stays bounded.

One process (:func:`serve_metrics`): the registry is refreshed at every scrape. Several
workers (``--workers``): prometheus-client's multiprocess mode. Each worker writes its figures
to memory-mapped files in a folder the supervisor creates (:func:`use_multiprocess`), refreshing
its gauges every loop of its main thread (at most 0.2 s old); the supervisor serves the
collection of every worker's files (:func:`multiprocess_registry`): counters and histograms
add up over the workers (a replaced worker's counts stay in), the pending decisions and
backlogs add up over the live workers, and a model's breaker state is the worst any live
worker sees (``livemax``; open 2, half-open 1, closed 0), as GetStats merges it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from banditroute.breaker import BreakerState
from banditroute.decisions import Decision
from banditroute.errors import ConfigError
from banditroute.server.intercept import PROTECTED_PREFIX, HandlerWrapper, unary_handler

if TYPE_CHECKING:
    from banditroute.router import Router
    from banditroute.store.duckdb_log import DuckDBLog

BREAKER_VALUES: dict[BreakerState, int] = {"closed": 0, "half_open": 1, "open": 2}
"""``banditroute_breaker_state``: a larger value is a worse state (merged by maximum)."""
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds (seconds) of the RPC latency histogram's buckets."""
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess(folder: Path) -> None:
    """Make this process's metrics write to ``folder`` (a worker of a ``--workers`` server);
    before any metric is created."""
    os.environ[MULTIPROC_ENV] = str(folder)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def multiprocess_registry(folder: Path) -> CollectorRegistry:
    """A registry collecting what every worker wrote to ``folder`` (the supervisor's)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]
    return registry


def worker_exited(folder: Path, pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay counted)."""
    multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]


class _Refresh(Collector):
    """Refreshes the gauges at each scrape (one process); yields nothing itself."""

    def __init__(self, refresh: Callable[[], None]) -> None:
        self._refresh = refresh

    def collect(self) -> Iterable[Metric]:
        self._refresh()
        return ()

    def describe(self) -> Iterable[Metric]:
        return ()


class ServiceMetrics:
    """The metrics of one serving process; also the router's observer. ``served``: this
    process serves them itself (its own registry); otherwise (a worker) they go to the
    multiprocess folder only."""

    def __init__(self, *, served: bool) -> None:
        registry = CollectorRegistry() if served else None
        self.registry = registry
        self._router: Router | None = None
        self._versions: set[tuple[str, str]] = set()  # policy_info series set so far
        self._models: set[str] = set()  # breaker_state series set so far
        self._log: DuckDBLog | None = None
        if registry is not None:
            registry.register(_Refresh(self.refresh))  # first: the gauges are read after it
        self.rpcs = Counter(
            "banditroute_rpcs", "RouterService calls by method and final gRPC status code.",
            ["rpc", "code"], registry=registry,
        )  # fmt: skip
        self.rpc_seconds = Histogram(
            "banditroute_rpc_duration_seconds",
            "Time from a RouterService call's arrival to its answer, by method and status code.",
            ["rpc", "code"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.choices = Counter(
            "banditroute_route_choices", "Decisions made (replays not counted), by chosen "
            "model, objective and whether a session kept its model (sticky).",
            ["model", "objective", "sticky"], registry=registry,
        )  # fmt: skip
        self.spend = Counter(
            "banditroute_spend_usd", "Cost charged to each tenant's spend (USD), from feedback.",
            ["tenant"], registry=registry,
        )  # fmt: skip
        self.breaker = Gauge(
            "banditroute_breaker_state",
            "Each catalogue model's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["model"], registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.policy_updates = Gauge(
            "banditroute_policy_updates", "Learning updates each policy has made (the number at "
            "the end of its version string).", ["policy"], registry=registry,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.policy_info = Gauge(
            "banditroute_policy_info", "Each policy's kind and settings digest (its version "
            "without the update count): 1 for the live one, 0 for one a promotion or rollback "
            "replaced.", ["policy", "version"], registry=registry,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.backlog = Gauge(
            "banditroute_journal_backlog_bytes", "Bytes of log rows buffered in memory, not yet "
            "written to the journal (a full disk makes it grow).", registry=registry,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.sessions = Gauge(
            "banditroute_sessions", "Live sessions (session_id conversations kept on a model).",
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.pending = Gauge(
            "banditroute_pending_decisions", "Decisions inside their reward window, awaiting "
            "feedback.", registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip

    def bind(self, router: Router, event_log: DuckDBLog) -> None:
        """Read the live gauges from ``router`` and ``event_log`` from now on."""
        self._router = router
        self._log = event_log
        router.observer = self

    # -- RouterObserver ----------------------------------------------------------------------------
    def decided(self, decision: Decision) -> None:
        """Count a decision by model, objective and stickiness."""
        sticky = "true" if decision.sticky else "false"
        self.choices.labels(decision.model, decision.objective, sticky).inc()

    def charged(self, tenant: str, usd: float) -> None:
        """Add to a tenant's spend."""
        self.spend.labels(tenant).inc(usd)

    def rpc_done(self, rpc: str, code: grpc.StatusCode, seconds: float) -> None:
        """Count a finished call."""
        name = code.name
        self.rpcs.labels(rpc, name).inc()
        self.rpc_seconds.labels(rpc, name).observe(seconds)

    def refresh(self) -> None:
        """Set the gauges from the live state (breakers, policies, backlog, pending); a model a
        reload removed loses its breaker series (a worker's goes to closed)."""
        router, event_log = self._router, self._log
        if router is None or event_log is None:
            return
        models = set(router.catalog.ids)
        for model in models:
            self.breaker.labels(model).set(BREAKER_VALUES[router.health.breaker_state(model)])
        for model in self._models - models:  # a reload took it out of the catalogue
            if self.registry is not None:
                self.breaker.remove(model)
            else:  # a worker's multiprocess file keeps a removed series: no longer open
                self.breaker.labels(model).set(BREAKER_VALUES["closed"])
        self._models = models
        for name, policy in router.policies.items():
            self.policy_updates.labels(name).set(policy.updates)
        live = {(name, policy_family(policy.version)) for name, policy in router.policies.items()}
        for labels in self._versions | live:
            self.policy_info.labels(*labels).set(1 if labels in live else 0)
        self._versions |= live
        self.backlog.set(event_log.backlog_bytes)
        self.pending.set(router.pending_count)
        self.sessions.set(router.live_sessions())


def policy_family(version: str) -> str:
    """A policy version without its update count (``costaware:1a2b3c4d``): a label value that
    stays the same while the policy learns."""
    head, _, tail = version.rpartition(":")
    return head if head and tail.isdigit() else version


class MetricsInterceptor(HandlerWrapper):
    """Counts every RouterService call by method and final status, with its latency.

    Installed ahead of the authentication interceptor, so a call refused there (no key) is
    counted too. ``skip(context)`` names the calls not to count (one worker's call on
    another's behalf: the caller's call is counted where it arrived).
    """

    def __init__(
        self, metrics: ServiceMetrics, skip: Callable[[grpc.ServicerContext], bool]
    ) -> None:
        super().__init__()
        self._metrics = metrics
        self._skip = skip

    def wrap(self, method: str, handler: Any) -> Any:
        """``handler`` timed and counted by its final status code."""
        rpc = method[len(PROTECTED_PREFIX) :]
        behavior = handler.unary_unary
        metrics, skip = self._metrics, self._skip

        def measured(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return behavior(request, context)
            except BaseException:
                # context.abort set the code before raising; anything else ends as UNKNOWN.
                code = context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
                raise
            finally:
                if not skip(context):
                    metrics.rpc_done(rpc, code, time.perf_counter() - start)

        return unary_handler(measured, handler)


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> WSGIServer:
    """Serve ``registry`` at http://host:port/metrics from a daemon thread; ConfigError naming
    ``server.metrics_port`` if it cannot listen there."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # IPv6
    try:
        server, _ = start_http_server(port, addr=bare, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"server.metrics_port: cannot listen on {host}:{port} ({exc.strerror or exc}): "
            "choose another with --metrics-port or [server] metrics_port",
            field="server.metrics_port",
        ) from None
    return server


def stop_metrics(server: WSGIServer | None) -> None:
    """Stop a metrics endpoint (if any) and close its socket."""
    if server is not None:
        server.shutdown()
        server.server_close()


def metrics_port(server: WSGIServer) -> int:
    """The port a metrics endpoint listens on."""
    return int(server.server_address[1])


__all__ = [
    "MetricsInterceptor",
    "WSGIServer",
    "ServiceMetrics",
    "metrics_port",
    "multiprocess_registry",
    "serve_metrics",
    "stop_metrics",
    "use_multiprocess",
    "worker_exited",
]
