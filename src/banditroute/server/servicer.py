"""The RouterService servicer: translates, calls the Router, maps domain errors. Nothing more.

The caller's tenant comes from the AuthInterceptor (:func:`current_principal`); usage figures
come from the decision log through ``stats_reader`` (a read cursor on the live log). With
several workers on one port (:class:`WorkerPeers`), Feedback is forwarded to the worker that
made the decision, and GetStats, ResetModelHealth and ReloadConfig ask every worker;
PromotePolicy and RollbackPolicy act on every worker (:mod:`.worker_policy`).

Feedback runs on its own thread pool (:data:`FEEDBACK_POOL`): a Feedback call holds its thread
while it waits for the log commit (or, in the sync gRPC server, for a slow client's request
bytes to arrive), and on the server's shared pool enough of them would leave Route no thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import grpc
import structlog

from banditroute.choices import DEFAULT_TOLERANCE, check_tolerance
from banditroute.cluster.promoter import ClusterPolicy
from banditroute.cluster.replica import ReplicaStatus
from banditroute.config import ServerSettings
from banditroute.decision_ids import decision_owner
from banditroute.errors import (
    BanditrouteError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from banditroute.reload import reload_from_source
from banditroute.router import Router
from banditroute.server import convert
from banditroute.server.auth import API_KEY_HEADERS, current_principal
from banditroute.server.replica_peers import OwnerGone, ReplicaPeers
from banditroute.server.stats_merge import (
    BUDGET_OWN_KEY,
    WorkerStats,
    decode_budget_own,
    encode_budget_own,
    merge_health,
    merge_stats,
)
from banditroute.server.status import grpc_code
from banditroute.tenancy import Principal
from banditroute.usage import summarise
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from banditroute.cluster.orphans import FeedbackForTrainer
    from banditroute.server.worker_policy import WorkerPolicy

log = structlog.get_logger(__name__)
T = TypeVar("T")

FEEDBACK_WORKERS = 32
"""Threads serving Feedback, apart from the server's pool (shared by every service in the
process; grpc reads a behaviour's ``experimental_thread_pool``)."""
FEEDBACK_POOL = futures.ThreadPoolExecutor(FEEDBACK_WORKERS, thread_name_prefix="feedback")

FORWARD_TIMEOUT_S = 15.0
"""How long a forwarded feedback may take (it waits for the owner's log commit)."""
PEER_TIMEOUT_S = 2.0
"""How long GetStats and ResetModelHealth wait for another worker before leaving it out."""
RELOAD_PEER_TIMEOUT_S = 15.0
"""How long ReloadConfig waits for another worker's reload (it reads and validates the file;
a worker that does not answer in time is counted out of ``x-banditroute-workers``)."""
PEER_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
"""Reconnection backoff of the channels to other workers (see ``WorkerPeers._stub``)."""
MAX_CANDIDATE_CHARS = 1000
"""The longest candidate spec PromotePolicy accepts (VW arguments can be long)."""
PEER_KEY = "x-banditroute-peer"
"""Metadata of a call one worker makes to another (its index): answer for yourself only."""
WORKERS_KEY = "x-banditroute-workers"
"""Trailing metadata of GetStats and ResetModelHealth with several workers: how many
answered, e.g. ``2/2`` (``1/2`` when one was left out)."""


def _call(context: grpc.ServicerContext, rpc: str, work: Callable[[], T]) -> T:
    """Run ``work``; a domain error aborts the call with its status and message."""
    try:
        return work()
    except BanditrouteError as error:
        # The client is told which field and why (its message may quote the value it sent);
        # the log names the field only: nothing a client sends reaches a log verbatim.
        log.info("rpc_rejected", rpc=rpc, status=error.status.value, field=error.field)
        context.abort(grpc_code(error), error.message)
        raise AssertionError("unreachable") from error  # abort raises
    except Exception as error:
        # A bug, not bad input: log where it happened (the exception's type and stack, not its
        # message, which may quote client input), tell the client only an incident id.
        incident = uuid.uuid4().hex[:12]
        log.error("rpc_failed", rpc=rpc, incident=incident, error=type(error).__name__,
                  stack="".join(traceback.format_tb(error.__traceback__)))  # fmt: skip
        context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident})")
        raise AssertionError("unreachable") from error


