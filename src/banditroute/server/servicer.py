"""The RouterService servicer: translates, calls the Router, maps domain errors. Nothing more.

The caller's tenant comes from the AuthInterceptor (:func:`current_principal`); usage figures
come from the decision log through ``stats_reader`` (a read cursor on the live log).

Feedback runs on its own thread pool (:data:`FEEDBACK_POOL`): a Feedback call holds its thread
while it waits for the log commit (or, in the sync gRPC server, for a slow client's request
bytes to arrive), and on the server's shared pool enough of them would leave Route no thread.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import TypeVar

import duckdb
import grpc
import structlog

from banditroute.errors import BanditrouteError, NotFound, PermissionDenied
from banditroute.router import Router, decision_owner
from banditroute.server import convert
from banditroute.server.auth import current_principal
from banditroute.server.status import grpc_code
from banditroute.usage import summarise
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)
T = TypeVar("T")

FEEDBACK_WORKERS = 32
"""Threads serving Feedback, apart from the server's pool (shared by every service in the
process; grpc reads a behaviour's ``experimental_thread_pool``)."""
FEEDBACK_POOL = futures.ThreadPoolExecutor(FEEDBACK_WORKERS, thread_name_prefix="feedback")

FORWARD_TIMEOUT_S = 15.0
"""How long a forwarded feedback may take (it waits for the owner's log commit)."""


def _call(context: grpc.ServicerContext, rpc: str, work: Callable[[], T]) -> T:
    """Run ``work``; a domain error aborts the call with its status and message."""
    try:
        return work()
    except BanditrouteError as error:
        log.info("rpc_rejected", rpc=rpc, status=error.status.value, field=error.field,
                 message=error.message)  # fmt: skip
        context.abort(grpc_code(error), error.message)
        raise AssertionError("unreachable") from error  # abort raises
    except Exception as error:
        # A bug, not bad input: log the traceback, tell the client only an incident id.
        incident = uuid.uuid4().hex[:12]
        log.exception("rpc_failed", rpc=rpc, incident=incident)
        context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident})")
        raise AssertionError("unreachable") from error


class FeedbackForwarder:
    """Sends Feedback for another worker's decision to that worker over its Unix socket."""

    def __init__(self, me: int, socket_of: Callable[[int], Path]) -> None:
        self.me = me
        self._socket_of = socket_of
        self._stubs: dict[int, pb_grpc.RouterServiceStub] = {}

    def owner(self, decision_id: str) -> int | None:
        """The worker to forward to, or None when this worker owns (or cannot tell)."""
        owner = decision_owner(decision_id)
        return None if owner is None or owner == self.me else owner

    def forward(
        self, owner: int, request: pb.FeedbackRequest, context: grpc.ServicerContext
    ) -> pb.FeedbackResponse:
        """Relay the call with the caller's metadata; the owner's status comes back as is."""
        stub = self._stubs.get(owner)
        if stub is None:
            channel = grpc.insecure_channel(f"unix:{self._socket_of(owner)}")
            stub = self._stubs.setdefault(owner, pb_grpc.RouterServiceStub(channel))
        metadata = [
            (k, v) for k, v in context.invocation_metadata() if k in ("x-api-key", "authorization")
        ]
        try:
            response: pb.FeedbackResponse = stub.Feedback(
                request, metadata=metadata, timeout=FORWARD_TIMEOUT_S
            )
        except grpc.RpcError as error:
            context.abort(error.code(), error.details() or "forwarded feedback failed")
            raise AssertionError("unreachable") from error
        return response


class RouterServicer(pb_grpc.RouterServiceServicer):  # type: ignore[misc]
    """gRPC face of a :class:`~banditroute.router.Router`."""

    def __init__(
        self,
        router: Router,
        stats_reader: Callable[[], duckdb.DuckDBPyConnection] | None = None,
        forwarder: FeedbackForwarder | None = None,
    ) -> None:
        self.router = router
        self._forwarder = forwarder
        self._stats_reader = stats_reader
        self.started_at = time.time()  # GetStats' default since: "since the server started"

    def Route(self, request: pb.RouteRequest, context: grpc.ServicerContext) -> pb.RouteResponse:  # noqa: N802
        def work() -> pb.RouteResponse:
            tenant = current_principal().tenant.name
            query = convert.route_query(request, tenant=tenant)
            return convert.route_response(self.router.route(query))

        return _call(context, "Route", work)

    def Feedback(  # noqa: N802
        self, request: pb.FeedbackRequest, context: grpc.ServicerContext
    ) -> pb.FeedbackResponse:
        if self._forwarder is not None:
            owner = self._forwarder.owner(request.decision_id)
            if owner is not None:
                return self._forwarder.forward(owner, request, context)

        def work() -> pb.FeedbackResponse:
            tenant = current_principal().tenant.name
            report = convert.feedback_report(request, tenant=tenant)
            return convert.feedback_response(self.router.feedback(report))

        return _call(context, "Feedback", work)

    def ListModels(  # noqa: N802
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        def work() -> pb.ListModelsResponse:
            tenant = current_principal().tenant
            models = [m for m in self.router.catalog if not tenant.models or m.id in tenant.models]
            return pb.ListModelsResponse(models=[convert.model_info(m) for m in models])

        return _call(context, "ListModels", work)

    def GetStats(  # noqa: N802
        self, request: pb.GetStatsRequest, context: grpc.ServicerContext
    ) -> pb.GetStatsResponse:
        def work() -> pb.GetStatsResponse:
            principal = current_principal()
            if request.tenant and not principal.admin and request.tenant != principal.tenant.name:
                raise PermissionDenied(
                    "tenant: only an admin key may read another tenant's figures", field="tenant"
                )
            tenant = request.tenant or (None if principal.admin else principal.tenant.name)
            if tenant is not None and tenant not in self.router.settings.access.tenants:
                raise NotFound(f"tenant: unknown tenant {tenant!r}", field="tenant")
            usage = []
            if self._stats_reader is not None:
                cursor = self._stats_reader()
                try:
                    since = convert.since_time(request)
                    since = self.started_at if since is None else since
                    usage = summarise(cursor, since, tenant=tenant)
                finally:
                    cursor.close()
            names = [tenant] if tenant else list(self.router.settings.access.tenants)
            budgets = [b for b in map(self.router.budget_status, names) if b is not None]
            # A tenant sees the health of the models it may use, as ListModels lists them.
            allowed = None if principal.admin else principal.tenant.models or None
            health = [
                h for h in self.router.health.snapshot().values()
                if allowed is None or h.model in allowed
            ]  # fmt: skip
            return pb.GetStatsResponse(
                usage=[convert.usage_stats(u) for u in usage],
                health=[convert.model_health(h) for h in health],
                budgets=[convert.budget_status(b) for b in budgets],
            )

        return _call(context, "GetStats", work)

    def ResetModelHealth(  # noqa: N802
        self, request: pb.ResetModelHealthRequest, context: grpc.ServicerContext
    ) -> pb.ResetModelHealthResponse:
        def work() -> pb.ResetModelHealthResponse:
            current_principal().require_admin("ResetModelHealth")
            model = self.router.catalog.get(request.model, field="model").id
            self.router.health.reset(model)
            log.info("model_health_reset", model=model)
            return pb.ResetModelHealthResponse(
                health=convert.model_health(self.router.health.stats(model))
            )

        return _call(context, "ResetModelHealth", work)


setattr(RouterServicer.Feedback, "experimental_thread_pool", FEEDBACK_POOL)  # noqa: B010