class WorkerPeers:
    """The other serving processes on this port, over their private Unix sockets.

    Feedback for another worker's decision is forwarded to that worker; GetStats and
    ResetModelHealth ask every other worker (in parallel, at most :data:`PEER_TIMEOUT_S`) so
    they answer for the whole server. Calls carry the caller's credentials, so the other
    worker applies the same access rules, and :data:`PEER_KEY`, so it answers for itself only
    instead of asking again (honoured only over a Unix socket: a TCP client cannot use it).
    """

    def __init__(self, me: int, count: int, socket_of: Callable[[int], Path]) -> None:
        self.me = me
        self.count = count
        self._socket_of = socket_of
        self._stubs: dict[int, pb_grpc.RouterServiceStub] = {}

    def _stub(self, index: int) -> pb_grpc.RouterServiceStub:
        stub = self._stubs.get(index)
        if stub is None:
            # A worker the supervisor replaced listens again on the same socket within
            # seconds: retry the connection at most every second, not gRPC's default of up
            # to two minutes, so forwarded feedback reaches the replacement soon.
            channel = grpc.insecure_channel(
                f"unix:{self._socket_of(index)}", options=PEER_CHANNEL_OPTIONS
            )
            stub = self._stubs.setdefault(index, pb_grpc.RouterServiceStub(channel))
        return stub

    def _metadata(self, context: grpc.ServicerContext) -> list[tuple[str, str | bytes]]:
        keys = [(k, v) for k, v in context.invocation_metadata() if k in API_KEY_HEADERS]
        return [*keys, (PEER_KEY, str(self.me))]

    @staticmethod
    def is_peer_call(context: grpc.ServicerContext) -> bool:
        """True for a call another worker made on this worker's behalf."""
        return context.peer().startswith("unix:") and any(
            k == PEER_KEY for k, _ in context.invocation_metadata()
        )

    def owner(self, decision_id: str) -> int | None:
        """The worker to forward to, or None when this worker owns (or cannot tell: an index
        this server does not have names no decision, which this worker answers NOT_FOUND)."""
        owner = decision_owner(decision_id)
        if owner is None or owner == self.me or not 0 <= owner < self.count:
            return None
        return owner

    def session_owner(self, tenant: str, session_id: str) -> int | None:
        """The worker that keeps a session (a stable hash of tenant and id, the same in every
        process), or None when it is this one: every Route of a session is decided there."""
        digest = hashlib.blake2b(f"{tenant}\0{session_id}".encode(), digest_size=8).digest()
        owner = int.from_bytes(digest, "big") % self.count
        return None if owner == self.me else owner

    def forward(self, owner: int, rpc: str, request: Any, context: grpc.ServicerContext) -> Any:
        """Relay the call with the caller's metadata; the owner's status comes back as is."""
        try:
            response = getattr(self._stub(owner), rpc)(
                request, metadata=self._metadata(context), timeout=FORWARD_TIMEOUT_S
            )
        except grpc.RpcError as error:
            context.abort(error.code(), error.details() or f"forwarded {rpc} failed")
            raise AssertionError("unreachable") from error
        return response

    def ask(
        self,
        rpc: str,
        request: Any,
        context: grpc.ServicerContext,
        timeout: float = PEER_TIMEOUT_S,
    ) -> list[PeerCall]:
        """Start ``rpc`` on every other worker, each allowed ``timeout`` seconds; collect the
        answers with :meth:`answers`."""
        remaining = context.time_remaining()
        if remaining is not None:  # leave this worker time to answer its own caller
            timeout = max(0.05, min(timeout, remaining - 0.2))
        metadata = self._metadata(context)
        calls = []
        for index in range(self.count):
            if index != self.me:
                method = getattr(self._stub(index), rpc)
                future = method.future(request, metadata=metadata, timeout=timeout)
                calls.append(PeerCall(index, future))
        return calls

    @staticmethod
    def answers(rpc: str, calls: Sequence[PeerCall]) -> list[tuple[Any, Any]]:
        """(response, trailing metadata) of every worker that answered in time; the others are
        left out with a warning."""
        answered = []
        for call in calls:
            try:
                answered.append((call.future.result(), call.future.trailing_metadata()))
            except grpc.RpcError as error:
                # Not the details: a peer's error message may quote the client's request.
                log.warning("peer_unanswered", rpc=rpc, worker=call.worker, code=error.code().name)
        return answered


@dataclass(frozen=True)
class PeerCall:
    """A call to another worker in progress."""

    worker: int
    future: Any  # a grpc.Future that is also a grpc.Call


def _hide_volumes(response: pb.GetStatsResponse) -> None:
    """Clear what a model's health says about every tenant's traffic (requests in the last
    minute, decisions in flight), for a caller that is not an admin where other tenants can
    call too: their volume is not its business. The breaker state, error rate and latencies
    stay: they say whether and how well the model serves, which its own routing depends on."""
    for health in response.health:
        health.ClearField("requests_last_minute")
        health.ClearField("in_flight")


class RouterServicer(pb_grpc.RouterServiceServicer):  # type: ignore[misc]
    """gRPC face of a :class:`~banditroute.router.Router`."""

    def __init__(
        self,
        router: Router,
        stats_reader: Callable[[], duckdb.DuckDBPyConnection] | None = None,
        peers: WorkerPeers | None = None,
        cluster: Callable[[], ReplicaStatus] | None = None,
        replicas: ReplicaPeers | None = None,
        *,
        cluster_policy: ClusterPolicy | None = None,
        for_trainer: FeedbackForTrainer | None = None,
        workers_policy: WorkerPolicy | None = None,
    ) -> None:
        self.router = router
        self._cluster_policy = cluster_policy
        self._workers_policy = workers_policy
        self._peers = peers
        self._replicas = replicas
        self._for_trainer = for_trainer
        self._cluster = cluster
        self._stats_reader = stats_reader
        self.started_at = time.time()  # GetStats' default since: "since the server started"

    @property
    def _limits(self) -> ServerSettings:
        """The request size limits in force (a configuration reload may change them)."""
        return self.router.settings.server

    def _fan_out(self, context: grpc.ServicerContext) -> WorkerPeers | None:
        """The workers to ask as well: None without peers or for a call a peer made."""
        if self._peers is None or WorkerPeers.is_peer_call(context):
            return None
        return self._peers

    def Route(self, request: pb.RouteRequest, context: grpc.ServicerContext) -> pb.RouteResponse:  # noqa: N802
        tenant = current_principal().tenant
        session_id = request.session_id
        if (
            self._peers is not None
            and tenant.sessions
            and 0 < len(session_id) <= self._limits.max_request_id_chars  # else refused here
        ):
            owner = self._peers.session_owner(tenant.name, session_id)
            if owner is not None:  # every Route of the session is decided by its owner
                response: pb.RouteResponse = self._peers.forward(owner, "Route", request, context)
                return response

        def work() -> pb.RouteResponse:
            query = convert.route_query(request, limits=self._limits, tenant=tenant.name)
            return convert.route_response(self.router.route(query))

        return _call(context, "Route", work)

    def Feedback(  # noqa: N802
        self, request: pb.FeedbackRequest, context: grpc.ServicerContext
    ) -> pb.FeedbackResponse:
        if self._peers is not None:
            owner = self._peers.owner(request.decision_id)
            if owner is not None:
                forwarded: pb.FeedbackResponse = self._peers.forward(
                    owner, "Feedback", request, context
                )
                return forwarded
        if self._replicas is not None and not self.router.is_pending(request.decision_id):
            target = _call(context, "Feedback", lambda: self._replicas_owner(request, context))
            if isinstance(target, pb.FeedbackResponse):
                return target
            if target is not None:
                return self._replicas.forward(target, request, context)

        def work() -> pb.FeedbackResponse:
            tenant = current_principal().tenant.name
            report = convert.feedback_report(request, limits=self._limits, tenant=tenant)
            return convert.feedback_response(self.router.feedback(report))

        return _call(context, "Feedback", work)

    def _replicas_owner(
        self, request: pb.FeedbackRequest, context: grpc.ServicerContext
    ) -> str | pb.FeedbackResponse | None:
        """The address of the replica to relay to, None to answer here, or the answer when
        the replica that made the decision is gone (accepted for the trainer to join)."""
        assert self._replicas is not None
        convert.check_chars("decision_id", request.decision_id, self._limits.max_name_chars)
        try:
            return self._replicas.owner(request.decision_id, context)
        except OwnerGone:
            if self._for_trainer is None:
                raise
        tenant = current_principal().tenant.name
        report = convert.feedback_report(request, limits=self._limits, tenant=tenant)
        return convert.feedback_response(self._for_trainer.accept(report))

    def ListModels(  # noqa: N802
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        def work() -> pb.ListModelsResponse:
            tenant = current_principal().tenant
            models = [m for m in self.router.catalog if not tenant.models or m.id in tenant.models]
            return pb.ListModelsResponse(models=[convert.model_info(m) for m in models])

        return _call(context, "ListModels", work)

    def _local_stats(self, principal: Principal, tenant: str | None, since: float) -> WorkerStats:
        """This worker's figures for the caller, and its budgets' request counts."""
        usage = []
        if self._stats_reader is not None:
            cursor = self._stats_reader()
            try:
                usage = summarise(cursor, since, tenant=tenant)
            finally:
                cursor.close()
        names = [tenant] if tenant else list(self.router.settings.access.tenants)
        budgets = [b for b in map(self.router.budget_totals, names) if b is not None]
        # A tenant sees the health of the models it may use, as ListModels lists them.
        allowed = None if principal.admin else principal.tenant.models or None
        health = [
            h for h in self.router.health.snapshot().values()
            if allowed is None or h.model in allowed
        ]  # fmt: skip
        drifts = self.router.policy.drift_counts()
        response = pb.GetStatsResponse(
            usage=[convert.usage_stats(u) for u in usage],
            health=[convert.model_health(h, drifts.get(h.model, 0)) for h in health],
            budgets=[convert.budget_status(b) for b in budgets],
        )
        if self._cluster is not None:
            response.cluster.CopyFrom(convert.cluster_status(self._cluster()))
        return WorkerStats(response, {b.tenant: (b.own_spend_usd, b.own_requests) for b in budgets})

    def GetStats(  # noqa: N802
        self, request: pb.GetStatsRequest, context: grpc.ServicerContext
    ) -> pb.GetStatsResponse:
        """This process's figures, or with several workers the whole server's: the others are
        asked over their Unix sockets and the answers merged (:mod:`.stats_merge`)."""

        def work() -> pb.GetStatsResponse:
            principal = current_principal()
            convert.check_chars("tenant", request.tenant, self._limits.max_name_chars)
            if request.tenant and not principal.admin and request.tenant != principal.tenant.name:
                raise PermissionDenied(
                    "tenant: only an admin key may read another tenant's figures", field="tenant"
                )
            tenant = request.tenant or (None if principal.admin else principal.tenant.name)
            if tenant is not None and tenant not in self.router.settings.access.tenants:
                raise NotFound(f"tenant: unknown tenant {tenant!r}", field="tenant")
            since = convert.since_time(request)
            since = self.started_at if since is None else since
            peers = self._fan_out(context)
            calls = [] if peers is None else peers.ask("GetStats", request, context)
            try:
                local = self._local_stats(principal, tenant, since)
            except BaseException:
                for call in calls:
                    call.future.cancel()
                raise
            if self._peers is not None and peers is None:
                # Asked by another worker: it needs this one's own budget figures, and the
                # traffic volumes to weight the merge with (it hides them from a tenant).
                own = encode_budget_own(local.budget_own)
                context.set_trailing_metadata(((BUDGET_OWN_KEY, own),))
                return local.response
            response = local.response
            if peers is not None:
                answers = peers.answers("GetStats", calls)
                workers = f"{1 + len(answers)}/{peers.count}"
                context.set_trailing_metadata(((WORKERS_KEY, workers),))
                others = [WorkerStats(r, decode_budget_own(md)) for r, md in answers]
                response = merge_stats([local, *others])
            if not principal.admin and self.router.settings.access.callers > 1:
                _hide_volumes(response)
            return response

        return _call(context, "GetStats", work)

    def ResetModelHealth(  # noqa: N802
        self, request: pb.ResetModelHealthRequest, context: grpc.ServicerContext
    ) -> pb.ResetModelHealthResponse:
        """Close the model's breaker; with several workers on every one (each has its own), and
        answer with the merged health of those that answered."""

        def work() -> pb.ResetModelHealthResponse:
            current_principal().require_admin("ResetModelHealth")
            convert.check_chars("model", request.model, self._limits.max_name_chars)
            model = self.router.catalog.get(request.model, field="model").id
            peers = self._fan_out(context)
            calls = [] if peers is None else peers.ask("ResetModelHealth", request, context)
            self.router.health.reset(model)
            health = convert.model_health(self.router.health.stats(model))
            if peers is None:
                log.info("model_health_reset", model=model)
                return pb.ResetModelHealthResponse(health=health)
            answers = peers.answers("ResetModelHealth", calls)
            workers = f"{1 + len(answers)}/{peers.count}"
            log.info("model_health_reset", model=model, workers=workers)
            context.set_trailing_metadata(((WORKERS_KEY, workers),))
            merged = merge_health([[health], *([r.health] for r, _ in answers)])
            return pb.ResetModelHealthResponse(health=merged[0])

        return _call(context, "ResetModelHealth", work)

    def ReloadConfig(  # noqa: N802
        self, request: pb.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> pb.ReloadConfigResponse:
        """Read the configuration file again and apply it; with several workers this one
        first, then (if it succeeded) every other one, each from the same file."""

        def work() -> pb.ReloadConfigResponse:
            current_principal().require_admin("ReloadConfig")
            change = reload_from_source(self.router)
            response = pb.ReloadConfigResponse(
                models_added=change.models_added,
                models_removed=change.models_removed,
                models_changed=change.models_changed,
                keys_changed=change.keys,
                config_digest=change.digest,
            )
            peers = self._fan_out(context)
            if peers is None:
                return response
            calls = peers.ask("ReloadConfig", request, context, RELOAD_PEER_TIMEOUT_S)
            answers = peers.answers("ReloadConfig", calls)
            reloaded = 1 + sum(answer.config_digest == change.digest for answer, _ in answers)
            context.set_trailing_metadata(((WORKERS_KEY, f"{reloaded}/{peers.count}"),))
            return response

        return _call(context, "ReloadConfig", work)

    def PromotePolicy(  # noqa: N802
        self, request: pb.PromotePolicyRequest, context: grpc.ServicerContext
    ) -> pb.PromotePolicyResponse:
        """Gate the candidate on this server's log (:mod:`banditroute.promotion`); make it
        live if it clears. The evidence goes to the audit log either way."""

        def work() -> pb.PromotePolicyResponse:
            current_principal().require_admin("PromotePolicy")
            convert.check_chars("candidate", request.candidate, MAX_CANDIDATE_CHARS)
            workers = self._workers_policy
            if workers is not None and WorkerPeers.is_peer_call(context):
                return workers.peer_promote(request.candidate)  # another worker's promotion
            with contextlib.nullcontext() if workers is None else workers.exclusive():
                return self._promote(request, context)

        return _call(context, "PromotePolicy", work)

    def _promote(
        self, request: pb.PromotePolicyRequest, context: grpc.ServicerContext
    ) -> pb.PromotePolicyResponse:
        """PromotePolicy's work once the caller is known to be an admin."""
        # Imported here: the evaluation package is needed only by this admin call.
        from banditroute.promotion import gate_connection
        from banditroute.server.worker_policy import whole_log

        convert.check_chars("objective", request.objective, self._limits.max_name_chars)
        if not request.candidate.strip():
            raise InvalidArgument("candidate: must not be empty", field="candidate")
        try:  # checked before the log is read (0: the default)
            tolerance = check_tolerance(request.tolerance or DEFAULT_TOLERANCE)
        except ValueError as exc:
            raise InvalidArgument(str(exc), field="tolerance") from None
        router = self.router
        objective = router.settings.objective(request.objective)
        if self._stats_reader is None:
            raise FailedPrecondition("log: this server keeps no decision log", field="log")
        shadows = {name: p for name, p in router.policies.items() if name != "default"}
        workers = self._workers_policy
        cursor = self._stats_reader()
        try:
            if workers is not None:  # the whole server's log: every worker's rows
                whole_log(cursor, workers.exports)
            evidence, policy = gate_connection(
                cursor, request.candidate, router.settings, objective,
                margin=request.margin, shadows=shadows,
                tolerance=tolerance,
            )  # fmt: skip
        finally:
            cursor.close()
        if policy is None:
            version = router.policy.version
            seq = router.audit_event("promotion", version, evidence.as_dict())
        elif self._cluster_policy is not None:  # the trainer's learner: see promoter
            version, seq = self._cluster_policy.promote(
                request.candidate.strip(), policy, evidence.as_dict()
            )
        elif workers is not None:  # every worker: see worker_policy
            version, seq = workers.promote(
                request.candidate.strip(), policy, evidence.as_dict(), context
            )
        else:
            version, seq = router.promote(policy, evidence.as_dict())
        log.info("policy_promotion", verdict=evidence.verdict, policy_version=version,
                 decisions=evidence.decisions, audit_seq=seq)  # fmt: skip
        return convert.promote_response(evidence, version, seq)

    def RollbackPolicy(  # noqa: N802
        self, request: pb.RollbackPolicyRequest, context: grpc.ServicerContext
    ) -> pb.RollbackPolicyResponse:
        """Put back the policy the last promotion replaced."""

        def work() -> pb.RollbackPolicyResponse:
            current_principal().require_admin("RollbackPolicy")
            changes, workers = self._cluster_policy, self._workers_policy
            if workers is not None and WorkerPeers.is_peer_call(context):
                return workers.peer_rollback()  # another worker's rollback
            if changes is not None:
                restored, rolled_back, seq = changes.rollback()
            elif workers is not None:
                with workers.exclusive():
                    restored, rolled_back, seq = workers.rollback(context)
            else:
                restored, rolled_back, seq = self.router.rollback()
            log.info("policy_rolled_back", policy_version=restored, audit_seq=seq)
            return pb.RollbackPolicyResponse(
                policy_version=restored, rolled_back_version=rolled_back, audit_seq=seq
            )

        return _call(context, "RollbackPolicy", work)


setattr(RouterServicer.Feedback, "experimental_thread_pool", FEEDBACK_POOL)  # noqa: B010
